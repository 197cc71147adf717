"""The metric registry: one entry reaches validation, ``metrics.nc`` and the report; bad entries are refused."""

import re

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import xarray as xr
from torch import Tensor
from torch.utils.data import DataLoader

from data.datamodule import TrajectorySet
from evaluation import metrics, registry
from tests.evaluation.conftest import eval_config
from training.checkpoint import load_checkpoint, model_grid
from training.pipeline import evaluate
from training.testdata import load_test_set


def _largest_error(r: registry.Rollout) -> Tensor:
    return (r.pred - r.true).flatten(2).abs().amax(-1)


TOY = registry.Metric(
    "largest_error", "largest abs. error", registry.PER_STEP, registry.LOWER, "field units",
    "the largest absolute error over the grid at lead time t", "a test entry", _largest_error,
    validation=True,
)  # fmt: skip


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_registered_metric_reaches_validation_metrics_nc_and_the_report(fno_run, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "METRICS", [*registry.METRICS, TOY])
    # validation: logged as val/<name> (mean, first and last step) next to the selection key
    module, config = load_checkpoint(fno_run)
    cfg = eval_config([f"paths.output_dir={tmp_path}"])
    data = load_test_set(cfg, config, "fno")
    step = model_grid(config).spacing(data["params"], len(data["u"]))
    trajectories = TrajectorySet(data["u"], data["params"], step)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(module, DataLoader(trajectories, batch_size=2), verbose=False)[0]
    assert {"val/largest_error", "val/largest_error_first", "val/largest_error_last"} <= set(logged)
    assert "val/corr_time" in logged and "val/pdearena_corr_time" in logged
    assert logged["val/largest_error_last"] >= logged["val/largest_error_first"] > 0
    # the evaluation job and its report
    out = tmp_path / "report"
    overrides = [
        f"checkpoints=[{fno_run}]", f"paths.output_dir={out}", "anchors.untrained=false", "timing.repeats=1",
        "timing.warmup=0", "timing.steps=1", "bootstrap.num_resamples=50", "horizons=[1,8]",
        "solver_baseline.coarsen=[2]", "solver_baseline.dt_factors=[]",
    ]  # fmt: skip
    evaluate(eval_config(overrides))
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert ds.largest_error.dims == ("model", "trajectory", "time")
    assert (
        ds.largest_error.attrs["label"] == "largest abs. error"
        and ds.largest_error.attrs["better"] == "lower"
    )
    assert ds.solver_largest_error_ci.dims == ("solver_setting", "time", "stat")
    mean = ds.largest_error_ci.sel(model="fno-small", stat="mean").values
    np.testing.assert_allclose(mean, ds.largest_error.sel(model="fno-small").mean("trajectory"))
    text = (out / "report.md").read_text()
    assert "- largest abs. error (largest_error; per step; lower is better, field units): the largest" in text
    lines = text[text.index("### At lead time") :].splitlines()
    header, row = _cells(lines[2]), _cells(lines[4])
    assert header[:2] == ["row", "MSE (field units²)"] and row[0] == "fno-small"
    # the toy column of the first per-horizon table: its value at the first step
    cell = row[header.index("largest abs. error (field units)")]
    assert float(cell.split(" [")[0]) == pytest.approx(float(mean[0]), rel=5e-3)
    assert "largest abs. error" in (out / "report.html").read_text()


def test_report_values_follow_their_conventions(fno_run, tmp_path):
    out = tmp_path / "report"
    overrides = [
        f"checkpoints=[{fno_run}]", f"paths.output_dir={out}", "anchors.untrained=false", "timing.repeats=1",
        "timing.warmup=0", "timing.steps=1", "bootstrap.num_resamples=50", "solver_baseline.enabled=false",
        "thresholds=[0.8,0.99]",
    ]  # fmt: skip
    evaluate(eval_config(overrides))
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    for model in ds.model.values:
        m = ds.sel(model=model)
        corr = torch.tensor(m.corr.values)
        rel = torch.tensor(m.rel_l2.values)
        times = torch.tensor(ds.time.values)
        for t in ds.threshold.values:
            arena = metrics.pdearena_correlation_time(corr, times, float(t)).item()
            assert float(m.pdearena_corr_time_ci.sel(threshold=t, stat="mean")) == pytest.approx(arena)
            robust = metrics.pdearena_correlation_time(corr, times, float(t), nan_as=-1.0).item()
            assert float(m.corr_time_of_mean_ci.sel(threshold=t, stat="mean")) == pytest.approx(robust)
            per = metrics.correlation_time(corr, times, float(t)).mean().item()
            assert float(m.corr_time_ci.sel(threshold=t, stat="mean")) == pytest.approx(per)
        # one channel: PDEBench's per-channel nRMSE is the per-frame relative L2; both averaged over frames ≤ t
        np.testing.assert_allclose(m.fno_rel_l2.values, metrics.over_horizon(rel).numpy(), rtol=1e-10)
        np.testing.assert_allclose(m.pdebench_nrmse.values, m.fno_rel_l2.values, rtol=1e-6)
        low, value, high = (m.pdebench_frmse_ci.sel(stat=s).values for s in ("low", "mean", "high"))
        assert (low <= value + 1e-12).all() and (value <= high + 1e-12).all() and (value > 0).all()
    text = (out / "report.md").read_text()
    assert re.search(r"corr\. time \(PDEArena: of the mean correlation\) @0\.99 \(time units\)", text)
    assert "### At lead time t = 0.25 time units (1 step)" in text


def test_bad_entries_are_refused():
    with pytest.raises(
        ValueError, match="kind='per frame' must be one of per step, per trajectory, per model"
    ):
        registry.Metric("x", "x", "per frame", registry.LOWER, "", "d", "c", _largest_error)
    with pytest.raises(ValueError, match="of_mean is required for kind per model"):
        registry.Metric("x", "x", registry.PER_MODEL, registry.LOWER, "", "d", "c", _largest_error)
    with pytest.raises(KeyError, match="no metric 'nope'"):
        registry.by_name("nope")
