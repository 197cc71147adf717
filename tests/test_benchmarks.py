"""The benchmark scripts run end to end as their docstrings give them, at smoke-test sizes."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[0-9.]+(?:e[+-]?[0-9]+)?"


def call(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", f"benchmarks.{name}", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def run_benchmark(name: str, *args: str) -> str:
    done = call(name, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(NUMBER, line.replace(",", ""))]


def assert_rates(values: list[float]) -> None:
    assert values and all(math.isfinite(v) and v > 0 for v in values), values


def test_solvers_benchmark() -> None:
    out = run_benchmark("solvers", "--quick", "--solvers", "ks", "navier_stokes", "--batches", "2")
    rows = {
        line.split()[0]: numbers(line) for line in out.splitlines() if re.match(r"(ks|navier_stokes)\s", line)
    }
    assert set(rows) == {"ks", "navier_stokes"}
    for batch, *_, rate in rows.values():
        assert batch == 2
        assert_rates([rate])


@pytest.mark.slow  # a benchmark command's smoke run; its results file is checked by the docs tests
def test_models_benchmark() -> None:
    out = run_benchmark("models", "--presets", "fno-small", "--repeats", "1", "--no-neuralop")
    rows = [numbers(line) for line in out.splitlines() if line.startswith("fno-small")]
    assert [row[0] for row in rows] == [1, 2]  # dim
    for _, params, ms, mib in rows:
        assert params > 1000
        assert_rates([ms, mib])


@pytest.mark.slow  # a benchmark command's smoke run; its results file is checked by the docs tests
def test_stream_benchmark() -> None:
    out = run_benchmark(
        "stream",
        *("--pde", "ks", "--steps", "3", "--train-steps", "2", "--workers", "1"),
        *("--frames", "16", "--file-trajectories", "4", "--solver-batch", "4"),
    )
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:] if line.strip()]
    rates = {label: numbers(" ".join(values)) for label, *values in rows}
    assert set(rates) >= {"hdf5 reader", "in-memory tensor", "train: fed online", "ratio online/memory"}
    assert_rates([v for values in rates.values() for v in values])


def test_train_benchmark_times_whole_solver_rounds_in_steady_state(tmp_path: Path) -> None:
    """Small rounds (2 trajectories of 20 frames: 32 windows, 4 uses each = 4 steps of 32) after a one-round
    fill: the online run stops two rounds after the fill's budget is spent, and both sources are timed."""
    from benchmarks.train import Clock, bound, run

    small = ["data.solver_batch=2", "data.frames=20", "data.buffer.watermark=32", "data.stats_trajectories=2"]
    rates = run(small, cycles=2, repeats=1, device="cpu", tmp=tmp_path)
    assert_rates([rates[k] for k in ("online", "memory", "online step", "memory step")])
    assert math.isfinite(rates["solve"])  # a round's excess over a step: small rounds cost about a step
    for source in ("online", "memory"):  # CPU seconds per wall second of the process: at most its threads
        assert 0 < rates[f"{source} busy"] <= torch.get_num_threads() + 0.1, rates
    assert rates["workers"] == 0
    # 0.6 of the memory rate with 1.5 of 2 cores busy: filling the idle half core gives 0.6 · 2/1.5 = 0.8;
    # a run that leaves more idle than it lacks is bounded by the memory rate itself
    assert bound(0.6, 1.5, 2) == pytest.approx(0.8) and bound(0.8, 1.0, 2) == 1.0

    clock = Clock(cycles=2)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(stream_state={}), should_stop=False)
    for step, rounds in enumerate(
        [{0: 2}, {0: 2, 1: 2}, {0: 2, 1: 2}, {0: 4, 1: 2}, {0: 4, 1: 4}, {0: 6, 1: 4}]
    ):
        trainer.datamodule.stream_state["shards"] = {
            k: {"next": v} for k, v in rounds.items()
        }  # each shard's rounds
        clock.on_train_batch_end(trainer, None, None, None, step)
    assert clock.starts == [3, 4, 5] and trainer.should_stop  # shard 1's fill (step 1) is no round


