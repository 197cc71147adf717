import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.ticker import NullFormatter

from evaluation.report.figures import figure_cost_accuracy, figure_error
from evaluation.report.parameter_space import tail_tables
from evaluation.report.tables import metric_tables, solver_table, summary_table
from evaluation.report.verdicts import WARNING, shown_label, timing_note, verdict
from tests.evaluation.conftest import eval_config
from training.checkpoint import EvaluationError
from training.pipeline import evaluate, load_models

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["fno-small", "pde_refiner-small"]
FIGURES = ["error_vs_time.png", "correlation_vs_time.png", "spectra.png", "cost_accuracy.png"]


@pytest.fixture(scope="module")
def report(fno_run, refiner_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = eval_config(
        [
            f"checkpoints=[{fno_run},{refiner_run}]",
            f"paths.output_dir={out}",
            "num_noise_samples=2",
            "batch_size=3",
            "logger=wandb",
            "timing.repeats=3",
            "timing.steps=4",
        ]
    )
    tic = time.perf_counter()
    evaluate(cfg)
    return out, time.perf_counter() - tic


def test_report_has_every_file_and_is_fast(report):
    out, seconds = report
    expected = [*FIGURES, "samples_fno-small.png", "samples_pde_refiner-small.png"]
    for name in ["metrics.nc", "report.html", "report.md", *expected]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert seconds < 120  # two models, their untrained twins, persistence, the solver and timings


def test_metrics_dataset(report):
    out, _ = report
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert list(ds.model.values) == [*MODELS, *(f"{m} (untrained)" for m in MODELS), "persistence"]
    assert list(ds.kind.values) == ["trained"] * 2 + ["untrained"] * 2 + ["persistence"]
    assert ds.sizes["trajectory"] == 4 and ds.sizes["time"] == 8  # 12 frames - 4 history
    assert ds.sizes["wavenumber"] == 17 and list(ds.threshold.values) == [0.8, 0.9, 0.95]
    assert ds.rel_l2.dims == ("model", "trajectory", "time")
    assert ds.spectrum_pred.dims == ("model", "trajectory", "time", "wavenumber")
    assert np.allclose(ds.time.values, 0.25 * np.arange(1, 9))
    assert np.isfinite(ds.rel_l2.values).all() and (ds.corr_time.values <= 2.0 + 1e-9).all()
    ci = ds.rel_l2_ci.sel(stat=["low", "mean", "high"]).values
    assert (ci[..., 0] <= ci[..., 1] + 1e-12).all() and (ci[..., 1] <= ci[..., 2] + 1e-12).all()
    # the ensemble spread exists for the refiner only (two noise samples)
    assert np.isnan(ds.spread.sel(model=["fno-small", "persistence"])).all()
    assert (ds.spread.sel(model="pde_refiner-small") > 0).all()
    assert list(ds.solver_setting.values) == ["reference", "n/2", "n/4", "2×dt", "4×dt"]
    assert ds.solver_rel_l2.sel(solver_setting="reference").max() < 1e-4
    assert "fno-small" in ds.attrs["model_configs"] and "checkpoints" in ds.attrs["evaluation_config"]


def test_a_fixed_parameter_draws_no_parameter_figure_and_says_why(report):
    out, _ = report
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert (ds.param_nu == 1.0).all() and ds.param_nu.attrs["training_law"] == "fixed"
    assert ds.fno_rel_l2_tail.dims == ("model", "time", "tail") and ds.corr_time_tail.sizes["threshold"] == 3
    assert not (out / "parameter_space.png").exists()
    text = (out / "report.md").read_text()
    assert (
        "No figure of the error over the PDE parameters: every PDE parameter is the same for all test "
        "trajectories (nu = 1)." in text
    )


def test_html_is_self_contained(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "href=" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(list(out.glob("*.png"))) == 6
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "fno-small" in page and "speed-up at equal accuracy" in page and "_target_" in page


def test_markdown_links_existing_figures(report):
    out, _ = report
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(p.name for p in out.glob("*.png"))
    summary = text[text.index("## Summary") : text.index("## Protocol")]
    rows = [
        line
        for line in summary.splitlines()
        if line.startswith(("| fno-small", "| pde_refiner", "| persist"))
    ]
    assert [row.split(" | ")[0][2:].split(f" {WARNING}")[0] for row in rows] == [
        "fno-small", "pde_refiner-small", "fno-small (untrained)", "pde_refiner-small (untrained)", "persistence"
    ]  # fmt: skip
    assert rows[-1].endswith("| — | — | — (anchor: no model) |")


def test_timings_are_medians_over_interleaved_repeats(report):
    out, _ = report
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert ds.attrs["timing_device"].startswith("cpu: ") and "torch thread" in ds.attrs["timing_device"]
    assert ds.step_seconds.dims == ("model", "repeat") and ds.sizes["repeat"] == 3
    trained = ds.step_seconds.sel(model=MODELS).values
    assert (trained > 0).all()
    assert np.allclose(ds.seconds_per_step.sel(model=MODELS), np.median(trained, axis=1))
    assert np.isnan(ds.seconds_per_step.sel(model="persistence"))
    ok = ds.solver_step_seconds.sel(solver_setting=["reference", "n/2"]).values
    assert np.allclose(
        ds.solver_seconds_per_step.sel(solver_setting=["reference", "n/2"]), np.median(ok, axis=1)
    )
    summary = summary_table(ds, [1])
    cell = summary[1][0][summary[0].index("ms/step (min–max)")]
    ms = 1e3 * trained[0]
    shown = [float(v) for v in re.findall(r"[\d.]+(?:e[+-]\d+)?", cell)]
    assert np.allclose(shown, [np.median(ms), ms.min(), ms.max()], rtol=5e-3)
    page = (out / "report.html").read_text()
    assert ds.attrs["timing_device"] in page and "median of 3 timed runs" in page


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "checkpoints is required"),
        (["checkpoints=[]"], "checkpoints is required"),
        (["checkpoints=[x]", "device=tpu"], "device='tpu' is not allowed; allowed: cpu, cuda, auto"),
        (["checkpoints=[x]", "logger=csv"], "is not supported here; allowed: none, wandb"),
        (["checkpoints=[x]", "thresholds=[0.8,1.2]"], "thresholds"),
        (["checkpoints=[x]", "batch_size=0"], "batch_size=0"),
    ],
)
def test_bad_options_give_one_clear_error(overrides, message, tmp_path):
    with pytest.raises(EvaluationError, match=re.escape(message)):
        evaluate(eval_config([*overrides, f"paths.output_dir={tmp_path}"]))


