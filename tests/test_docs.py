"""The README (the front page) and the pages of docs/: the tour matches the packages, every link resolves, and
the figures they quote are those the benchmarks wrote into benchmarks/results/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from training import presets
from training.run import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
PAGES = sorted(DOCS.glob("*.md"))


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def tour_rows() -> dict[str, list[str]]:
    """The tour table: each row's first cell, as the paths it names, keyed by the cell."""
    table = README.read_text().split("## Tour", 1)[1].strip().split("\n\n")[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return {row.split("|")[1].strip(): re.findall(r"`([^`]+)`", row.split("|")[1]) for row in rows}


def test_the_front_page_stays_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 150
    for heading in ("## Set-up", "## Main job", "## Tests", "## Tour"):
        assert heading in text, heading
    # CI runs the README's test command (.ci/run)
    assert "```bash\npython -m pytest\n```" in section(text, "## Tests", "## Tour")
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_the_tour_has_a_row_for_every_package_and_every_row_exists() -> None:
    rows = tour_rows()
    named = {path.rstrip("/") for paths in rows.values() for path in paths}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    declared = {pattern.rstrip("*") for pattern in found["include"]}
    for package in packages | declared:
        assert package in named, f"the tour has no row for {package}/"
    for top in ("conf", "benchmarks", "tests", "docs", "train.py", "evaluate.py"):
        assert top in named, top
    for path in named:
        assert (ROOT / path).exists(), f"the tour names {path}, which does not exist"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (outside code blocks)."""
    out, code = set(), False
    for line in page.read_text().splitlines():
        code ^= line.startswith("```")
        if not code and re.match(r"#+ ", line):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if anchor:
            assert anchor in anchors(target), f"{page.name}: {link}"


def test_every_docs_page_is_linked_from_the_tour() -> None:
    tour = README.read_text().split("## Tour", 1)[1]
    for page in PAGES:
        assert f"(docs/{page.name})" in tour, page.name


def test_the_deviation_tables_stay_findable_from_the_front_page() -> None:
    text = README.read_text()
    assert "docs/models.md#fidelity-to-the-reference-code" in text
    assert "docs/published.md#where-pdestreams-set-up-differs-from-the-paper" in text
    assert "| deviations that remain, and why |" in (DOCS / "models.md").read_text()
    assert "| | paper (ICLR 2021) | reference code | pdestream |" in (DOCS / "published.md").read_text()


def default_run_scores() -> dict[str, str]:
    text = (RESULTS / "default_run_scores.txt").read_text()
    best = re.search(r"^best checkpoint\s+(\S+) \(step (\d+)\)$", text, re.M)
    steps = re.findall(r"^step (\d+)\s+(\S+)$", text, re.M)
    rows = {
        line.split("|")[1].strip(): line.split("|") for line in text.splitlines() if line.startswith("| ")
    }
    return {
        "untrained": re.search(r"^untrained\s+(\S+)$", text, re.M).group(1),
        "best": best.group(1),
        "best_step": best.group(2),
        "last": steps[-1][1],
        "report": rows["fno-small"][3].strip(),
        "report_untrained": rows["fno-small (untrained)"][3].strip().split(" [")[0],
        "report_persistence": rows["persistence"][3].strip().split(" [")[0],
    }


def test_the_front_page_quotes_the_default_runs_scores() -> None:
    """The headline figure is what `python -m benchmarks.default_run` wrote: the validation correlation time of
    `python train.py` and the report of `python evaluate.py` on it, and the wall time of the machine alone."""
    scores = default_run_scores()
    main_job = section(README.read_text(), "## Main job", "## Tests")
    assert f"goes from {scores['untrained']} untrained to {scores['best']} (the best checkpoint" in main_job
    assert f"at step {scores['best_step']}; {scores['last']}\nat the last step" in main_job
    assert f"correlation time at {scores['report']} on the 32 test trajectories" in main_job
    assert f"untrained {scores['report_untrained']}, persistence {scores['report_persistence']}" in main_job
    median = re.search(r"^median\s+(.+)$", (RESULTS / "default_run.txt").read_text(), re.M).group(1)
    assert f"in {median} wall time" in main_job


def test_the_figures_page_quotes_the_default_runs_scores() -> None:
    figures = (DOCS / "figures.md").read_text()
    for line in (RESULTS / "default_run_scores.txt").read_text().splitlines():
        assert line in figures, line


def conditioned_count(model: str, overrides: list[str]) -> int:
    """Parameters of a preset as `python train.py model=… <overrides>` builds it (conditioning included)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    m = cfg.model
    with torch.device("meta"):
        net = presets.build(model, ndim=m.ndim, channels=m.channels, time_history=m.time_history,
                            time_future=m.time_future, cond_dim=m.cond_dim)  # fmt: skip
    return net.num_parameters()


def test_online_vs_offline_quotes_the_parameters_its_runs_trained() -> None:
    """The comparison's runs are conditioned (ν and the time step): their parameter counts, not the table's
    unconditioned ones, are what docs/figures.md and the benchmark's docstring quote."""
    from benchmarks.online_vs_offline import SETUPS

    figures = section(
        (DOCS / "figures.md").read_text(), "**Online stream vs fixed data sets**", "**Solvers**"
    )
    docstring = (ROOT / "benchmarks" / "online_vs_offline.py").read_text()
    for model, quoted in (("fno-small", "(`fno-small`, {} parameters"), ("fno", "with `fno` ({} parameters")):
        counts = {conditioned_count(model, overrides) for overrides in SETUPS.values()}
        assert len(counts) == 1, counts
        (count,) = counts
        assert quoted.format(f"{count:,}") in figures, (model, count)
        assert f"{count:,}" in docstring, (model, count)
    small, large = conditioned_count("fno-small", SETUPS["ks"]), conditioned_count("fno", SETUPS["ks"])
    default = conditioned_count("fno-small", [])  # what `python train.py` builds and logs
    assert f"`fno-small` conditioned on ν and the time step: {default:,}" in (DOCS / "models.md").read_text()
    assert f"{round(large / small)}× larger model" in figures


def test_ns_resolution_is_quoted_with_the_trajectories_of_its_results_file() -> None:
    header = (RESULTS / "ns_resolution.txt").read_text().splitlines()[0]
    count = re.search(r"(\d+) trajectories", header).group(1)
    default = re.search(
        r'"--trajectories", type=int, default=(\d+)', (ROOT / "benchmarks" / "ns_resolution.py").read_text()
    )
    assert default.group(1) == count  # the command the page quotes, without options, writes that file
    solvers = (DOCS / "solvers.md").read_text()
    assert (
        f"(`python -m benchmarks.ns_resolution`,\n{count} trajectories, `benchmarks/results/ns_resolution.txt`)"
        in solvers
    )
    rows = re.findall(r"^\s*(\d+²)\s+(.+)$", (RESULTS / "ns_resolution.txt").read_text(), re.M)
    assert len(rows) == 2
    for grid, row in rows:  # t = 10 and t = 20, as quoted
        values = row.split()
        for value in (float(values[2]), float(values[4])):
            quoted = f"{value:.2g}" if value >= 0.1 else re.sub(r"e-0(\d)", r"e-\1", f"{value:.1e}")
            assert quoted in solvers, (grid, quoted)


def test_every_figure_of_the_default_run_paragraph_is_in_its_results_files() -> None:
    page = (DOCS / "figures.md").read_text()
    prose = section(page, "**Default run**", "```")
    written = (RESULTS / "default_run_scores.txt").read_text() + (RESULTS / "default_run.txt").read_text()
    known = set(re.findall(r"\d+\.\d+", written))
    for figure in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose):
        assert figure in known, figure