def test_allocator_benchmark_measures_a_round_and_tabulates_the_medians() -> None:
    """One process's figures (in this process: default thresholds, which it leaves as they are) and the
    table's medians and ratio; ``python -m benchmarks.allocator`` runs each in a fresh process."""
    from benchmarks.allocator import MODES, WORKLOADS, measure, table

    figures = measure("ks round", "default", frames=2)
    assert_rates([figures["seconds"], figures["peak_mib"]])
    assert figures["sys"] >= 0 and figures["faults"] >= 0
    fake = {"seconds": 2.0, "sys": 0.5, "faults": 100, "peak_mib": 300}
    results = {
        (w, m): [{**fake, "seconds": 2.0 if m == "default" else s} for s in (1.0, 1.5, 9.0)]
        for w in WORKLOADS
        for m in MODES
    }
    rows = [line for line in table(results, 3, 2).splitlines() if line.startswith("ks round")]
    assert numbers(rows[0]) == [2.0, 1.5, 0.75, 0.5, 0.5, 100, 100, 300, 300]


def test_solver_dt_benchmark(tmp_path: Path) -> None:
    from benchmarks.solver_dt import main, parse

    out = tmp_path / "dt.txt"
    lines = main(
        ["--trajectories", "1", "--frames", "3", "--dts", "0.5", "--reference", "0.125", "--out", str(out)]
    )
    rows = parse(out.read_text())
    assert out.read_text().splitlines() == lines
    assert [(r["dt"], r["dtype"], r["preset"]) for r in rows] == [
        (0.25, "float64", True),
        (0.5, "float64", False),
        (0.25, "float32", True),
        (0.5, "float32", False),
    ]
    assert all(0 <= r["error"] < 1e-3 and r["ms"] > 0 for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pde", "nosuch"], "--pde nosuch: no such preset; allowed: "),
        (["--pde", "external"], "--pde external: "),
        (["--dts", "0.1", "0"], "every step must be > 0"),
        (["--frames", "1"], "need --trajectories >= 1 and --frames >= 2"),
    ],
)
def test_solver_dt_benchmark_refuses_bad_options(args: list[str], message: str, capsys) -> None:
    from benchmarks.solver_dt import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_navier_stokes_preset_dt_is_below_float32_round_off() -> None:
    """The measured table behind conf/pde/navier_stokes.yaml: the preset's dt is the one measured, its error
    is the one the comment quotes and lies below the round-off of the float32 data it generates."""
    from benchmarks.solver_dt import parse

    rows = parse((ROOT / "benchmarks" / "results" / "solver_dt_navier_stokes.txt").read_text())
    config = (ROOT / "conf" / "pde" / "navier_stokes.yaml").read_text()
    exact, rounded = [r for r in rows if r["preset"]]
    assert (exact["dtype"], rounded["dtype"]) == ("float64", "float32")
    assert exact["dt"] == float(re.search(r"^dt: (\S+)", config, re.M).group(1))
    bound, round_off = (
        float(x) for x in re.search(r"at most (\S+) in float64.*?alone (\S+) ", config, re.S).groups()
    )
    assert exact["error"] <= bound < rounded["error"]
    assert f"{rounded['error']:.0e}" == f"{round_off:.0e}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--configs", "7"], "--configs [7]: no such rows"),
        (["--repeats", "0"], "need --repeats >= 1"),
        (
            ["--configs", "0", "--set", "data.nosuch=1"],
            "--set data.nosuch=1: Could not override 'data.nosuch'.",
        ),
    ],
)
def test_train_benchmark_refuses_bad_options(args: list[str], message: str, capsys) -> None:
    from benchmarks.train import main

    with pytest.raises(SystemExit) as stop:  # argparse's refusal, in process (the command line is the same)
        main(args)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_ns_resolution_benchmark() -> None:
    out = run_benchmark("ns_resolution", "--quick")
    rows = {line.split()[0]: numbers(line.split(None, 1)[1]) for line in out.splitlines() if "²  " in line}
    assert set(rows) == {"16²", "32²"}
    for values in rows.values():
        assert_rates(values)
    assert rows["32²"][-1] < rows["16²"][-1]  # a finer solve grid is closer to the 64²-solved data