def test_command_line_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"checkpoints=[{tmp_path / 'missing.ckpt'}]",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "does not exist" in output and "Traceback" not in output


def test_figures_from_the_dataset_carry_units(report):
    out, _ = report
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    fig = figure_error(ds)
    assert fig.axes[0].get_xlabel() == "lead time (time units)"
    plt.close(fig)
    fig = figure_cost_accuracy(ds)
    left, right = fig.axes[:2]
    assert right.get_ylabel() == "mean nRMSE over the horizon" and right.get_yscale() == "log"
    assert left.get_xlabel() == "wall time per rollout step (ms, batch of 3)"
    assert left.get_ylabel() == "correlation time @0.8 (time units)"
    assert isinstance(left.xaxis.get_minor_formatter(), NullFormatter)  # no crowded minor labels
    assert left.xaxis.get_major_formatter()(2.0, 0) == "2"  # plain numbers, not 2×10⁰
    names = [re.split(f" \\(?{WARNING}", t.get_text())[0] for t in fig.legends[0].get_texts()]  # flags aside
    assert {"fno-small (untrained)", "persistence", "fno-small", "pde_refiner-small"} <= set(names)
    assert ds.attrs["timing_device"] in fig.get_suptitle()
    plt.close(fig)


def test_protocol_card_says_where_the_training_data_came_from():
    from evaluation.report.tables import _training_data

    online = {
        "_target_": "data.OnlineDataModule",
        "frames": 100,
        "pool_size": None,
        "sampling": "adaptive",
        "buffer": {"policy": "reservoir", "capacity": 16384},
    }
    assert _training_data({"data": online}) == (
        "online: solvers stream new trajectories of 100 frames, PDE parameters drawn adaptively, "
        "into a reservoir buffer of 16384 windows"
    )
    pool = {**online, "pool_size": 1000, "sampling": "uniform"}
    assert _training_data({"data": pool}).startswith(
        "a fixed pool of 1000 trajectories from the solver stream"
    )
    offline = {"_target_": "data.OfflineDataModule", "paths": {"train": "datasets/ks.h5"}}
    assert _training_data({"data": offline}) == (
        "offline: windows of the training rows of datasets/ks.h5 (pdestream layout)"
    )
    well = {"_target_": "data.OfflineDataModule", "paths": "datasets/flow", "format": "the_well"}
    assert (
        _training_data({"data": well})
        == "offline: windows of the training rows of datasets/flow (the_well layout)"
    )


