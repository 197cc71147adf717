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

This module is the job (options, the order of the steps); the steps live beside it:
:mod:`training.forecasters` (checkpoints and the rows they give), :mod:`training.testdata` (the test
trajectories), :mod:`training.scoring` (rollouts, metrics and timings) and :mod:`training.metrics_dataset`
(the dataset behind ``metrics.nc``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import xarray as xr
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from data.cli import require_writable
from data.config import SOLVER_TARGETS, build_from_config
from data.timegrid import trajectory_steps
from evaluation.baseline import SolverRun, run_solver
from evaluation.timing import device_description, machine_load
from solvers.errors import ConfigError
from training.checkpoint import (
    CheckpointError,
    EvaluationError,
    check_compatible,
    frame_stride,
)
from training.forecasters import load_models, persistence, trained, untrained
from training.metrics_dataset import build_dataset
from training.scoring import evaluate_model, measure_costs
from training.testdata import load_test_set, origin_of_test_set

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")


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
        **machine_load(),
        "ndim": solver.ndim,
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