def test_refiner_scale_benchmark(tmp_path: Path, capsys) -> None:
    """Each row's difference_weight gives the KS set-up's refined spread: std / weight is the same for all."""
    from benchmarks.refiner_scale import main

    out = tmp_path / "refiner_scale.txt"
    main(["--quick", "--out", str(out)])  # in process: the script's work, without a second interpreter
    text = capsys.readouterr().out
    assert out.read_text() == text
    rows = {
        line.split()[0]: numbers(line.split(None, 1)[1])
        for line in text.splitlines()
        if line.startswith("pde=")
    }
    assert set(rows) == {"pde=ks_lpsda", "pde=ks", "pde=burgers", "pde=navier_stokes", "pde=kolmogorov"}
    assert rows["pde=ks_lpsda"][-1] == 0.3  # the reference's own weight
    target = rows["pde=ks_lpsda"][0] / 0.3
    for std, refined, weight in rows.values():
        assert_rates([std, refined, weight])
        assert refined == pytest.approx(std / 0.3, rel=1e-2)  # as printed: 3 decimals
        assert std / weight == pytest.approx(target, rel=1e-2)


def test_contention_benchmark() -> None:
    out = run_benchmark("contention", "--quick", "--skip-training")
    rates = [numbers(line)[-1] for line in out.splitlines() if "alone" in line or "busy process  " in line]
    assert len(rates) == 4
    assert_rates(rates)
    cuts = [line for line in out.splitlines() if "cuts the throughput" in line]
    assert len(cuts) == 2 and "(goal <= 2.5)" in cuts[0]


def test_online_vs_offline_scores_and_summaries_by_hand() -> None:
    import numpy as np
    import xarray as xr

    from benchmarks.online_vs_offline import Run, compare, score, summarise

    rng = np.random.default_rng(0)
    error = rng.uniform(0.1, 1.0, (2, 40, 6))  # model, trajectory, time
    nu = np.linspace(0.5, 1.5, 40)
    ds = xr.Dataset(
        {
            "rel_l2": (("model", "trajectory", "time"), error),
            "corr_time": (("model", "trajectory", "threshold"), rng.uniform(1, 9, (2, 40, 2))),
        },
        coords={
            "model": ["untrained", "net"],
            "kind": ("model", ["untrained", "trained"]),
            "threshold": [0.8, 0.9],
            "param_nu": ("trajectory", nu),
        },
    )
    got = score(ds, [1, 4])
    mine = error[1, :, :4].mean(1)
    assert got["nrmse@4"] == pytest.approx(error[1, :, 3].mean())
    assert got["corr_time"] == pytest.approx(ds.corr_time.values[1, :, 0].mean())
    assert got["p99"] == pytest.approx(np.percentile(mine, 99)) and got["worst"] == pytest.approx(mine.max())
    assert got["worst_cell"] == pytest.approx(max(mine[5 * c : 5 * c + 5].mean() for c in range(8)))
    assert got["cell3"] == pytest.approx(mine[15:20].mean()) and got["cell3_at"] == pytest.approx(nu[17])
    runs = [
        Run("ks", data, seed, [], {"nrmse@4": value, "p99": 2 * value})
        for data, values in (("pool 32", [1.0, 1.2, 1.4]), ("online", [0.5, 0.6, 0.7]))
        for seed, value in enumerate(values)
    ]
    rows = summarise(runs)
    assert rows[0]["nrmse@4"] == pytest.approx(1.2)
    assert rows[0]["nrmse@4_ci"] == pytest.approx(4.303 * 0.2 / math.sqrt(3))  # t(2) 95 % half-width
    runs[-1].metrics["nrmse@4"] = 1.4 * 0.3  # seed 2's online error: 70 % below its pool's
    assert compare(runs, [1, 4]) == [
        "ks: online vs pool 32 (each of its trajectories used nanx as often): nrmse@4 +56.7% ± 28.7% lower "
        "(goal against the largest pool: >= 16 % lower)"
    ]


@pytest.mark.slow
def test_online_vs_offline_benchmark(tmp_path: Path) -> None:
    out = run_benchmark(
        "online_vs_offline",
        "--quick",
        "--pdes",
        "ks",
        "--seeds",
        "0",
        "--adaptive",
        "loss",
        "--test-trajectories",
        "8",
        "--out",
        str(tmp_path),
    )
    assert "| ks | pool 32 |" in out and "| ks | online |" in out and "online vs pool 32" in out
    assert "| ks | adaptive loss |" in out and "adaptive loss vs uniform online: p99" in out
    assert (tmp_path / "test" / "ks-8.h5").is_file()
    assert (tmp_path / "error_vs_pool.png").stat().st_size > 0 and (tmp_path / "summary.md").is_file()


