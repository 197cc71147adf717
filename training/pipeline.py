"""The evaluation behind ``evaluate.py``: checkpoints + test set → rollouts → metrics → ``metrics.nc`` + report.

Every model rolls out autoregressively from the first ``time_history`` frames of each test trajectory
over the whole horizon (batched, EMA weights, no gradients). It gets every metric of the registry
(:mod:`evaluation.registry`: errors and correlation per lead time, correlation times, the published
conventions of FNO, PDEArena, The Well and PDEBench), each with its bootstrap confidence interval over
trajectories; the energy spectrum and its error per wavenumber band and the blow-up time; and its wall
time per rollout step, set against the classical solver's cost-accuracy curve (:mod:`evaluation.baseline`),
whose settings are scored by the same registry. Two anchors are scored the same way: each network with freshly
initialised weights (``untrained``) and persistence (the last input frame repeated). Timings are medians
over repeats after a warm-up, the surrogates and the solver settings in turns (:mod:`evaluation.timing`).
Everything lands in one ``xarray.Dataset`` (``metrics.nc``) that the report (:mod:`evaluation.report`)
is drawn from.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from data.cli import require_writable
from data.config import DATA_TARGETS, SOLVER_TARGETS, build_from_config
from data.datamodule import OfflineDataModule
from data.hdf5 import read_trajectories
from data.layouts import detect, split_path
from data.timegrid import trajectory_steps
from evaluation import metrics, registry
from evaluation.baseline import SolverRun, difference_from_reference, run_solver
from evaluation.rollout import Predictor, rollout, rollout_steps
from evaluation.timing import device_description, median_seconds, time_interleaved
from solvers.base import Solver
from solvers.errors import ConfigError
from training.checkpoint import (
    CheckpointError,
    EvaluationError,
    build_network,
    check_compatible,
    frame_stride,
    load_checkpoint,
    model_grid,
)
from training.module import RefinerModule, SurrogateModule

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
STATS = ("mean", "low", "high")
TIME_UNITS = "time units"
TAIL_METRICS = ("fno_rel_l2", "corr_time")
"""The metrics whose tail over the test trajectories ``metrics.nc`` holds (``<name>_tail``): the per-frame error
averaged over the frames up to each lead time (FNO's convention) and the correlation time."""
TAIL_STATS = (*("median" if p == 50 else f"p{p:g}" for p in metrics.TAIL_PERCENTS), "worst")


@dataclass
class Model:
    """A loaded checkpoint: its module, run config, label and where it came from."""

    label: str
    path: str
    module: SurrogateModule
    config: dict[str, Any]

    @property
    def is_refiner(self) -> bool:
        return isinstance(self.module, RefinerModule)

    @property
    def dt(self) -> float:
        """The model's time step: the output interval of the data it was trained on."""
        return model_grid(self.config).dt_out


@dataclass
class Forecaster:
    """One row of the report: a trained model, its untrained twin, or persistence (``kind``).

    ``predictor(params, dt)`` gives the one-step :data:`~evaluation.rollout.Predictor` for a batch;
    ``samples`` is the number of noisy rollouts (PDE-Refiner ensembles).
    """

    label: str
    kind: str
    time_history: int
    time_future: int
    predictor: Callable[[Mapping[str, Tensor], Tensor], Predictor]
    num_parameters: int = 0
    samples: int = 1


def trained(model: Model, num_noise_samples: int) -> Forecaster:
    net = model.module.net
    samples = num_noise_samples if model.is_refiner else 1
    return Forecaster(
        model.label,
        "trained",
        net.time_history,
        net.time_future,
        model.module.predictor,
        net.num_parameters(),
        samples,
    )


def untrained(model: Model, seed: int) -> Forecaster:
    """``model``'s network freshly initialised (seeded by ``seed``) behind its trained normaliser: the score
    the training started from (one rollout, also for PDE-Refiner: an anchor needs no ensemble spread)."""
    module = copy.deepcopy(model.module)
    torch.manual_seed(seed)
    module.net = build_network(model.config["model"]).to(next(model.module.parameters()).device)
    module.eval()
    twin = Model(f"{model.label} (untrained)", model.path, module, model.config)
    return Forecaster(**{**vars(trained(twin, 1)), "kind": "untrained"})


def persistence(time_history: int) -> Forecaster:
    """The last input frame, repeated: the forecast that needs no model at all."""

    def predictor(params: Mapping[str, Tensor], dt: Tensor) -> Predictor:
        return lambda window: window[:, -1:]

    return Forecaster("persistence", "persistence", time_history, 1, predictor)


@dataclass
class ModelRollouts:
    """One model's metrics over the test set (tensors ``[N, T]`` unless noted) and a few sample rollouts."""

    values: dict[str, list[Tensor]] = field(default_factory=dict)
    samples: Tensor | None = None  # predictions of the first trajectories [P, T, C, *S]
    seconds: list[float] = field(default_factory=list)  # wall time per rollout step, one per timed repeat

    def add(self, **batch: Tensor) -> None:
        for key, value in batch.items():
            self.values.setdefault(key, []).append(value.detach().cpu())

    def cat(self, key: str) -> Tensor:
        return torch.cat(self.values[key])


# ----------------------------------------------------------------------------- configuration
def check_config(cfg: DictConfig) -> list[str]:
    """Validate the evaluation options; returns the checkpoint paths. Raises :class:`EvaluationError`."""
    if OmegaConf.is_missing(cfg, "checkpoints") or not cfg.checkpoints:
        raise EvaluationError(
            "checkpoints is required: give one or more checkpoint files or run directories, e.g. "
            "python evaluate.py 'checkpoints=[outputs/<date>/<time>]'"
        )
    paths = [cfg.checkpoints] if isinstance(cfg.checkpoints, str) else list(cfg.checkpoints)
    if cfg.device not in DEVICES:
        raise EvaluationError(f"device={cfg.device!r} is not allowed; allowed: {', '.join(DEVICES)}")
    if cfg.get("logger") and not str(cfg.logger.get("_target_", "")).endswith("WandbLogger"):
        raise EvaluationError(
            f"logger={cfg.logger.get('_target_')} is not supported here; allowed: none, wandb"
        )
    for key in ("batch_size", "num_noise_samples", "num_bands", "timing.repeats", "timing.steps"):
        value = OmegaConf.select(cfg, key)
        if key == "timing.steps" and value is None:
            continue
        if not isinstance(value, int) or value < 1:
            raise EvaluationError(f"{key}={value!r} must be an int >= 1")
    if not isinstance(cfg.timing.warmup, int) or cfg.timing.warmup < 0:
        raise EvaluationError(f"timing.warmup={cfg.timing.warmup!r} must be an int >= 0")
    if not cfg.thresholds or not all(0 < float(t) < 1 for t in cfg.thresholds):
        raise EvaluationError(
            f"thresholds={list(cfg.thresholds)} must be a non-empty list of numbers in (0, 1)"
        )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("device=cuda but no CUDA device is available; allowed here: cpu, auto")
    return [str(p) for p in paths]


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_models(paths: Sequence[str], trust: bool) -> list[Model]:
    """Load every checkpoint; labels are the model presets, numbered where they repeat."""
    loaded = [(path, *load_checkpoint(path, trust=trust)) for path in paths]
    names = [str(config["model"].get("name", type(module.net).__name__)) for _, module, config in loaded]
    counts, seen = Counter(names), Counter()
    models = []
    for name, (path, module, config) in zip(names, loaded, strict=True):
        seen[name] += 1
        label = f"{name}#{seen[name]}" if counts[name] > 1 else name
        models.append(Model(label, path, module, config))
    first = models[0]
    for model in models[1:]:
        check_compatible(model.config, first.config["pde"], model.path, f"checkpoint {first.path}")
        if abs(model.dt - first.dt) > 1e-9 * first.dt:
            raise CheckpointError(
                f"checkpoint {model.path} steps dt={model.dt:g} but {first.path} steps "
                f"dt={first.dt:g}; evaluate checkpoints of one time step together"
            )
    return models


def load_test_set(cfg: DictConfig, config: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The test trajectories: ``test_path`` (a file in any layout of :mod:`data.layouts`: a foreign one split
    as the checkpoint's own file was when it has that layout, else by the layout's published convention) or
    the set the checkpoint's data config defines."""
    try:
        if cfg.test_path:
            solver = build_from_config(config["pde"], SOLVER_TARGETS, "pde")
            layout = detect(cfg.test_path)
            if layout == "pdestream":
                data = read_trajectories(cfg.test_path, cfg.test_split, solver)
            else:
                trained = config["data"]
                fmt = trained.get("format", "pdestream")
                same = fmt == layout or (
                    fmt == "auto" and _layout_of(split_path(trained["paths"], "train")) == layout
                )
                data = OfflineDataModule(
                    solver, str(cfg.test_path), format=layout, rows=trained.get("rows") if same else None
                ).trajectories(cfg.test_split)
            what = f"test_path={cfg.test_path}"
        else:
            data_config = dict(config["data"])
            if "cache_dir" in data_config:  # this evaluation's cache, not the directory the training run used
                data_config["cache_dir"] = cfg.cache_dir
            datamodule = build_from_config(data_config, DATA_TARGETS, "data")
            data = datamodule.trajectories("test")
            what = f"the test set of {label}'s data config"
    except ConfigError as error:
        raise CheckpointError(f"test set does not fit checkpoint {label}: {error}") from None
    except TypeError as error:
        raise CheckpointError(f"checkpoint {label}: its data config cannot be built ({error})") from None
    limit = cfg.get("num_trajectories")
    if limit:
        data = {**data, "u": data["u"][:limit], "params": {k: v[:limit] for k, v in data["params"].items()}}
    log.info("test set: %s, %d trajectories of %d frames", what, len(data["u"]), data["u"].shape[1])
    return {**data, "source": what}


def _layout_of(path: str) -> str | None:
    """The layout of a checkpoint's training file, or None where it is gone."""
    try:
        return detect(path)
    except ConfigError:
        return None


def origin_of_test_set(cfg: DictConfig, config: Mapping[str, Any]) -> str:
    """Where the test trajectories' PDE parameters come from, as the report states it."""
    if cfg.test_path:
        return (
            f"read from test_path={cfg.test_path}: drawn by whatever made that file, not necessarily from "
            "the training distribution"
        )
    data = config["data"]
    if str(data["_target_"]).endswith("OnlineDataModule"):
        return (
            "drawn by the run's own solver from the training distribution of every parameter (uniform over "
            "its range, uniform in log for a log range), each trajectory from its own seed (seed, split, "
            "index), disjoint from the training stream"
        )
    return f"the test rows of the run's file {split_path(data['paths'], 'test')}: drawn by whatever made it"


# ----------------------------------------------------------------------------- rollouts
def _batch(
    u: Tensor, params: Mapping[str, Tensor], part: slice, dt: Tensor, device: torch.device
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    batch = u[part].to(device)
    cond = {k: v[part].to(device=device, dtype=torch.float32) for k, v in params.items()}
    return batch, cond, dt[part].to(device=device, dtype=torch.float32)


def evaluate_model(
    model: Forecaster,
    u: Tensor,
    params: Mapping[str, Tensor],
    dt: Tensor,
    blowup: float,
    cfg: DictConfig,
    device: torch.device,
    length: float,
) -> ModelRollouts:
    """Roll ``model`` out over every test trajectory ``u`` ``[N, T, C, *S]`` (a periodic domain of side
    ``length``), each with its own time step ``dt`` ``[N]``, and collect every metric of
    :mod:`evaluation.registry` and the diagnostics (blow-up time, energy spectra and their band error, the
    ensemble spread); times are each trajectory's own."""
    t_in, t_out = model.time_history, model.time_future
    steps = rollout_steps(u.shape[1], t_in, t_out)
    horizon = steps * t_out
    lead = torch.arange(1, horizon + 1, dtype=torch.float64)
    ndim = u.ndim - 3
    thresholds, sides = tuple(float(t) for t in cfg.thresholds), (length,) * ndim
    out = ModelRollouts()
    bar = tqdm(total=len(u), desc=model.label, unit="traj", disable=not cfg.progress)
    for first in range(0, len(u), cfg.batch_size):
        part = slice(first, first + cfg.batch_size)
        batch, cond, step_dt = _batch(u, params, part, dt, device)
        times = (dt[part, None] * lead).to(device)
        scope = registry.Scope(times, thresholds, sides)
        predict = model.predictor(cond, step_dt)
        history = batch[:, :t_in]
        runs = []
        for sample in range(model.samples):
            torch.manual_seed(cfg.seed + sample)
            runs.append(rollout(predict, history, steps))
        pred, true = runs[0].double(), batch[:, t_in : t_in + horizon].double()
        scored = registry.Rollout(pred, true, scope)
        out.add(**{metric.name: metric.compute(scored) for metric in registry.METRICS})
        spec_pred, spec_true = metrics.energy_spectrum(pred, ndim), metrics.energy_spectrum(true, ndim)
        out.add(
            blowup_time=metrics.blowup_time(pred, times, blowup),
            spectrum_pred=spec_pred.float(),
            spectrum_true=spec_true.float(),
            band_error=metrics.spectrum_band_error(spec_pred, spec_true, cfg.num_bands),
        )
        if model.samples > 1:
            spread = torch.stack(runs).double().std(0)
            out.add(spread=spread.flatten(2).norm(dim=-1) / true.flatten(2).norm(dim=-1).clamp_min(1e-12))
        if first < cfg.num_sample_plots:
            keep = runs[0][: cfg.num_sample_plots - first].cpu()
            out.samples = keep if out.samples is None else torch.cat([out.samples, keep])
        bar.update(len(batch))
    bar.close()
    return out


def rollout_job(
    model: Forecaster,
    u: Tensor,
    params: Mapping[str, Tensor],
    dt: Tensor,
    batch_size: int,
    frames: int,
    device: torch.device,
) -> tuple[Callable[[], Tensor], int]:
    """A rollout of the first batch over (at least) ``frames`` frames — the timed unit — and its frame count."""
    batch, cond, step_dt = _batch(u, params, slice(0, batch_size), dt, device)
    total = rollout_steps(u.shape[1], model.time_history, model.time_future)
    steps = min(total, -(-frames // model.time_future))
    job = partial(rollout, model.predictor(cond, step_dt), batch[:, : model.time_history], steps)
    return job, steps * model.time_future


def measure_costs(
    models: Sequence[Forecaster],
    results: Sequence[ModelRollouts],
    runs: Sequence[SolverRun],
    u: Tensor,
    params: Mapping[str, Tensor],
    dt: Tensor,
    cfg: DictConfig,
    device: torch.device,
) -> None:
    """Time every trained model's rollout and every solver setting's solve of the first batch over the
    first ``timing.steps`` frames (all if null), in turns (:func:`~evaluation.timing.time_interleaved`);
    fills ``result.seconds`` and ``run.seconds`` with seconds per rollout step."""
    jobs, frames = {}, {}
    length = cfg.timing.steps or u.shape[1]
    for model in models:
        if model.kind == "trained":
            job = rollout_job(model, u, params, dt, cfg.batch_size, length, device)
            jobs[model.label], frames[model.label] = job
    for run in runs:
        if run.job is not None:
            jobs[f"solver {run.label}"], frames[f"solver {run.label}"] = run.job(length)
    log.info("timing %d rollouts and solves, %d repeats each", len(jobs), cfg.timing.repeats)
    seconds = time_interleaved(jobs, device, cfg.timing.repeats, cfg.timing.warmup)
    per_step = {name: [s / frames[name] for s in values] for name, values in seconds.items()}
    for model, result in zip(models, results, strict=True):
        result.seconds = per_step.get(model.label, [])
    for run in runs:
        run.seconds = per_step.get(f"solver {run.label}", [])


# ----------------------------------------------------------------------------- assembling
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


# ----------------------------------------------------------------------------- the whole job
def log_wandb(ds: xr.Dataset, figures: Mapping[str, Path], cfg: DictConfig) -> None:
    """Log the summary table and figures through the configured ``WandbLogger`` (``conf/logger/wandb.yaml``)."""
    import wandb

    run = instantiate(cfg.logger).experiment
    from evaluation.report import safe_name, summary_table

    header, rows = summary_table(ds, list(cfg.horizons))
    run.log({"summary": wandb.Table(columns=header, data=rows)})
    run.log({safe_name(caption): wandb.Image(str(path)) for caption, path in figures.items()})
    wandb.finish()


def evaluate(cfg: DictConfig) -> Path:
    """Run the evaluation configured by ``cfg`` (``conf/evaluate.yaml``); returns the output directory."""
    from evaluation.report import write_report  # matplotlib only when a report is written

    paths = check_config(cfg)
    try:  # before any rollout: the report and the test set must have somewhere to go
        require_writable(cfg.output_dir, "output_dir")
        require_writable(cfg.cache_dir, "cache_dir")
    except ConfigError as error:
        raise EvaluationError(str(error)) from None
    device = device_of(cfg.device)
    models = load_models(paths, bool(cfg.trust_checkpoints))
    first = models[0]
    data = load_test_set(cfg, first.config, first.path)
    dt = first.dt
    stride = frame_stride(dt, data["grid"], first.path)
    u = data["u"][:, ::stride].float()
    params = data["params"]
    for model in models:
        check_compatible(model.config, first.config["pde"], model.path, data["source"])
        if u.shape[1] <= model.module.net.time_history:
            raise CheckpointError(
                f"the test trajectories have {u.shape[1]} frames of dt={dt:g}, too few for {model.path} "
                f"with time_history={model.module.net.time_history}"
            )
    for model in models:
        model.module.to(device)
    forecasters = [trained(m, cfg.num_noise_samples) for m in models]
    if cfg.anchors.untrained:
        forecasters += [untrained(m, cfg.seed) for m in models]
    t_in = first.module.net.time_history
    if cfg.anchors.persistence:
        forecasters.append(persistence(t_in))
    blowup = float(first.config["pde"].get("blowup", 1e6))
    pde = first.config["pde"]
    solver = build_from_config(
        {**pde, **({"burn_in": 0.0} if "burn_in" in pde else {})}, SOLVER_TARGETS, "pde"
    )
    side = solver.length  # the midpoint of a per-trajectory range
    steps = trajectory_steps(dt, params, len(u))  # each trajectory's own time step
    results = [evaluate_model(f, u, params, steps, blowup, cfg, device, side) for f in forecasters]
    truth = u[:, t_in:]
    runs: list[SolverRun] = []
    baseline = cfg.solver_baseline
    if baseline.enabled and solver.can_solve:
        count = baseline.num_trajectories or len(u)
        runs = run_solver(
            first.config["pde"],
            u[:count, t_in - 1].to(device),
            {k: v[:count].to(device=device, dtype=torch.float32) for k, v in params.items()},
            dt,
            truth.shape[1],
            cfg.batch_size,
            list(baseline.coarsen),
            list(baseline.dt_factors),
            progress=lambda label: log.info("classical solver: %s", label),
        )
        for run in runs:
            run.pred = None if run.pred is None else run.pred.cpu()
        truth = truth[:count]
    measure_costs(forecasters, results, runs, u, params, steps, cfg, device)
    for model in models:
        model.module.cpu()
    index = data.get("index", torch.arange(len(u)))
    attrs = {
        "timing_device": device_description(device),
        "length": side,
        "channels": ", ".join(solver.channels),
        "test_data": f"{data['source']}, {len(u)} trajectories of {u.shape[1]} frames",
        "test_draw": origin_of_test_set(cfg, first.config),
    }
    if not solver.can_solve:
        attrs["solver_note"] = (
            f"No classical-solver rows: the checkpoint's pde is {type(solver).__name__} (data no pdestream "
            "solver makes), so there is no solver to set the models against."
        )
    dataset = build_dataset(
        models, forecasters, results, runs, truth, index[: len(u)], dt, steps, cfg, attrs, solver, params
    )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = {
        f.label: (r.samples, u[: len(r.samples), f.time_history :])
        for f, r in zip(forecasters, results, strict=True)
        if f.kind == "trained" and r.samples is not None  # num_sample_plots=0 draws none
    }
    figures = write_report(dataset, samples, out, cfg)
    if cfg.get("logger"):
        log_wandb(dataset, figures, cfg)
    return out
