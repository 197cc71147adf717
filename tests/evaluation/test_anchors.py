"""Persistence against a hand-made trajectory; larger solver steps flagged when they repeat the reference."""

import math

import hydra
import numpy as np
import pytest
import torch
import xarray as xr

from data.timegrid import TimeGrid
from data.trajectories import generate
from evaluation import registry
from evaluation.baseline import run_solver
from evaluation.report.tables import solver_table
from evaluation.report.verdicts import same_as_reference
from evaluation.timing import time_interleaved
from tests.evaluation.conftest import eval_config
from training.forecasters import persistence
from training.metrics_dataset import _solver_variables
from training.scoring import evaluate_model


def test_persistence_repeats_the_last_input_frame(tmp_path):
    # u(t_k, x) = (k + 1) sin(x): persistence predicts 4 sin(x) after 4 input frames, the truth at lead
    # step j is (4 + j) sin(x), so nRMSE = j / (4 + j), MSE = j² / 2 and the correlation stays 1.
    x = torch.linspace(0, 2 * math.pi, 33)[:-1]
    frames = torch.arange(1, 11, dtype=torch.float32)
    u = (frames[:, None] * torch.sin(x)).reshape(1, 10, 1, 32).repeat(3, 1, 1, 1)
    cfg = eval_config([f"paths.output_dir={tmp_path}", "num_sample_plots=1"])
    dt = torch.full((3,), 0.5, dtype=torch.float64)
    out = evaluate_model(persistence(4), u, {}, dt, 1e6, cfg, torch.device("cpu"), 2 * math.pi)
    lead = torch.arange(1, 7, dtype=torch.float64)
    assert torch.allclose(out.cat("rel_l2"), (lead / (4 + lead)).expand(3, 6), atol=1e-6)
    assert torch.allclose(out.cat("mse"), (lead**2 / 2).expand(3, 6), atol=1e-5)
    assert torch.allclose(out.cat("corr"), torch.ones(3, 6, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out.samples, u[:1, 3:4].expand(1, 6, 1, 32))
    # every published convention, by hand: the error is −j sin(x), its spatial mean 0
    ratio = lead / (4 + lead)
    frames_mean = ratio.cumsum(0) / lead
    block = (lead**2).cumsum(0).sqrt() / ((4 + lead) ** 2).cumsum(0).sqrt()
    expected = {
        "fno_rel_l2": frames_mean,
        "fno_rel_l2_block": block,
        "vrmse": ratio * math.sqrt(31 / 32),  # the unbiased variance of (4 + j) sin(x) over 32 points
        "pdebench_nrmse": frames_mean,
    }
    for name, curve in expected.items():
        assert torch.allclose(out.cat(name), curve.expand(3, 6), atol=1e-5), name
    assert torch.equal(out.cat("corr_time"), torch.full((3, 3), 3.0, dtype=torch.float64))  # never below
    scope = registry.Scope(0.5 * lead, (0.8, 0.9, 0.95))
    arena = registry.by_name("pdearena_corr_time")
    assert arena.of_mean(out.cat("pdearena_corr_time").mean(0, keepdim=True), scope).tolist() == [[3.0] * 3]
    # fRMSE: |rfft| of j sin at k = 1 is 16 j, × 2π / 32 → j π, alone in the low band k < 4 (4 wavenumbers)
    frmse = registry.by_name("pdebench_frmse")
    bands = frmse.of_mean(out.cat("pdebench_frmse").mean(0, keepdim=True), scope)[0]
    low = math.pi / 4 * (lead + 1) / 2  # the mean of j π / 4 over j = 1 … t
    torch.testing.assert_close(bands, torch.stack([low, 0 * lead, 0 * lead], -1), atol=1e-4, rtol=1e-5)


def _solver_dataset(pde: dict, dt_out: float, steps: int) -> xr.Dataset:
    """The solver part of a metrics dataset for ``pde``: real solves, timings interleaved, 5 repeats."""
    truth = generate(
        hydra.utils.instantiate(pde), 0, "test", range(2), TimeGrid(dt_out, dt_out, steps + 4).times()
    )
    u = truth.u.float()
    runs = run_solver(pde, u[:, 3], truth.params, dt_out, steps, 2, [2], [2, 4])
    jobs = {r.label: r.job(steps) for r in runs if r.job is not None}
    seconds = time_interleaved({k: job for k, (job, _) in jobs.items()}, torch.device("cpu"), repeats=5)
    for run in runs:
        if run.label in jobs:
            run.seconds = [s / jobs[run.label][1] for s in seconds[run.label]]
    cfg = eval_config(["paths.output_dir=unused", "thresholds=[0.8]", "timing.repeats=5"])
    dt = torch.full((2,), dt_out, dtype=torch.float64)
    data = _solver_variables(runs, u[:, 4:], 2, steps, dt, pde["length"], cfg)
    coords = {
        "solver_setting": [r.label for r in runs],
        "threshold": [0.8],
        "pdebench_band": ["low", "mid", "high"],
    }
    return xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords)


BURGERS = {
    "_target_": "solvers.Burgers",
    "n": 64,
    "length": 2 * math.pi,
    "dt": 0.05,
    "nu": 0.01,
    "burn_in": 0.0,
}
KS = {
    "_target_": "solvers.ks.KuramotoSivashinsky",
    "n": 64,
    "length": 32.0,
    "dt": 0.25,
    "nu": 1.0,
    "burn_in": 20.0,
}


def test_burgers_larger_steps_are_flagged_as_the_reference_again():
    # Burgers splits every step into CFL-safe sub-steps (about 6 per 0.05 here), so dt = 0.1 and 0.2
    # give the result of dt = 0.05 again.
    ds = _solver_dataset(BURGERS, 0.1, 8)
    assert float(ds.solver_difference.sel(solver_setting="2×dt")) < 1e-3
    assert list(same_as_reference(ds)) == ["2×dt", "4×dt"]
    status = dict((row[0], row[-1]) for row in solver_table(ds)[1])
    assert status["2×dt"].startswith("ok; same result as the reference (differs by ")
    assert "same result as the reference" in status["4×dt"]
    assert status["reference"] == status["n/2"] == "ok"


def test_ks_larger_steps_are_real_settings():
    ds = _solver_dataset(KS, 0.25, 8)
    assert float(ds.solver_difference.sel(solver_setting="4×dt")) > 5e-3  # ETDRK4 at four times the step
    assert "4×dt" not in same_as_reference(ds)


@pytest.mark.parametrize(
    ("difference", "cost", "note"),
    [
        (1e-6, 0.98, "same result as the reference (differs by 1e-06) at 0.98× its cost: the solver splits"),
        (1e-6, 0.5, "same result as the reference (differs by 1e-06) at 0.5× its cost"),
        (1e-2, 1.0, None),
    ],
)
def test_the_sub_step_explanation_needs_the_same_cost(difference, cost, note):
    # Navier-Stokes at twice the step can agree to 1e-6 and halve the cost: the same result, cheaper.
    ds = xr.Dataset(
        {
            "solver_status": ("solver_setting", np.array(["ok", "ok"], dtype=object)),
            "solver_dt": ("solver_setting", [0.025, 0.05]),
            "solver_difference": ("solver_setting", [0.0, difference]),
            "solver_seconds_per_step": ("solver_setting", [1.0, cost]),
        },
        coords={"solver_setting": ["reference", "2×dt"]},
    )
    same = same_as_reference(ds)
    if note is None:
        assert same == {}
    else:
        assert same["2×dt"].startswith(note) and same["2×dt"].endswith("its cost") == (cost < 0.75)
