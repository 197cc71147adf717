"""Per-trajectory domain length and time scale (``pde=ks_lpsda``) through validation and the evaluation job:
each trajectory's correlation time is measured in its own time step."""

import numpy as np
import xarray as xr

from tests.evaluation.conftest import eval_config, train_tiny
from training.checkpoint import load_checkpoint
from training.pipeline import evaluate
from training.testdata import load_test_set

THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
RANGED = ["pde=ks_lpsda", "pde.n=64", "pde.dt=0.25", "model=fno-small", "model.modes=4"]


def test_evaluation_measures_each_trajectory_in_its_own_time_step(tmp_path, cache_dir):
    run = train_tiny(tmp_path / "run", cache_dir, RANGED)
    out = tmp_path / "report"
    overrides = [
        f"checkpoints=[{run}]", f"paths.output_dir={out}", "anchors.untrained=false", "timing.repeats=1",
        "timing.warmup=0", "timing.steps=1", "bootstrap.num_resamples=20", "horizons=[1,4]",
        "solver_baseline.coarsen=[]", "solver_baseline.dt_factors=[]", f"thresholds={list(THRESHOLDS)}",
    ]  # fmt: skip
    cfg = eval_config(overrides)
    evaluate(cfg)
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    scales = load_test_set(cfg, load_checkpoint(run)[1], str(run))["params"]["time_scale"].double().numpy()
    assert len(set(scales.round(6))) == len(scales) and 0.9 <= scales.min() and scales.max() <= 1.1
    steps = 0.25 * scales  # each trajectory's time step
    crossings = 0
    for row in ("fno-small", "persistence"):
        corr = ds.corr.sel(model=row).values  # [trajectory, time]
        for threshold in THRESHOLDS:
            below = ~(corr >= threshold)
            first = np.where(below.any(1), below.argmax(1), corr.shape[1])  # steps before the first crossing
            expected = first * steps
            np.testing.assert_allclose(
                ds.corr_time.sel(model=row, threshold=threshold).values, expected, rtol=1e-6
            )
            crossings += int(((first > 0) & (first < corr.shape[1])).sum())
    assert crossings > 0  # some crossings after the first step: the own-step conversion was exercised
