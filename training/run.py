"""Builds and runs a training job from a composed Hydra config (the logic behind ``train.py``).

``build(cfg)`` instantiates solver → DataModule → network → LightningModule → Trainer, validating the
configuration before anything trains; ``fit(cfg)`` runs it. Every user mistake found while building
(unknown option, unstable solver, a network that cannot fit the grid, a missing, corrupt or foreign
checkpoint, an unwritable run or cache directory) or while training (a stream that diverges, on any
DDP rank) becomes a :class:`RunConfigError` with one sentence, which ``train.py`` prints without a
traceback; a stop signal ends the run with :class:`~training.stopping.Stopped` after a checkpoint.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from data.cli import require_writable
from data.normalize import CondLayout
from models import network_class
from solvers.errors import ConfigError, check_int
from training.callbacks import BestCheckpoint, BlowUpCheck, ThreadBudget
from training.checkpoint import AtomicCheckpointIO, CheckpointWriteError, EvaluationError, read_checkpoint
from training.module import SurrogateModule
from training.plan import about, announce, measure
from training.presets import module_class, network_config
from training.rundir import Claim, ResumeError, check_resume, claim, resume_source
from training.stopping import FiniteGuard, NonFinite, StopGuard, Stopped
from training.sweep import write_results

log = logging.getLogger(__name__)


class RunConfigError(Exception):
    """A run configuration that cannot work; the message is one sentence for the user."""


def _solver_class(root: DictConfig) -> type:
    return hydra.utils.get_class(root.pde._target_)


def register_resolvers() -> None:
    """OmegaConf resolvers used by ``conf/``: PDE facts for model shapes, small arithmetic."""
    resolvers = {
        "pde_ndim": lambda *, _root_: _solver_class(_root_).fields_of(_root_.pde)[0],
        "pde_channels": lambda *, _root_: len(_solver_class(_root_).fields_of(_root_.pde)[1]),
        # the conditioning vector: the PDE parameters (named by the solver class and its config), then dt
        "pde_cond_dim": lambda *, _root_: len(
            CondLayout.of_names(_solver_class(_root_).param_names(_root_.pde))
        ),
        # trainer sizes that follow the accelerator: conf/trainer/ddp.yaml (accelerator auto) on a CPU machine
        "by_accelerator": lambda accelerator, cpu, gpu: cpu if on_cpu(accelerator) else gpu,
        "mul": lambda a, b: a * b,
        "add": lambda a, b: a + b,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def on_cpu(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` trains on the CPU here (``auto``: when no GPU is visible)."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


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


def last_checkpoint(cfg: DictConfig) -> Path:
    """The run directory's ``checkpoints/last.ckpt``: rewritten at every validation and on a stop signal."""
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@dataclass
class Run:
    """Everything a training run needs, built and validated."""

    trainer: pl.Trainer
    module: SurrogateModule
    datamodule: pl.LightningDataModule
    ckpt_path: str | None
    run_dir: Claim
    start_step: int = 0  # the optimizer steps a resumed checkpoint has trained


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
    # a resume writes into its own checkpoint directory: training/rundir.py decides what may be overwritten
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # a resume from another directory: the best score travels in BestCheckpoint's own state
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
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
    :data:`FAST_DEV_DATA`, trajectories of ``window + 1`` frames (two windows, two rollout steps), the replay
    buffer serving after one batch."""
    if not cfg.get("trainer", {}).get("fast_dev_run") or "data" not in cfg:
        return cfg
    cfg = copy.deepcopy(cfg)
    data = cfg.data
    with open_dict(data):
        for key, most in FAST_DEV_DATA.items():
            if key in data:
                data[key] = min(int(data[key]), most)
        window = data.time_history + data.target_frames
        if "frames" in data:  # a window (its frames frame_stride apart) and one model step more
            data.frames = min(int(data.frames), window * int(data.get("frame_stride") or 1) + 1)
        if data.get("rollout_frames") is not None:
            data.rollout_frames = min(int(data.rollout_frames), window + 1)
        if data.get("buffer") is not None:
            data.buffer.watermark = data.batch_size
    log.info(
        "fast_dev_run: one training batch of %d samples, one validation batch, no untrained validation",
        data.batch_size,
    )
    return cfg


def _check_trainer(trainer: Mapping[str, Any], online: bool) -> None:
    """The Trainer settings a run relies on, checked before anything is built (an online stream is
    infinite: it needs ``val_check_interval`` in steps and no epochs)."""
    if trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RunConfigError(
            f"trainer.accelerator={trainer.get('accelerator')} but this machine has no GPU that torch can use; "
            "use trainer=cpu here (or trainer=ddp, which trains on the CPU where there is no GPU)"
        )
    for key in ("max_steps", "log_every_n_steps", "num_nodes"):
        try:
            check_int(f"trainer.{key}", trainer.get(key), 1)
        except ConfigError as error:
            raise RunConfigError(str(error)) from None
    value = trainer.get("val_check_interval")
    steps = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    fraction = isinstance(value, float) and 0 < value <= 1 and not online
    if not (steps or fraction):
        allowed = (
            "an int >= 1 (optimizer steps)" if online else "an int >= 1 or a fraction of an epoch in (0, 1]"
        )
        raise RunConfigError(f"trainer.val_check_interval={value!r} is not allowed: give {allowed}")
    if online and trainer.get("check_val_every_n_epoch") is not None:
        raise RunConfigError(
            f"trainer.check_val_every_n_epoch={trainer.get('check_val_every_n_epoch')!r} is not allowed with "
            "data=online: the stream has no epochs, keep it null"
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float) or clip < 0):
        raise RunConfigError(f"trainer.gradient_clip_val={clip!r} is not allowed: give a number >= 0 or null")


def _resume_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint to resume from, read at start-up: it must be a readable, intact training checkpoint
    (``weights_only=True``), not truncated, altered, garbage or an evaluation-only file."""
    try:
        checkpoint = read_checkpoint(Path(path))
    except EvaluationError as error:
        raise RunConfigError(f"ckpt_path={path}: {error}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    config = (
        (checkpoint.get("hyper_parameters") or {}).get("config") if isinstance(checkpoint, dict) else None
    )
    if not isinstance(state, dict) or "loops" not in checkpoint or not isinstance(config, Mapping):
        raise RunConfigError(
            f"ckpt_path={path} is not a training checkpoint of train.py (no weights, configuration or loop state)"
        )
    return checkpoint


