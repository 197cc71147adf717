"""Builds and runs a training job from a composed Hydra config (the logic behind ``train.py``).

``build(cfg)`` instantiates solver → DataModule → network → LightningModule → Trainer, validating the
configuration before anything trains; ``fit(cfg)`` runs it. Every user mistake found while building
(unknown option, unstable solver, a network that cannot fit the grid, a missing checkpoint) becomes a
:class:`RunConfigError` with one sentence, which ``train.py`` prints without a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from models.module import RefinerModule, SurrogateModule

log = logging.getLogger(__name__)


class RunConfigError(Exception):
    """A run configuration that cannot work; the message is one sentence for the user."""


def _solver_class(root: DictConfig) -> type:
    return hydra.utils.get_class(root.pde._target_)


def register_resolvers() -> None:
    """OmegaConf resolvers used by ``conf/``: PDE facts for model shapes, small arithmetic."""
    resolvers = {
        "pde_ndim": lambda *, _root_: _solver_class(_root_).ndim,
        "pde_channels": lambda *, _root_: len(_solver_class(_root_).channels),
        # the Normalizer's conditioning vector: every PDE parameter, then the time step
        "pde_cond_dim": lambda *, _root_: len(hydra.utils.instantiate(_root_.pde).params) + 1,
        "mul": lambda a, b: a * b,
        "add": lambda a, b: a + b,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def _cause(error: BaseException) -> BaseException:
    """The user-level error inside Hydra's instantiation wrappers."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except (InstantiationException, ValueError, TypeError) as error:
        cause = _cause(error)
        raise RunConfigError(f"{what}: {cause}") from cause


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The run's configuration as plain, resolved containers (without Hydra's own section)."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path``, or with ``ckpt_path=auto`` the run directory's
    ``checkpoints/last.ckpt`` when it exists (a requeued SLURM job continues where it stopped)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "auto":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise RunConfigError(
            f"ckpt_path={ckpt_path}: no such checkpoint file (give a .ckpt file, auto or null)"
        )
    return ckpt_path


@dataclass
class Run:
    """Everything a training run needs, built and validated."""

    trainer: pl.Trainer
    module: SurrogateModule
    datamodule: pl.LightningDataModule
    ckpt_path: str | None


def build(cfg: DictConfig) -> Run:
    """Instantiate the whole run; raises :class:`RunConfigError` for bad configuration."""
    register_resolvers()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = resume_path(cfg)
    datamodule = _instantiate(cfg.data, "data")
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except ValueError as error:
        raise RunConfigError(f"data: {error}") from error
    net = _instantiate(cfg.model, "model")
    module_cls = RefinerModule if hasattr(net, "loss") else SurrogateModule
    module = module_cls(
        net=net,
        normalizer=datamodule.normalizer,
        optimizer=_instantiate(cfg.optimizer, "optimizer"),
        scheduler=_instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        config=resolved(cfg),
        **cfg.module,
    )
    _check_network_fits(module, datamodule)
    try:
        module.configure_optimizers()  # builds (and discards) them, so bad settings fail now
    except (ValueError, TypeError) as error:
        raise RunConfigError(f"optimizer/scheduler: {error}") from error
    if cfg.get("compile"):
        net.compile()
    callbacks = [_instantiate(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    logger = _instantiate(cfg.logger, "logger") if cfg.get("logger") else False
    trainer = _instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=logger)
    return Run(trainer, module, datamodule, ckpt_path)


def _check_network_fits(module: SurrogateModule, datamodule: pl.LightningDataModule) -> None:
    """One forward pass on a real sample, so a network that cannot fit the grid fails before training."""
    val = datamodule.trajectories("val")
    x = val["u"][:1, : module.net.time_history]
    params = {k: v[:1] for k, v in val["params"].items()}
    dt = (val["t"][1:2] - val["t"][0:1]).to(x.dtype)
    try:
        with torch.no_grad():
            module(x, params, dt)
    except (ValueError, RuntimeError) as error:
        raise RunConfigError(f"model: {error}") from error


def fit(cfg: DictConfig) -> dict[str, float]:
    """Train as configured; returns the final logged metrics (plus the untrained validation score)."""
    run = build(cfg)
    results: dict[str, float] = {}
    if run.ckpt_path is None and cfg.get("validate_untrained", True):
        untrained = run.trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
        results["untrained/corr_time"] = float(untrained[0]["val/corr_time"])
        log.info("untrained model: validation correlation time %.3f", results["untrained/corr_time"])
    try:
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
    finally:
        if any(isinstance(logger, WandbLogger) for logger in run.trainer.loggers):
            import wandb

            wandb.finish()  # close the run, so that the next job of a multirun starts its own
    results.update({k: float(v) for k, v in run.trainer.callback_metrics.items() if v.numel() == 1})
    checkpoint = run.trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        log.info(
            "best checkpoint: %s (val/corr_time %.3f)",
            checkpoint.best_model_path,
            checkpoint.best_model_score,
        )
    return results