def test_burgers_fno_scores_by_hand() -> None:
    """The benchmark's figures: relative L2 per sample, the input-mean floor, gains paired by seed, the spread of
    a test figure over sets of held-out samples."""
    import numpy as np
    import torch

    from benchmarks.burgers_fno import Run, errors, gains, spread, summarise
    from data.timegrid import TimeGrid

    x = torch.tensor([[1.0, 3.0], [-1.0, 1.0]])  # means 2 and 0
    y = torch.tensor([[2.0, 2.0], [0.5, -0.5]])
    data = {"u": torch.stack([x, y], 1)[:, :, None], "params": {}, "grid": TimeGrid(0.1, 1.0, 2)}
    floor = errors(None, data)  # predicts the input's mean: exact for the first, 0 for the second
    assert floor.tolist() == pytest.approx([0.0, 1.0])
    runs = [Run("repo-256", s, {"test": 0.01 * (1 + s), "gap": 0.01 * s}) for s in (0, 1, 2)]
    runs += [Run("repo-online-256", s, {"test": 0.008 * (1 + s), "gap": 0.0}) for s in (0, 1)]
    for run in runs:
        run.wall_s = 60.0 * (run.seed + 1)
    rows = summarise(runs)
    assert rows[0]["test"] == pytest.approx(0.02) and rows[0]["wall_s"] == 120.0
    assert rows[0]["gap"] == pytest.approx(0.01) and rows[1]["seeds"] == [0, 1]
    gain = gains(runs)["repo-online-256 vs repo-256"]
    assert gain["mean"] == pytest.approx(0.2) and gain["seeds"] == 2 and gain["ci"] == pytest.approx(0.0)
    # two sets of two held-out samples (the fifth left out): means 1 and 3, sd sqrt(2), relative to their mean 2
    assert spread(np.array([1.0, 1.0, 3.0, 3.0, 9.0]), 2) == pytest.approx(2**0.5 / 2)
    assert math.isnan(spread(np.array([1.0, 3.0]), 2))


def test_docs_quote_the_burgers_reproduction() -> None:
    """Every line of the benchmark's table, every gain, seed and command it prints stand in docs/published.md as
    written."""
    from benchmarks.burgers_fno import PUBLISHED, PUBLISHED_LATER

    summary = (ROOT / "benchmarks" / "results" / "burgers_fno" / "summary.md").read_text().splitlines()
    readme = (ROOT / "docs" / "published.md").read_text()
    quoted = [line for line in summary if line.startswith(("| ", "- ")) or " vs " in line]
    assert len(quoted) > 4
    for line in quoted:
        assert line in readme, line
    # every error figure the page's findings quote is the benchmark's (or a published one)
    findings = readme.split("What the rows show:")[1].split("Where pdestream's set-up differs")[0]
    text = "\n".join(summary)
    for figure in re.findall(r"\b0\.\d{3,}\b", findings):
        assert figure in text or float(figure) in {*PUBLISHED.values(), *PUBLISHED_LATER.values()}, figure


@pytest.mark.slow
def test_burgers_fno_benchmark(tmp_path: Path) -> None:
    out = run_benchmark("burgers_fno", "--quick", "--seeds", "0", "--settings", "offline-256", "repo-online-256",
                        "repo-256", "--out", str(tmp_path))  # fmt: skip
    assert "| offline-256 | 256 | 1 |" in out and "| repo-online-256 | 256 | 1 |" in out
    assert "repo-online-256 vs repo-256, paired by seed (1)" in out
    assert (tmp_path / "quick" / "summary.json").is_file() and (
        tmp_path / "quick" / "test" / "quick.mat"
    ).is_file()


def gpu_benchmark(tmp_path: Path, *experiments: str) -> dict:
    out = tmp_path / "gpu.json"
    table = run_benchmark(
        "gpu", "--tiny", "--device", "cpu", "--out", str(out), "--experiments", *experiments
    )
    results = json.loads(out.read_text())
    assert [r["experiment"] for r in results["models"]] == list(experiments)
    for row in results["models"]:
        assert row["params"] > 1000 and row["batch"] == 2 and row["grid"].startswith("32^")
        assert_rates([row["steps_per_s"]])
        assert re.search(rf"^{row['experiment']}\s+{row['model']}\s", table, re.MULTILINE)
    return results