# ----------------------------------------------------------------------------- flags and the answer first
def _quiet(ds: xr.Dataset, **seconds: list[float]) -> xr.Dataset:
    """``ds`` on a quiet machine (load 0), every timing steady, except the rows given their own repeats."""
    ds = ds.copy(deep=True)
    ds.attrs.update(timing_load=0.0, timing_cores=2)
    ds["step_seconds"][:] = np.where(np.isfinite(ds.step_seconds), 1e-3, np.nan)
    ds["solver_step_seconds"][:] = np.where(np.isfinite(ds.solver_step_seconds), 2e-3, np.nan)
    for model, values in seconds.items():
        ds["step_seconds"].loc[{"model": model.replace("_", "-")}] = values
    return ds


def _cells(table, column: str) -> dict[str, str]:
    header, rows = table
    return {row[0]: row[header.index(column)] for row in rows}


def test_a_high_spread_timing_is_flagged_in_the_tables_and_the_plot(report):
    out, _ = report
    ds = _quiet(xr.open_dataset(out / "metrics.nc", engine="h5netcdf"), fno_small=[43e-3, 475e-3, 544e-3])
    ms = _cells(summary_table(ds, [1]), "ms/step (min–max)")
    steady = next(label for label in ms if label.startswith("pde_refiner-small"))
    noisy = next(label for label in ms if label.startswith("fno-small") and "untrained" not in label)
    assert ms[noisy].endswith(WARNING) and not ms[steady].endswith(WARNING)
    assert _cells(summary_table(ds, [1]), "speed-up vs solver")[noisy].endswith(WARNING)
    assert "above 1.5× for fno-small (13×)" in timing_note(ds)
    assert "busy" not in timing_note(ds)
    fig = figure_cost_accuracy(ds)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("fno-small") and "timing unreliable" in t for t in legend)
    assert not any(t.startswith("pde_refiner-small") and "timing unreliable" in t for t in legend)
    assert "hollow markers: unreliable timings" in fig.get_suptitle()
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    hollow = [line.get_label() for line in stars if line.get_markerfacecolor() == "white"]
    assert len(stars) == 2 and len(hollow) == 1
    plt.close(fig)
    steady_ds = _quiet(ds)  # every row steady: nothing flagged
    assert not timing_note(steady_ds)
    assert not any(
        c.endswith(WARNING) for c in _cells(summary_table(steady_ds, [1]), "ms/step (min–max)").values()
    )
    fig = figure_cost_accuracy(steady_ds)
    assert "hollow" not in fig.get_suptitle()
    plt.close(fig)


def test_timings_on_a_busy_machine_are_all_flagged(report):
    out, _ = report
    ds = _quiet(xr.open_dataset(out / "metrics.nc", engine="h5netcdf"))
    ds.attrs.update(timing_load=7.5, timing_cores=2)
    ms = _cells(summary_table(ds, [1]), "ms/step (min–max)")
    timed = [cell for cell in ms.values() if cell != "—"]
    assert len(timed) == 2 and all(cell.endswith(WARNING) for cell in timed)
    assert all(row[3].endswith(WARNING) for row in solver_table(ds)[1] if row[-1].startswith("ok"))
    assert "the machine was busy (load average 7.5 over 2 usable cores)" in timing_note(ds)


