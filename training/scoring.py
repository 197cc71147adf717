"""Scoring forecasters on the test set: batched autoregressive rollouts collecting every metric of
:mod:`evaluation.registry` (:func:`evaluate_model`), and the wall time per rollout step of the trained models
and the classical solver's settings, timed in turns (:func:`measure_costs`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from evaluation import metrics, registry
from evaluation.baseline import SolverRun
from evaluation.rollout import rollout, rollout_steps
from evaluation.timing import time_interleaved
from training.forecasters import Forecaster

log = logging.getLogger(__name__)


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