def test_gpu_benchmark_counts_solver_traffic_and_times_published_set_ups(tmp_path: Path) -> None:
    results = gpu_benchmark(tmp_path, "burgers_fno", "ks_pde_refiner")
    assert [r["solver"] for r in results["solvers"]] == ["ks", "navier_stokes"]
    for row in results["solvers"]:
        # a step reads and writes at least its state, and moves less than a thousand copies of it
        assert 2 * row["state_bytes"] <= row["bytes_per_step"] < 1000 * row["state_bytes"], row
        assert_rates([row["steps_per_s"], row["roofline_fraction"]])
        assert row["bandwidth"] == pytest.approx(row["bytes_per_step"] * row["steps_per_s"])


@pytest.mark.slow
def test_gpu_benchmark_builds_every_published_set_up(tmp_path: Path) -> None:
    gpu_benchmark(tmp_path, *sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))


@pytest.mark.parametrize("case", ["1D s=256", "2D 64x64"])
def test_the_reference_fno_holding_pdestreams_weights_computes_the_same_function(case: str) -> None:
    """Outputs and every gradient of the rebuilt reference network equal pdestream's to float round-off, so the
    step timings compare the same computation."""
    from benchmarks.fno_step import build, relative_l2_sum

    ours, x, y = build("pdestream", case)
    ref, x_last, y_last = build("reference", case)
    pred, pred_ref = ours(x), ref(x_last)
    torch.testing.assert_close(pred.flatten(1, 2).movedim(1, -1), pred_ref, rtol=1e-5, atol=1e-6)
    relative_l2_sum(pred, y).backward()
    relative_l2_sum(pred_ref, y_last).backward()
    pairs = [(ours.lift.weight.grad.flatten(1), ref.fc0.weight.grad)]
    for theirs, mine, skip, w in zip(ref.convs, ours.spectral, ours.pointwise, ref.ws, strict=True):
        blocks = [theirs.weights1.grad] if x.ndim == 4 else [theirs.weights1.grad, theirs.weights2.grad]
        pairs += [(mine.weight.grad, torch.cat(blocks, dim=2)), (skip.weight.grad, w.weight.grad)]
    pairs += [(ours.project[2].weight.grad.flatten(1), ref.fc2.weight.grad)]
    for mine, theirs in pairs:
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6 * float(theirs.abs().max()))


@pytest.mark.slow  # a benchmark command's smoke run; its results file is checked by the docs tests
def test_fno_step_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "fno_step.txt"
    args = ("--steps", "2", "--rounds", "1", "--cases", "1D s=256", "--threads", "1", "--out", str(out))
    # the reference network's equivalence is tested in process above; one network keeps this smoke run short
    text = run_benchmark("fno_step", *args, "--networks", "pdestream")
    rows = {line.split()[2]: numbers(line) for line in text.splitlines() if line.startswith("1D s=256")}
    assert set(rows) == {"pdestream"} and rows["pdestream"][-2] == 1.0
    assert_rates(
        [rows[name][-4] for name in rows] + [rows[name][-1] for name in rows]
    )  # ms per step, warm-up
    assert out.read_text() == text


def test_docs_quote_the_refiner_scale_table() -> None:
    text = (ROOT / "docs" / "models.md").read_text()
    for line in (ROOT / "benchmarks" / "results" / "refiner_scale.txt").read_text().splitlines():
        assert line in text, line


def test_docs_quote_the_compiled_default_run() -> None:
    """docs/training.md's compile=true figures are those of benchmarks/results/default_run_compile.txt."""
    text = " ".join((ROOT / "docs" / "training.md").read_text().split())
    eager, compiled = (ROOT / "benchmarks" / "results" / "default_run_compile.txt").read_text().split("\n# ")
    assert "compile=true" in compiled and "compile=true" not in eager
    for block, label in ((eager, "eager"), (compiled, "compiled")):
        median = re.search(r"^median\s+(.+)$", block, re.MULTILINE).group(1)
        assert f"{median} {label}" in text, (median, label)
    for seconds in re.search(r"^runs \(s\)\s+(.+)$", compiled, re.MULTILINE).group(1).split():
        assert f"{seconds} s" in text, seconds


@pytest.mark.parametrize(
    "name", ["fno_step.txt", "step_overhead.txt", "train.txt", "solver_dt_navier_stokes.txt", "allocator.txt"]
)
def test_docs_quote_the_speed_tables(name: str) -> None:
    """The speed tables of docs/figures.md are the benchmark files as written (the profile after the table
    excepted)."""
    table = (ROOT / "benchmarks" / "results" / name).read_text().split("\n\n")[0]
    readme = (ROOT / "docs" / "figures.md").read_text()
    for line in table.splitlines():
        assert line in readme, line