def test_a_model_below_persistence_is_flagged_wherever_it_appears(report):
    out, _ = report
    ds = _quiet(xr.open_dataset(out / "metrics.nc", engine="h5netcdf"))  # no timing flags in the legends
    ds["corr_time"][:] = 0.5
    ds["corr_time"].loc[{"model": "persistence"}] = 1.0  # persistence holds on longer than every model
    ds["corr_time"].loc[{"model": "pde_refiner-small"}] = 1.5  # the refiner beats it
    ds["corr_time"].loc[{"model": "fno-small (untrained)"}] = 0.25  # fno-small beats its untrained self
    flagged = "fno-small ⚠ no better than persistence"
    assert (
        shown_label(ds, "fno-small") == flagged
        and shown_label(ds, "pde_refiner-small") == "pde_refiner-small"
    )
    assert flagged in [row[0] for row in summary_table(ds, [1])[1]]
    tables = metric_tables(ds, [1, 5]) + tail_tables(ds, [1, 5])
    assert len(tables) >= 4
    for title, (_, rows) in tables:
        labels = [row[0] for row in rows]
        assert flagged in labels and "fno-small" not in labels, title
        assert "pde_refiner-small" in labels, title
    for draw in (figure_error, figure_cost_accuracy):
        fig = draw(ds)
        legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
        names = [t.get_text() for t in legend.get_texts()]
        assert any(n.startswith(flagged) for n in names) and "pde_refiner-small" in names
        plt.close(fig)
    assert verdict(ds, "fno-small").startswith(
        f"{WARNING} fno-small: no better than persistence (correlation time @0.8: 0.5 vs"
    )
    assert "persistence 1 time units; mean nRMSE" in verdict(ds, "fno-small")
    assert "beats" in verdict(ds, "pde_refiner-small") and WARNING not in shown_label(ds, "pde_refiner-small")
    ds["corr_time"].loc[{"model": "persistence"}] = 0.5  # a tie: the lower nRMSE decides
    ds["rel_l2"].loc[{"model": "fno-small"}] = ds.rel_l2.sel(model="persistence") / 2
    assert "persistence" not in shown_label(ds, "fno-small")


def test_the_report_opens_with_the_summary_and_verdicts(report):
    out, _ = report
    text = (out / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings[:3] == ["# Surrogate evaluation report", "## Summary", "## Protocol"]
    summary = text[text.index("## Summary") : text.index("## Protocol")]
    verdicts = [line for line in summary.splitlines() if line.startswith("- ")]
    assert [v[2:].lstrip(f"{WARNING} ").split(":")[0] for v in verdicts] == MODELS
    assert all("Against the classical solver:" in v and "persistence" in v for v in verdicts)
    assert summary.index("- ") < summary.index("| model |")  # verdicts, then the table
    assert text.index("Metrics:") > text.index("| model |")  # the definitions come after the answer
    page = (out / "report.html").read_text()
    body = page[page.index("<body>") :]
    assert re.findall(r"<h2>([^<]*)</h2>", body)[:2] == ["Summary", "Protocol"]
    assert body.index('<ul class="verdicts">') < body.index("<table>") < body.index("<h2>Protocol</h2>")


def test_the_volume_unit_is_shown_for_a_1d_grid(report):
    out, _ = report
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert int(ds.attrs["ndim"]) == 1
    assert ds.pdebench_frmse_ci.attrs["unit"] == "field units × length units"
    text = (out / "report.md").read_text() + (out / "report.html").read_text()
    assert "fRMSE (≤ t) low (field units × length units)" in text and "^d" not in text
    ds2 = ds.copy()
    ds2.attrs["ndim"] = 2
    headers = [h for _, (header, _) in metric_tables(ds2, [1]) for h in header]
    assert "PDEBench fRMSE (≤ t) low (field units × length units²)" in headers


def test_identical_checkpoints_keep_numbered_labels(fno_run):
    models = load_models([str(fno_run), str(fno_run)], trust=False)
    assert [m.label for m in models] == ["fno-small#1", "fno-small#2"]