def _check_resume_fits(path: str, state: Mapping[str, Any], module: SurrogateModule) -> None:
    """The checkpoint's weights must have this run's tensor names and shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise RunConfigError(
            f"ckpt_path={path} holds weights of another model or grid ({len(differ)} tensors differ, e.g. "
            f"{differ[0]}); resume with the configuration it was trained with"
        )


def build(cfg: DictConfig) -> Run:
    """Instantiate the whole run; raises :class:`RunConfigError` for bad configuration."""
    register_resolvers()
    quiet_logging()
    cfg = fast_dev_config(cfg)
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise RunConfigError(f"seed={seed!r} is not allowed; give an int >= 0 or null")
    if seed is not None:
        pl.seed_everything(seed, workers=True, verbose=False)
    _check_trainer(cfg.trainer, online=str(cfg.data.get("_target_", "")).endswith("OnlineDataModule"))
    try:
        SurrogateModule.check_options(**cfg.module)
    except ValueError as error:
        raise RunConfigError(str(error)) from None
    try:
        module_cls = module_class(cfg.model, network_class(cfg.model.get("_target_"), "model._target_"))
    except ValueError as error:
        raise RunConfigError(str(error)) from None
    try:
        require_writable(cfg.paths.output_dir, "paths.output_dir")
        if cfg.data.get("cache_dir") is not None:
            require_writable(cfg.data.cache_dir, "data.cache_dir")
        ckpt_path = resume_source(cfg.get("ckpt_path"), cfg.paths.output_dir)
    except (ConfigError, ResumeError) as error:
        raise RunConfigError(str(error)) from None
    resumed = _resume_checkpoint(ckpt_path) if ckpt_path is not None else None
    if resumed is not None:
        stored = {k: v for k, v in resumed["hyper_parameters"]["config"].items() if k != "time_grid"}
        try:
            check_resume(ckpt_path, stored, resolved(cfg))
        except ResumeError as error:
            raise RunConfigError(str(error)) from None
        _nothing_left(ckpt_path, resumed, cfg.trainer)
    try:
        run_dir = claim(cfg.paths.output_dir, ckpt_path, rank_zero_only.rank)
    except ResumeError as error:
        raise RunConfigError(str(error)) from None
    try:
        return _build(cfg, module_cls, ckpt_path, resumed, run_dir)
    except BaseException:
        run_dir.release()
        raise


def _nothing_left(path: str, checkpoint: Mapping[str, Any], trainer: Mapping[str, Any]) -> None:
    """Say so when the checkpoint has trained every step the run asks for (the resume then only validates)."""
    done = int(checkpoint.get("global_step", 0))
    if done >= int(trainer.get("max_steps") or 0) > 0:
        log.warning(
            "ckpt_path=%s has trained %d steps, trainer.max_steps=%s: nothing left to train (raise "
            "trainer.max_steps to continue)",
            path,
            done,
            trainer.get("max_steps"),
        )


def _build(
    cfg: DictConfig,
    module_cls: type[SurrogateModule],
    ckpt_path: str | None,
    resumed: Mapping[str, Any] | None,
    run_dir: Claim,
) -> Run:
    recorded = (resumed or {}).get("callbacks", {}).get(ThreadBudget.__qualname__, {}).get("threads")
    budget = thread_budget(cfg, recorded)  # before the solvers generate validation and statistics data
    datamodule = _instantiate(cfg.data, "data")
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except ValueError as error:
        raise RunConfigError(f"data: {error}") from error
    net = _instantiate(network_config(OmegaConf.to_container(cfg.model, resolve=True)), "model")
    optimizer = _instantiate(cfg.optimizer, "optimizer")
    scheduler = _instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    try:
        module = module_cls(
            net=net,
            normalizer=datamodule.normalizer,
            optimizer=optimizer,
            scheduler=scheduler,
            config={**resolved(cfg), "time_grid": datamodule.time_grid.to_dict()},
            **cfg.module,
        )
    except (ValueError, TypeError) as error:
        raise RunConfigError(str(error)) from None
    _check_network_fits(module, datamodule)
    if ckpt_path is not None:
        _check_resume_fits(ckpt_path, resumed["state_dict"], module)
    try:
        module.configure_optimizers()  # builds (and discards) them, so bad settings fail now
    except (ValueError, TypeError) as error:
        raise RunConfigError(f"optimizer/scheduler: {error}") from error
    if cfg.get("compile"):
        net.compile()
    callbacks = [_instantiate(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += [budget, FiniteGuard(), StopGuard(str(last_checkpoint(cfg)))]
    logger = _instantiate(cfg.logger, "logger") if cfg.get("logger") else False
    plugins: list[Any] = [AtomicCheckpointIO()]
    if (
        SLURMEnvironment.detect()
    ):  # one requeue mechanism on SLURM: submitit's (conf/hydra/launcher/slurm.yaml)
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = _instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=logger, plugins=plugins)
    return Run(trainer, module, datamodule, ckpt_path, run_dir, int((resumed or {}).get("global_step", 0)))


def thread_budget(cfg: DictConfig, recorded: int | None = None) -> ThreadBudget:
    """The run's intra-op thread budget from ``threads`` (``auto`` or a count), applied now.

    ``auto`` shares the CPUs available to the process among the processes on them
    (:mod:`solvers.threads`); an ``OMP_NUM_THREADS`` in the environment is an explicit count and wins. A
    resumed run under ``auto`` keeps the count its checkpoint ``recorded``, so that it continues bit-exactly.
    """
    threads, reason = cfg.get("threads", "auto"), "fixed"
    if threads == "auto" and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    elif threads == "auto" and isinstance(recorded, int) and recorded >= 1:
        threads, reason = recorded, "recorded in the checkpoint, for a bit-exact resume"
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise RunConfigError(f"threads={threads!r} is not allowed; give auto or an int >= 1")
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    workers = max(int(data.get("num_workers") or 0), 1) if data.get("generation") == "cpu" else 0
    devices = trainer.get("devices")  # ranks per node, known before DDP starts them
    ranks = devices if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0 else None
    return ThreadBudget(workers, None if threads == "auto" else threads, ranks, reason=reason)


def _check_network_fits(module: SurrogateModule, datamodule: pl.LightningDataModule) -> None:
    """One forward pass on a real sample, so a network that cannot fit the grid fails before training."""
    val = datamodule.trajectories("val")
    x = val["u"][:1, : module.net.time_history]
    params = {k: v[:1] for k, v in val["params"].items()}
    dt = torch.tensor([val["grid"].dt_out], dtype=x.dtype)
    try:
        with torch.no_grad():
            module(x, params, dt)
    except (ValueError, RuntimeError) as error:
        raise RunConfigError(f"model: {error}") from error


def fit(cfg: DictConfig) -> dict[str, float]:
    """Train as configured; returns the final logged metrics (plus the untrained validation score), which
    also go to the run directory's ``results.json`` (:func:`training.sweep.write_results`)."""
    start = time.monotonic()
    run = build(cfg)
    results: dict[str, float] = {}
    params = sum(p.numel() for p in run.module.net.parameters())
    log.info("model: %s, %s parameters", type(run.module.net).__name__, f"{params:,}")
    plan = None
    best = run.trainer.checkpoint_callback
    try:
        if not run.trainer.fast_dev_run and rank_zero_only.rank == 0:
            steps = max(int(run.trainer.max_steps) - run.start_step, 0)
            unroll = int(cfg.module.get("unroll_steps") or 0)
            val = run.datamodule.trajectories("val")
            device = run.trainer.strategy.root_device
            plan = measure(run.module, val, steps, int(cfg.data.batch_size), unroll, device)
            announce(plan, cfg.trainer.get("val_check_interval"))
        if run.ckpt_path is None and cfg.get("validate_untrained", True) and not run.trainer.fast_dev_run:
            took = f", {about(plan.val_s)}" if plan is not None else ""
            log.info("validating the untrained model (the score training must beat%s)", took)
            untrained = run.trainer.validate(run.module, datamodule=run.datamodule, verbose=False)[0]
            results["untrained/corr_time"] = float(untrained["val/corr_time"])
            log.info("untrained model: validation correlation time %.3f", results["untrained/corr_time"])
            for check in (c for c in run.trainer.callbacks if isinstance(c, BlowUpCheck)):
                check.reference = {k: float(v) for k, v in untrained.items()}
            if isinstance(best, BestCheckpoint) and best.monitor in untrained:
                best.floor = float(untrained[best.monitor])  # best.ckpt must match the untrained model
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
    except (
        ConfigError,
        NonFinite,
        CheckpointWriteError,
    ) as error:  # the stream failed, NaN training, full disk
        raise RunConfigError(str(error)) from None
    except SIGTERMException:  # a signal outside the training steps (Lightning's own handler)
        raise Stopped(signal.SIGTERM, run.trainer.global_step, None) from None
    finally:
        run.run_dir.release()
        if any(isinstance(logger, WandbLogger) for logger in run.trainer.loggers):
            import wandb

            wandb.finish()  # close the run, so that the next job of a multirun starts its own
    results.update({k: float(v) for k, v in run.trainer.callback_metrics.items() if v.numel() == 1})
    if best is not None and best.best_model_path:
        score = best.best_model_score  # None when a resumed run had nothing left to train
        shown = "" if score is None else f" ({best.monitor} {float(score):.4g})"
        log.info("best checkpoint: %s%s", best.best_model_path, shown)
    elif isinstance(best, BestCheckpoint) and best.floor is not None:
        log.warning(
            "no validation reached %s %.4g (the untrained model's, or the resumed run's best): no best.ckpt "
            "written; last.ckpt holds the final state",
            best.monitor,
            best.floor,
        )
    if rank_zero_only.rank == 0:
        score = None if best is None or best.best_model_score is None else float(best.best_model_score)
        monitor, mode = (best.monitor, best.mode) if best is not None else (None, "max")
        write_results(cfg.paths.output_dir, monitor, mode, score, time.monotonic() - start, results)
    return results