@pytest.mark.slow  # a benchmark command's smoke run; its results file is checked by the docs tests
def test_default_run_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "default_run.txt"
    overrides = (
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "validate_untrained=false",
        "logger=none",
    )
    scores = tmp_path / "default_run_scores.txt"
    report = ("num_trajectories=2", "solver_baseline.enabled=false", "timing.repeats=1", "timing.warmup=0",
              "bootstrap.num_resamples=10", "num_sample_plots=1")  # fmt: skip
    text = run_benchmark("default_run", "--runs", "1", "--out", str(out), "--scores", str(scores),
                         "--overrides", *overrides, "--eval-overrides", *report)  # fmt: skip
    times = out.read_text()
    assert re.search(r"^median\s+(\d+ min \d\d\.\d|\d+\.\d) s$", times, re.MULTILINE)
    # the run's validation correlation time and its report, as the README's headline figure quotes them
    assert text == times + scores.read_text()
    assert re.search(r"^step 2\s+\d+(\.\d+)?$", text, re.MULTILINE)
    assert re.search(r"^best checkpoint\s+\S+ \(step 2\)$", text, re.MULTILINE)
    (row,) = (line for line in text.splitlines() if re.match(r"\| fno-small( ⚠[^|]*)? \|", line))
    assert re.match(r"\| fno-small( ⚠[^|]*)? \| 30,673 \| \d", row) and "ms/step" not in text
    for figure in ("samples", "correlation"):
        assert (tmp_path / f"default_run_{figure}.png").is_file(), figure


@pytest.mark.slow  # a benchmark command's smoke run; its results file is checked by the docs tests
def test_datasets_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "datasets.md"
    text = run_benchmark("datasets", "--presets", "lpsda_ks", "--sample", "2", "--out", str(out))
    assert out.read_text().strip() == text.strip()
    (row,) = (line for line in text.splitlines() if line.startswith("| `dataset="))
    assert "`datasets/lpsda/KS_train_fixed_viscosity.h5 (and val, test)` | 2304 |" in row and "| 2 in " in row
    size = float(re.search(r"\| ([\d.]+) GB \|", row).group(1))
    assert (
        0.64 < size < 0.72
    )  # 2304 trajectories × 140 frames × 256 points, float64 = 0.66 GB, and the headers


@pytest.mark.parametrize("name", ["default_run.txt", "contention_3000.txt", "datasets.md"])
def test_docs_quote_the_main_job_timings(name: str) -> None:
    readme = (ROOT / "docs" / ("data.md" if name == "datasets.md" else "figures.md")).read_text()
    lines = (ROOT / "benchmarks" / "results" / name).read_text().splitlines()
    for line in [line for line in lines if line.startswith("|")] if name.endswith(".md") else lines:
        assert line in readme, line


