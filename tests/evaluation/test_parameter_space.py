"""The error over the PDE parameters and its tail over test trajectories: ``param_<name>`` coordinates,
``<metric>_tail`` variables, the curve (1D) / map (2D) figure and the tail tables."""

import math

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.collections import QuadMesh

from data.config import DATA_TARGETS, build_from_config
from evaluation import metrics
from evaluation.report.parameter_space import figure_parameter_space, tail_tables, varying_parameters
from solvers import KuramotoSivashinsky, NavierStokes2D
from tests.evaluation.conftest import EVAL_CACHE, eval_config, train_tiny
from training.checkpoint import load_checkpoint
from training.metrics_dataset import _parameter_coords, _tail_variables
from training.pipeline import evaluate
from training.scoring import ModelRollouts

PERCENTS = [50, 90, 99]


# ----------------------------------------------------------------------------- the tail
def test_tail_of_an_error_is_numpys_percentiles_and_maximum():
    values = torch.rand(37, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats, worst = metrics.tail(values)
    expected = np.percentile(values.numpy(), PERCENTS, axis=0)
    assert np.allclose(stats[:3].numpy(), expected, rtol=1e-12)
    assert np.array_equal(stats[3].numpy(), values.numpy().max(0))
    assert np.array_equal(worst.numpy(), values.numpy().argmax(0))


def test_tail_of_a_higher_is_better_score_is_on_its_low_side():
    values = torch.rand(23, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    stats, worst = metrics.tail(values, higher_is_better=True)
    expected = np.percentile(values.numpy(), [50, 10, 1], axis=0)  # p90: what 90 % do at least as well as
    assert np.allclose(stats[:3].numpy(), expected, rtol=1e-12)
    assert np.array_equal(stats[3].numpy(), values.numpy().min(0))
    assert np.array_equal(worst.numpy(), values.numpy().argmin(0))


def test_a_blown_up_trajectory_is_the_worst_not_dropped():
    values = torch.arange(1.0, 11.0, dtype=torch.float64)
    values[6] = math.nan
    stats, worst = metrics.tail(values)
    assert stats[0].item() == pytest.approx(5.5)  # between the 5th and 6th of 1 … 6, 8, 9, 10, inf
    assert math.isinf(stats[1].item())  # p90 lies between 10 and the blown-up trajectory (rank 8.1 of 9)
    assert math.isinf(stats[2].item()) and math.isinf(stats[3].item()) and worst.item() == 6
    high, index = metrics.tail(-values, higher_is_better=True)
    assert math.isinf(high[3].item()) and high[3].item() < 0 and index.item() == 6


# ----------------------------------------------------------------------------- synthetic datasets
def _dataset(
    solver, params: dict[str, torch.Tensor], error: torch.Tensor, corr_time: torch.Tensor
) -> xr.Dataset:
    """A metrics dataset of one trained model and persistence (twice its error) over ``params``, built
    with the pipeline's own coordinate and tail code."""
    count, steps = error.shape
    rows = [ModelRollouts(), ModelRollouts()]
    rows[0].add(fno_rel_l2=error, corr_time=corr_time)
    rows[1].add(fno_rel_l2=2 * error, corr_time=0.5 * corr_time)
    trajectory = np.arange(100, 100 + count)
    data = _tail_variables(rows, steps, trajectory)
    data["fno_rel_l2"] = (
        ("model", "trajectory", "time"),
        np.stack([r.cat("fno_rel_l2").numpy() for r in rows]),
    )
    data["corr_time"] = (
        ("model", "trajectory", "threshold"),
        np.stack([r.cat("corr_time").numpy() for r in rows]),
    )
    coords = {
        "model": ["net", "persistence"],
        "kind": ("model", ["trained", "persistence"]),
        "trajectory": trajectory,
        "time": 0.5 * np.arange(1, steps + 1),
        "threshold": [0.8],
        "tail": ["median", "p90", "p99", "worst"],
        **_parameter_coords(solver, params),
    }
    attrs = {"test_draw": "drawn by the run's own solver from the training distribution"}
    return xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords, attrs=attrs)


@pytest.fixture(scope="module")
def ks_dataset() -> xr.Dataset:
    solver = KuramotoSivashinsky(n=32, length=64.0, dt=0.25, nu=[0.5, 1.5])
    g = torch.Generator().manual_seed(2)
    params = solver.sample_params(40, g)
    nu = params["nu"]
    error = (
        (nu**2)[:, None]
        * torch.linspace(0.1, 1.0, 6, dtype=torch.float64)
        * (1 + 0.1 * torch.rand(40, 6, generator=g, dtype=torch.float64))
    )
    return _dataset(solver, params, error, (10 / nu)[:, None])


@pytest.fixture(scope="module")
def ns_dataset() -> xr.Dataset:
    solver = NavierStokes2D(n=16, length=1.0, dt=0.025, nu=[1e-4, 1e-3, "log"], forcing_amplitude=[0.05, 0.2])
    params = solver.sample_params(60, torch.Generator().manual_seed(3))
    error = (params["nu"] * 1e3 + params["forcing_amplitude"])[:, None].expand(60, 4).clone()
    return _dataset(solver, params, error, (5 - params["forcing_amplitude"])[:, None])


def test_parameter_coordinates_carry_the_training_distribution(ns_dataset):
    ds = ns_dataset
    assert varying_parameters(ds) == ["nu", "forcing_amplitude"]  # drag is fixed at 0
    nu = ds.param_nu.attrs
    assert (nu["training_law"], nu["training_low"], nu["training_high"]) == ("log-uniform", 1e-4, 1e-3)
    assert nu["config_key"] == "pde.nu" and nu["units"] == "length units²/time unit"
    assert ds.param_forcing_amplitude.attrs["training_law"] == "uniform"
    assert ds.param_drag.attrs["training_law"] == "fixed" and (ds.param_drag == 0).all()


def test_curve_over_a_1d_parameter_space(ks_dataset):
    ds = ks_dataset
    fig = figure_parameter_space(ds, [1, 6])
    error, late, corr = fig.axes[:3]  # t = 0.5, t = 3, correlation time
    assert error.get_xlabel() == "hyper-viscosity ν (coefficient of u_xxxx)\npde.nu (length units²)"
    assert error.get_xscale() == "linear" and error.get_yscale() == "log" and corr.get_yscale() == "linear"
    assert late.get_ylabel() == "FNO rel. L2 (frames ≤ t),\nt = 3 time units"
    # the binned mean of the trained model, by hand: 6 bins (round(sqrt(40))) over the test values of nu
    nu, y = ds.param_nu.values, ds.fno_rel_l2.sel(model="net").isel(time=5).values
    edges = np.linspace(nu.min(), nu.max(), 7)
    which = np.minimum(np.digitize(nu, edges) - 1, 5)
    expected = [y[which == b].mean() for b in range(6)]
    line = next(line for line in late.get_lines() if line.get_label() == "net")
    assert np.allclose(line.get_ydata(), expected)
    assert np.allclose(line.get_xdata(), 0.5 * (edges[:-1] + edges[1:]))
    span = next(p for p in late.patches if p.get_label().startswith("training: uniform on [0.5, 1.5]"))
    assert np.allclose(span.get_x(), 0.5) and np.allclose(span.get_width(), 1.0)
    plt.close(fig)


def test_map_over_a_2d_parameter_space(ns_dataset):
    ds = ns_dataset
    fig = figure_parameter_space(ds, [4])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"  # log-uniform ν, uniform A
    assert ax.get_xlabel() == "kinematic viscosity ν\npde.nu (length units²/time unit)"
    assert ax.get_ylabel() == "forcing amplitude A (vorticity source)\npde.forcing_amplitude (1/time units²)"
    assert ax.xaxis.get_major_formatter()(5e-4, 0) == "0.0005"  # plain numbers on the log axis
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    # binned means by hand: 4 × 4 cells (round(sqrt(60 / 3))), log-spaced in ν
    nu, amp = ds.param_nu.values, ds.param_forcing_amplitude.values
    x_edges = np.geomspace(nu.min(), nu.max(), 5)
    y_edges = np.linspace(amp.min(), amp.max(), 5)
    values = ds.fno_rel_l2.sel(model="net").isel(time=3).values
    total, _, _ = np.histogram2d(nu, amp, [x_edges, y_edges], weights=values)
    count, _, _ = np.histogram2d(nu, amp, [x_edges, y_edges])
    with np.errstate(invalid="ignore"):
        expected = (total / count).T
    shown = np.ma.filled(mesh.get_array(), np.nan).reshape(4, 4)
    assert np.allclose(shown, expected, equal_nan=True)
    assert len(fig.axes) == 2 * 2  # error and correlation time, each with its colour bar
    plt.close(fig)


def test_tail_table_is_numpys_percentiles_with_the_worst_trajectorys_parameters(ks_dataset):
    ds = ks_dataset
    title, (header, rows) = tail_tables(ds, [6])[0]
    assert title == "FNO rel. L2 (frames ≤ t) at t = 3 time units (6 steps)"
    assert header == ["row", "mean", "median", "p90", "p99", "worst", "worst trajectory (parameters)"]
    y = ds.fno_rel_l2.sel(model="net").isel(time=5).values
    shown = [float(c) for c in rows[0][2:6]]
    assert np.allclose(shown, [*np.percentile(y, PERCENTS), y.max()], rtol=5e-3)  # 3 significant digits
    worst = int(np.argmax(y))
    assert rows[0][6] == f"{100 + worst} (nu = {ds.param_nu.values[worst]:.4g})"
    corr_title, (_, corr_rows) = tail_tables(ds, [6])[1]
    assert corr_title == "corr. time (mean of per-trajectory) @0.8 (time units)"
    z = ds.corr_time.sel(model="net", threshold=0.8).values
    assert float(corr_rows[0][5]) == pytest.approx(z.min(), rel=5e-3)  # the worst is the shortest
    assert float(corr_rows[0][4]) == pytest.approx(np.percentile(z, 1), rel=5e-3)


def test_a_blown_up_trajectory_is_the_worst_in_the_tail_table():
    solver = KuramotoSivashinsky(n=32, length=64.0, dt=0.25, nu=[0.5, 1.5])
    params = solver.sample_params(10, torch.Generator().manual_seed(4))
    error = torch.linspace(0.1, 1.0, 10, dtype=torch.float64)[:, None].repeat(1, 2)
    error[3, 1] = math.nan  # trajectory 103 blew up before the second step
    ds = _dataset(solver, params, error, torch.ones(10, 1))
    _, (_, rows) = tail_tables(ds, [2])[0]
    assert rows[0][5:] == ["inf (blow-up)", f"103 (nu = {float(params['nu'][3]):.4g})"]
    assert rows[0][2] == "0.65"  # median of 0.1, 0.2, 0.3, 0.5, …, 1, inf: between 0.6 and 0.7


# ----------------------------------------------------------------------------- end to end, KS with ν ∈ [0.5, 1.5]
@pytest.fixture(scope="module")
def conditional_report(tmp_path_factory, cache_dir):
    run = train_tiny(
        tmp_path_factory.mktemp("ks_nu"),
        cache_dir,
        ["model=fno-small", "model.modes=4", "pde.nu=[0.5,1.5]", "data.num_test_trajectories=8"],
    )
    out = tmp_path_factory.mktemp("report_nu")
    cfg = eval_config(
        [f"checkpoints=[{run}]", f"paths.output_dir={out}", "solver_baseline.enabled=false", "timing.repeats=1",
         "timing.steps=2", "horizons=[1,4]"]
    )  # fmt: skip
    evaluate(cfg)
    return run, out


def test_metrics_hold_the_exact_parameters_of_the_hdf5_test_set(conditional_report):
    run, out = conditional_report
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    _, config = load_checkpoint(run)
    data = build_from_config({**config["data"], "cache_dir": str(EVAL_CACHE)}, DATA_TARGETS, "data")
    with h5py.File(data.cache_path, "r") as file:
        nu, index = file["test"]["nu"][:], file["test"]["trajectory"][:]
    assert np.array_equal(ds.trajectory.values, index)
    assert np.array_equal(ds.param_nu.values, nu) and ds.param_nu.dtype == np.float64
    assert np.ptp(nu) > 0 and ((nu >= 0.5) & (nu <= 1.5)).all()
    assert ds.param_nu.attrs["training_law"] == "uniform"
    assert (ds.param_nu.attrs["training_low"], ds.param_nu.attrs["training_high"]) == (0.5, 1.5)
    # the tail variables are numpy's percentiles of the per-trajectory values
    y = ds.fno_rel_l2.sel(model="fno-small").values
    tail = ds.fno_rel_l2_tail.sel(model="fno-small")
    assert np.allclose(tail.sel(tail=["median", "p90", "p99"]).values.T, np.percentile(y, PERCENTS, axis=0))
    assert np.array_equal(ds.fno_rel_l2_worst_trajectory.sel(model="fno-small"), index[y.argmax(0)])


def test_report_shows_the_parameter_figure_and_the_tail(conditional_report):
    _, out = conditional_report
    assert (out / "parameter_space.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    tails = text[text.index("## Tail over the test trajectories") : text.index("## Figures")]
    assert "### FNO rel. L2 (frames ≤ t) at t = 1 time unit (4 steps)" in tails
    assert "| fno-small" in tails and "| persistence | " in tails  # fno-small may carry an anchor flag
    caption = text[text.index("### Error over the PDE parameters") :]
    assert "drawn by the run's own solver from the training distribution" in caption
    assert (
        "uniform on [0.5, 1.5]" in caption
        and "8 of 8 test trajectories lie inside the training range" in caption
    )


def test_navier_stokes_with_two_varying_parameters_gets_a_map(tmp_path, cache_dir):
    overrides = ["pde=navier_stokes", "pde.nu=[5e-4,2e-3,log]", "pde.forcing_amplitude=[0.05,0.2]"]
    run = train_tiny(tmp_path / "run", cache_dir, ["model=fno-small", "model.modes=4", *overrides])
    out = tmp_path / "report"
    cfg = eval_config(
        [f"checkpoints=[{run}]", f"paths.output_dir={out}", "solver_baseline.enabled=false",
         "anchors.untrained=false", "timing.repeats=1", "timing.steps=1", "horizons=[2]"]
    )  # fmt: skip
    evaluate(cfg)
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert varying_parameters(ds) == ["nu", "forcing_amplitude"] and (ds.param_drag == 0).all()
    assert ds.param_nu.attrs["training_law"] == "log-uniform"
    assert (out / "parameter_space.png").stat().st_size > 0
    fig = figure_parameter_space(ds, [2])  # redrawn from metrics.nc alone
    assert any(isinstance(c, QuadMesh) for c in fig.axes[0].collections)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "linear"
    plt.close(fig)
    text = (out / "report.md").read_text()
    assert "binned mean over the two varying parameters" in text
