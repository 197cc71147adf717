"""Builds and runs a training job from a composed Hydra config (the logic behind ``train.py``).

``build(cfg)`` instantiates solver → DataModule → network → LightningModule → Trainer, validating the
configuration before anything trains; ``fit(cfg)`` runs it. Every user mistake found while building
(unknown option, unstable solver, a network that cannot fit the grid, a missing checkpoint) becomes a
:class:`RunConfigError` with one sentence, which ``train.py`` prints without a traceback.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from models.callbacks import ThreadBudget
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


class _DropBanners(logging.Filter):
    """Drops Lightning's start-up banners: the litlogger tip and the accelerator availability lines."""

    BANNERS = ("💡 Tip", "GPU available", "TPU available", "HPU available")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.BANNERS)


def quiet_logging() -> None:
    """Keep a run's log to what matters: no Lightning banners, no known harmless warnings, and below
    warnings only rank 0 speaks (every DDP rank runs the same code and would repeat each line)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropBanners) for f in logger.filters):
            logger.addFilter(_DropBanners())
    # Lightning 2.6 calling a torch pytree API that torch 2.13 deprecates: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if rank_zero_only.rank != 0:
        logging.getLogger().setLevel(logging.WARNING)


FAST_DEV_DATA = {
    "batch_size": 4,
    "solver_batch": 4,
    "stats_trajectories": 2,
    "num_val_trajectories": 2,
    "num_test_trajectories": 2,
}
"""``trainer.fast_dev_run``: upper bounds on the data settings, so that a smoke run of any preset takes
seconds (one training batch, one validation batch of short rollouts)."""


def fast_dev_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` itself, or for ``trainer.fast_dev_run`` a copy with the data shrunk to smoke-test size:
    :data:`FAST_DEV_DATA`, rollouts of ``window + 4`` frames, the replay buffer serving after one batch."""
    if not cfg.get("trainer", {}).get("fast_dev_run") or "data" not in cfg:
        return cfg
    cfg = copy.deepcopy(cfg)
    data = cfg.data
    with open_dict(data):
        for key, most in FAST_DEV_DATA.items():
            if key in data:
                data[key] = min(int(data[key]), most)
        if "rollout_steps" in data:
            data.rollout_steps = min(int(data.rollout_steps), data.time_history + data.time_future + 4)
        if data.get("buffer") is not None:
            data.buffer.watermark = data.batch_size
    log.info(
        "fast_dev_run: one training batch of %d samples, one validation batch, no untrained validation",
        data.batch_size,
    )
    return cfg


def build(cfg: DictConfig) -> Run:
    """Instantiate the whole run; raises :class:`RunConfigError` for bad configuration."""
    register_resolvers()
    quiet_logging()
    cfg = fast_dev_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = resume_path(cfg)
    budget = thread_budget(cfg)  # before the solvers generate validation and statistics data
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
    callbacks.append(budget)
    logger = _instantiate(cfg.logger, "logger") if cfg.get("logger") else False
    trainer = _instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=logger)
    return Run(trainer, module, datamodule, ckpt_path)


def thread_budget(cfg: DictConfig) -> ThreadBudget:
    """The run's intra-op thread budget from ``threads`` (``auto`` or a count), applied now.

    ``auto`` shares the CPUs available to the process among the processes on them
    (:mod:`solvers.threads`); an ``OMP_NUM_THREADS`` in the environment is an explicit count and wins.
    """
    threads = cfg.get("threads", "auto")
    if threads == "auto" and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise RunConfigError(f"threads={threads!r} is not allowed; give auto or an int >= 1")
    data = cfg.get("data") or {}
    workers = max(int(data.get("num_workers") or 0), 1) if data.get("generation") == "cpu" else 0
    return ThreadBudget(workers, None if threads == "auto" else threads)


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
    params = sum(p.numel() for p in run.module.net.parameters())
    log.info("model: %s, %s parameters", type(run.module.net).__name__, f"{params:,}")
    if run.ckpt_path is None and cfg.get("validate_untrained", True) and not run.trainer.fast_dev_run:
        log.info("validating the untrained model")
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
        score = checkpoint.best_model_score  # None when a resumed run had nothing left to train
        shown = "" if score is None else f" (val/corr_time {float(score):.3f})"
        log.info("best checkpoint: %s%s", checkpoint.best_model_path, shown)
    elif run.ckpt_path is not None and run.trainer.global_step >= run.trainer.max_steps > 0:
        log.info("nothing to train: %s is already at max_steps=%d", run.ckpt_path, run.trainer.max_steps)
    return results
