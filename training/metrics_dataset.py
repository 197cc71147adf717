"""The evaluation's results as one labelled ``xarray.Dataset`` (``metrics.nc``): every registry metric with
its bootstrap interval, tails over the test trajectories, spectra, costs, the classical solver's rows and the
test trajectories' PDE parameters (:func:`build_dataset`). The report (:mod:`evaluation.report`) is drawn from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from evaluation import metrics, registry
from evaluation.baseline import SolverRun, difference_from_reference
from evaluation.timing import median_seconds
from solvers.base import Solver
from training.forecasters import Forecaster, Model
from training.scoring import ModelRollouts

STATS = ("mean", "low", "high")


TIME_UNITS = "time units"


TAIL_METRICS = ("fno_rel_l2", "corr_time")
"""The metrics whose tail over the test trajectories ``metrics.nc`` holds (``<name>_tail``): the per-frame error
averaged over the frames up to each lead time (FNO's convention) and the correlation time."""
TAIL_STATS = (*("median" if p == 50 else f"p{p:g}" for p in metrics.TAIL_PERCENTS), "worst")


def _pad(x: Tensor, length: int, dim: int, fill: float = float("nan")) -> np.ndarray:
    """``x`` padded with ``fill`` along ``dim`` to ``length`` (models with longer histories predict fewer
    frames)."""
    missing = length - x.shape[dim]
    if missing > 0:
        shape = list(x.shape)
        shape[dim] = missing
        x = torch.cat([x, x.new_full(shape, fill)], dim=dim)
    return x.numpy()


def _ci(values: Tensor, cfg: DictConfig, metric: registry.Metric, scope: registry.Scope) -> Tensor:
    """``[value, low, high]`` stacked last, bootstrap over trajectories (dim 0); a per-model ``metric`` is
    recomputed from each resample's trajectory mean (at the lead times and thresholds of ``scope``)."""
    boot = cfg.bootstrap
    statistic = partial(metric.of_mean, scope=scope) if metric.kind == registry.PER_MODEL else None
    return torch.stack(
        metrics.bootstrap_ci(values, boot.confidence, boot.num_resamples, cfg.seed, statistic), -1
    )


def _described(metric: registry.Metric) -> dict[str, str]:
    """The registry's description of ``metric``, stored with its variables in ``metrics.nc``."""
    fields = ("label", "kind", "better", "unit", "definition", "convention")
    return {key: getattr(metric, key) for key in fields}


def _metric_variables(
    results: Sequence[ModelRollouts], length: int, dt: Tensor, cfg: DictConfig
) -> dict[str, tuple[Any, ...]]:
    """Every registry metric of every row: ``<name>`` per trajectory (not for per-model metrics) and
    ``<name>_ci`` (value, bootstrap interval), NaN-padded along ``time`` to ``length`` steps; ``dt`` ``[N]``
    is each trajectory's time step."""
    thresholds = tuple(float(t) for t in cfg.thresholds)
    data: dict[str, tuple[Any, ...]] = {}
    for metric in registry.METRICS:
        time = metric.dims.index("time") if "time" in metric.dims else None
        attrs = _described(metric)
        if metric.kind != registry.PER_MODEL:
            stacked = [r.cat(metric.name) for r in results]
            padded = [_pad(v, length, time + 1) if time is not None else v.numpy() for v in stacked]
            data[metric.name] = (("model", "trajectory", *metric.dims), np.stack(padded), attrs)
        ci = []
        for r in results:
            steps = r.cat("spectrum_true").shape[1]  # this row's horizon
            times = dt[:, None] * torch.arange(1, steps + 1, dtype=torch.float64)
            value = _ci(r.cat(metric.name), cfg, metric, registry.Scope(times, thresholds))
            ci.append(_pad(value, length, time) if time is not None else value.numpy())
        data[f"{metric.name}_ci"] = (("model", *metric.dims, "stat"), np.stack(ci), attrs)
    return data


def _tail_variables(
    results: Sequence[ModelRollouts], length: int, trajectory: np.ndarray
) -> dict[str, tuple[Any, ...]]:
    """The tail over the test trajectories of each metric of :data:`TAIL_METRICS` for every row
    (:func:`~evaluation.metrics.tail`): ``<name>_tail`` (median, p90, p99, worst along ``tail``, on the
    metric's bad side) and ``<name>_worst_trajectory`` (the worst trajectory's id, −1 past a row's horizon),
    NaN-padded along ``time`` to ``length`` steps."""
    data: dict[str, tuple[Any, ...]] = {}
    ids = torch.as_tensor(trajectory)
    for name in TAIL_METRICS:
        metric = registry.by_name(name)
        time = metric.dims.index("time") if "time" in metric.dims else None
        stats, worst = [], []
        for r in results:
            values, index = metrics.tail(r.cat(name), metric.better == registry.HIGHER)
            values, index = values.movedim(0, -1), ids[index]
            stats.append(_pad(values, length, time) if time is not None else values.numpy())
            worst.append(_pad(index, length, time, fill=-1) if time is not None else index.numpy())
        attrs = {**_described(metric), "tail": "percentiles and worst value on the bad side (metrics.tail)"}
        data[f"{name}_tail"] = (("model", *metric.dims, "tail"), np.stack(stats), attrs)
        data[f"{name}_worst_trajectory"] = (("model", *metric.dims), np.stack(worst))
    return data


def _parameter_coords(solver: Solver, params: Mapping[str, Tensor]) -> dict[str, tuple[Any, ...]]:
    """``param_<name>`` along ``trajectory``: each test trajectory's value of every PDE parameter, with the
    training distribution the checkpoint's ``pde`` config gives it (``training_law`` uniform, log-uniform
    or fixed on ``[training_low, training_high]``) and the parameter's meaning and units."""
    coords = {}
    for name, spec in solver.params.items():
        meaning, units = solver.param_meanings.get(name, (name, ""))
        law = "fixed" if spec.fixed else "log-uniform" if spec.log else "uniform"
        attrs = {
            "long_name": meaning,
            "units": units,
            "config_key": f"pde.{name}",
            "training_law": law,
            "training_low": spec.low,
            "training_high": spec.high,
        }
        coords[f"param_{name}"] = ("trajectory", params[name].double().numpy(), attrs)
    return coords


def build_dataset(
    models: Sequence[Model],
    forecasters: Sequence[Forecaster],
    results: Sequence[ModelRollouts],
    runs: Sequence[SolverRun],
    truth: Tensor,
    trajectory: Tensor,
    dt: float,
    steps: Tensor,
    cfg: DictConfig,
    attrs: Mapping[str, Any],
    solver: Solver,
    params: Mapping[str, Tensor],
) -> xr.Dataset:
    """All metrics as one labelled dataset (dims model, trajectory, time, wavenumber, threshold, band, …).

    ``models`` are the loaded checkpoints; ``forecasters`` the rows (trained models and the anchors, coordinate
    ``kind`` along ``model``) with their ``results``. ``truth`` is the rollout part of the test trajectories
    the solver runs are compared with (``[N, T_s, C, *S]``, starting after the first model's history).
    ``attrs`` adds to the dataset's attributes (the PDE's domain and channels, the test data, the timing
    device). ``dt`` is the model's (nominal) step, that of the ``time`` coordinate; ``steps`` ``[N]`` each
    trajectory's own, in which its times are measured (they differ with a per-trajectory time scale).
    ``params`` are the test trajectories' PDE parameters (``param_<name>`` coordinates along
    ``trajectory``, with the training distribution of the first checkpoint's ``solver``).
    """
    length = max(r.cat("spectrum_true").shape[1] for r in results)
    times = dt * np.arange(1, length + 1)
    thresholds = [float(t) for t in cfg.thresholds]
    num_wavenumbers = results[0].cat("spectrum_true").shape[-1]
    bands = ["low", "mid", "high"] if cfg.num_bands == 3 else [f"band{i}" for i in range(cfg.num_bands)]
    data: dict[str, tuple[Any, ...]] = _metric_variables(results, length, steps, cfg)
    if any("spread" in r.values for r in results):
        stacked = [
            _pad(r.cat("spread"), length, 1)
            if "spread" in r.values
            else np.full((len(trajectory), length), np.nan)
            for r in results
        ]
        data["spread"] = (("model", "trajectory", "time"), np.stack(stacked))
    data["blowup_time"] = (("model", "trajectory"), np.stack([r.cat("blowup_time").numpy() for r in results]))
    for key in ("spectrum_pred", "spectrum_true"):
        data[key] = (
            ("model", "trajectory", "time", "wavenumber"),
            np.stack([_pad(r.cat(key), length, 1) for r in results]),
        )
    data["spectrum_band_error"] = (
        ("model", "trajectory", "time", "band"),
        np.stack([_pad(r.cat("band_error"), length, 1) for r in results]),
    )
    data["seconds_per_step"] = (
        ("model",),
        np.array([median_seconds(r.seconds) for r in results]),
    )
    data["step_seconds"] = (("model", "repeat"), _repeats([r.seconds for r in results], cfg.timing.repeats))
    data["num_parameters"] = (("model",), np.array([m.num_parameters for m in forecasters]))
    data.update(_tail_variables(results, length, trajectory.numpy()))
    coords: dict[str, Any] = {
        "model": [m.label for m in forecasters],
        "kind": ("model", [m.kind for m in forecasters]),
        "repeat": np.arange(cfg.timing.repeats),
        "trajectory": trajectory.numpy(),
        "time": times,
        "wavenumber": np.arange(num_wavenumbers),
        "threshold": thresholds,
        "band": bands,
        "stat": list(STATS),
        "tail": list(TAIL_STATS),
        **_parameter_coords(solver, params),
        **{dim: labels for metric in registry.METRICS for dim, labels in metric.coords.items()},
    }
    if runs:
        data.update(_solver_variables(runs, truth, len(trajectory), length, steps, attrs["length"], cfg))
        coords["solver_setting"] = [r.label for r in runs]
    attrs = {
        "checkpoints": "\n".join(m.path for m in models),
        "dt": dt,
        "time_history": str([m.time_history for m in forecasters]),
        "evaluation_config": OmegaConf.to_yaml(cfg, resolve=True),
        "model_configs": OmegaConf.to_yaml(OmegaConf.create({m.label: m.config for m in models})),
        "networks": "\n".join(f"{m.label}: {type(m.module.net).__name__}" for m in models),
        "time_note": f"lead time since the last history frame ({TIME_UNITS})",
        "batch_size": cfg.batch_size,
        "timing_warmup": cfg.timing.warmup,
        **attrs,
    }
    return xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords, attrs=attrs)