def test_docs_online_vs_memory_figures_follow_the_results() -> None:
    """The 2D cost split of docs/figures.md, computed from benchmarks/results/train.txt and the solver_dt table:
    32 trajectories × 100 frames a round, 96 windows each served 4 times, batches of 32 (the defaults)."""
    from benchmarks.solver_dt import parse
    from benchmarks.train import bound

    text = " ".join((ROOT / "docs" / "figures.md").read_text().split())
    results = (ROOT / "benchmarks" / "results" / "train.txt").read_text()
    (row,) = [line for line in results.splitlines() if "NS 64²," in line]
    online, memory, ratio, solve, step_online, step_memory, busy_online, busy_memory, most = numbers(
        row.split(")", 1)[1]
    )
    per_sample, solving = step_memory / 32, 1e3 * solve / (32 * 96 * 4)
    assert f"from memory it trained at 225.6 samples/s, now at {memory}, while" in text
    assert f"From memory a step takes {step_memory} ms, {per_sample:.2f} ms per sample" in text
    assert f"Online a step takes {step_online} ms ({(step_online - step_memory) / 32:.2f} ms more" in text
    assert f"solve, {solve} s, adds {solving:.2f} ms per sample: {1e3 * solve / 3200:.1f} ms per" in text
    assert f"at most {per_sample / 9:.2f} ms per sample for both" in text
    assert f"would have to be {solving / (per_sample / 9):.1f}× cheaper if it ran in turn" in text
    assert f"and not {solving / (per_sample / 9):.1f}×." in text
    # the bound from the row's own (rounded) figures, and as the docs quote it
    assert abs(bound(online / memory, busy_online, 2) - most) <= 0.011 and round(online / memory, 2) == ratio
    assert f"the 2D steps keep {busy_memory:.2f} of the 2 cores busy; online, {busy_online:.2f}." in text
    verdict = "still below 0.9" if most < 0.9 else "enough for 0.9 in principle"
    assert f"it would reach {most:.2f} of the memory rate (the `bound` column), {verdict}" in text
    rows = {line[:32].strip(): numbers(line[32:]) for line in results.splitlines()[2:]}
    for device, workers in (("2D (NS 64², fno-small)", "2D, 2 CPU generation workers"),
                            ("default (KS 256, fno-small)", "KS, 2 CPU generation workers")):  # fmt: skip
        assert f"{rows[device][0]} against {rows[workers][0]}" in text
    ks, ks_workers = rows["default (KS 256, fno-small)"], rows["KS, 2 CPU generation workers"]
    assert (
        f"({rows['2D, 2 CPU generation workers'][1]} against {memory} samples/s in 2D, {ks_workers[1]} on one "
        f"thread against {ks[1]} on two in KS)" in text
    )
    workers = [rows[name] for name in rows if "workers" in name]
    in_process = [rows[name] for name in rows if "workers" not in name]
    # as the prose says: generating in the training process is the faster choice, from memory and online
    assert all(w[0] < p[0] and w[1] < p[1] for w, p in zip(workers, in_process, strict=True))
    rows = parse((ROOT / "benchmarks" / "results" / "solver_dt_navier_stokes.txt").read_text())
    exact, rounded = [r for r in rows if r["preset"]]
    (fine,) = [r for r in rows if (r["dt"], r["dtype"]) == (0.025, "float64")]
    assert f"within {exact['error']:.1e} (relative L2, float64)".replace("e-0", "e-") in text
    assert f"below the {rounded['error']:.0e} float32 round-off".replace("e-0", "e-") in text
    single = [r["error"] for r in rows if r["dtype"] == "float32"]
    assert f"lie {min(single):.0e} to {max(single):.1e} from".replace("e-0", "e-") in text
    assert f"At dt = 0.025 a frame costs {fine['ms'] / exact['ms']:.2f}× more" in text


def test_docs_allocator_and_contention_figures_follow_the_results() -> None:
    """The prose of docs/figures.md and docs/training.md around the allocator and contention tables quotes
    the figures of benchmarks/results/allocator.txt, train.txt and contention_3000.txt."""
    figures = " ".join((ROOT / "docs" / "figures.md").read_text().split())
    training = " ".join((ROOT / "docs" / "training.md").read_text().split())
    results = ROOT / "benchmarks" / "results"
    rows = {
        line[:26].strip(): numbers(line[26:])
        for line in (results / "allocator.txt").read_text().splitlines()[2:]
    }
    ks, ns, steps = rows["ks round"], rows["navier_stokes round"], rows["fno-small steps, 2D 64²"]
    assert (
        f"took {steps[5]:,.0f} page faults and {steps[3]:.2f} s of kernel time. Kept, they take {steps[2]:.2f}×"
        in figures
    )
    assert f"({ns[2]:.2f}× for Navier-Stokes, {ks[2]:.2f}× for the short KS round)" in figures
    growth = max(row[8] - row[7] for row in rows.values())
    assert f"the peak grew by up to {growth:.0f} MiB" in figures
    assert (
        f"Ten 2D `fno-small` steps take {steps[2]:.2f}× the time for it, a solver round alone measured {ns[2]:.2f}×"
        in training
    )
    (row,) = [line for line in (results / "train.txt").read_text().splitlines() if "NS 64²," in line]
    _, _, _, solve, _, step_memory = numbers(row.split(")", 1)[1])[:6]
    assert f"384 steps: {solve:.1f} s of solving against {384 * step_memory / 1e3:.0f} s of steps" in figures
    contention = (results / "contention_3000.txt").read_text()
    solver = re.search(r"parts: a busy process cuts the throughput ([\d.]+)x", contention).group(1)
    runs = re.search(r"the slower of the two takes ([\d.]+)x the solo time", contention).group(1)
    assert f"less than 2.5× ({solver}×)" in figures and f"within {runs}× the time of one alone" in figures