def _repeats(seconds: Sequence[Sequence[float]], repeats: int) -> np.ndarray:
    """Timed repeats per row ``[rows, repeats]``, NaN for rows that were not timed."""
    return np.array([list(s) if s else [np.nan] * repeats for s in seconds], dtype=float)


def _solver_variables(
    runs: Sequence[SolverRun], truth: Tensor, num: int, length: int, dt: Tensor, side: float, cfg: DictConfig
) -> dict[str, tuple[Any, ...]]:
    """Per solver setting: every registry metric as for the models (``solver_<name>`` per trajectory,
    ``solver_<name>_ci``; NaN where it has no output, for trajectories it did not solve, and for metrics
    over the lead times up to ``t`` when it has not every frame), cost (median and each timed repeat),
    grid, step and the largest relative difference from the reference setting's prediction. ``side`` is
    the domain length."""
    thresholds = [float(t) for t in cfg.thresholds]
    extra = {"time": length, "threshold": len(thresholds)}
    data: dict[str, tuple[Any, ...]] = {}
    for metric in registry.METRICS:
        shape = [extra.get(d, len(metric.coords.get(d, []))) for d in metric.dims]
        values = np.full((len(runs), num, *shape), np.nan)
        ci = np.full((len(runs), *shape, len(STATS)), np.nan)
        for i, run in enumerate(runs):
            if run.pred is None or (metric.cumulative and run.index != list(range(len(run.index)))):
                continue
            index = torch.tensor(run.index)
            pred, true = run.pred.double(), truth[: len(run.pred), index].double()
            times = dt[: len(pred), None] * (index + 1).double()
            scope = registry.Scope(times, tuple(thresholds), (side,) * (pred.ndim - 3))
            value = metric.compute(registry.Rollout(pred, true, scope))
            where = (slice(None), *(run.index if d == "time" else slice(None) for d in metric.dims))
            if metric.kind != registry.PER_MODEL:
                values[i][: len(pred)][where] = value.numpy()
            ci[i][where[1:]] = _ci(value, cfg, metric, scope).numpy()
        dims = ("solver_setting", *metric.dims)
        if metric.kind != registry.PER_MODEL:
            data[f"solver_{metric.name}"] = (("solver_setting", "trajectory", *metric.dims), values)
        data[f"solver_{metric.name}_ci"] = ((*dims, "stat"), ci, _described(metric))
    return data | {
        "solver_seconds_per_step": (("solver_setting",), np.array([r.seconds_per_step for r in runs])),
        "solver_step_seconds": (
            ("solver_setting", "repeat"),
            _repeats([r.seconds for r in runs], cfg.timing.repeats),
        ),
        "solver_difference": (("solver_setting",), np.array(difference_from_reference(runs))),
        "solver_n": (("solver_setting",), np.array([r.n for r in runs])),
        "solver_dt": (("solver_setting",), np.array([r.dt for r in runs])),
        "solver_status": (("solver_setting",), np.array([r.status for r in runs], dtype=object)),
    }
