"""Training callbacks: the best checkpoint, throughput, the share of time spent waiting for data, the online
stream's statistics, a rollout figure, progress lines and the intra-op thread budget."""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from data.datamodule import OnlineDataModule
from data.progress import duration
from solvers.errors import ConfigError, check_number
from solvers.threads import Registry, intra_op_threads

log = logging.getLogger("pdestream")


class BestCheckpoint(ModelCheckpoint):
    """Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (``save_top_k=1``) that only ever keeps a
    model that beat every score it knows.

    * ``floor``: the score to match before anything is saved, the untrained model's validation score
      (:func:`training.run.fit` sets it), so ``best.ckpt`` is never a model that scored worse than no training;
    * a non-finite score is never saved (Lightning saves the first score it sees, NaN included);
    * the best score travels in the checkpoint, not in the directory path: a run resumed from another
      directory (moved, copied, or a new ``hydra.run.dir``) keeps it as its floor, and only a file of this
      directory is ever taken as the best model or removed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.floor: float | None = None

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or not bool(torch.isfinite(current)):
            return False
        if self.floor is not None:
            as_good = current >= self.floor if self.mode == "max" else current <= self.floor
            if not trainer.strategy.reduce_boolean_decision(bool(as_good)):
                return False
        return super().check_monitor_top_k(trainer, current)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "floor": self.floor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        scores = [state_dict.get("floor"), state_dict.get("best_model_score")]
        scores = [float(s) for s in scores if s is not None and math.isfinite(float(s))]
        self.floor = (max if self.mode == "max" else min)(scores) if scores else None
        here = Path(self.dirpath or "") / f"{self.filename}{self.FILE_EXTENSION}"
        self.best_k_models, self.kth_best_model_path, self.best_model_path = {}, "", ""
        self.best_model_score = None
        if (
            self.floor is not None and here.is_file()
        ):  # this directory's best file (the run's, or moved with it)
            score = torch.tensor(self.floor)
            self.best_k_models = {str(here): score}
            self.kth_best_model_path = self.best_model_path = str(here)
            self.kth_value = self.best_model_score = score
        self.last_model_path = ""


class Throughput(pl.Callback):
    """Logs ``perf/samples_per_s`` and ``perf/data_wait_fraction`` every ``log_every_n_steps``.

    The data wait is the time between the end of one training batch and the start of the next (the
    DataLoader producing the batch); its fraction of the wall time shows whether the online stream
    keeps up with the model.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.samples, self.wait, self.start = 0, 0.0, time.perf_counter()
        self._batch_end: float | None = None
        self._validation_start = self.start

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._batch_end is not None:
            self.wait += time.perf_counter() - self._batch_end

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.samples += batch["x"].shape[0]
        self._batch_end = time.perf_counter()
        if (trainer.global_step % trainer.log_every_n_steps) == 0:
            elapsed = self._batch_end - self.start
            pl_module.log_dict(
                {
                    "perf/samples_per_s": self.samples / elapsed,
                    "perf/data_wait_fraction": self.wait / elapsed,
                },
                batch_size=batch["x"].shape[0],
            )
            self._reset()
            self._batch_end = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # validation time is neither training nor waiting for data
        paused = time.perf_counter() - self._validation_start
        self.start += paused
        if self._batch_end is not None:
            self._batch_end += paused


class StreamStatistics(pl.Callback):
    """Logs the online stream's statistics as ``stream/*`` every ``log_every_n_steps`` (see
    :meth:`data.datamodule.OnlineDataModule.stream_stats`: buffer fill, windows inserted, reuse, trajectories
    generated and diverged); nothing for offline data.

    The counters travel with the batches (also from DataLoader workers) and are read, not computed, here.
    Under DDP every rank logs its own shards' values unreduced, and the logger keeps rank 0's.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, OnlineDataModule) or trainer.global_step % trainer.log_every_n_steps:
            return
        stats = datamodule.stream_stats()
        if stats:
            pl_module.log_dict({f"stream/{k}": v for k, v in stats.items()}, batch_size=batch["x"].shape[0])


class ParameterSampling(pl.Callback):
    """Feeds the adaptive parameter sampler and logs where the stream drew its trajectories' parameters.

    Each training step (``data.sampling=adaptive``): the batch's per-sample training losses
    (``outputs["sample_losses"]``), with the mean squares of their normalised targets, are binned by their
    windows' PDE parameters and folded into the sampler's distribution
    (:meth:`data.sampling.ParameterSampler.update`, a collective under DDP: every rank calls it at the
    same step). After each validation, for either sampling: the share of training trajectories drawn per
    parameter cell (summed over ranks and DataLoader workers) as ``sampling/drawn/<cell>`` and, when
    adaptive, the sampler's probabilities as ``sampling/prob/<cell>``.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, OnlineDataModule) or datamodule.sampler.mode != "adaptive":
            return
        losses = outputs.get("sample_losses") if isinstance(outputs, Mapping) else None
        if losses is None:
            raise ConfigError(
                f"data.sampling=adaptive needs per-sample training losses, but {type(pl_module).__name__} "
                "reports none; allowed: sampling=uniform for this model's objective"
            )
        energy = pl_module.normalizer.normalize(batch["y"]).pow(2).flatten(1).mean(1)
        datamodule.sampler.record(batch["params"], losses, energy)
        datamodule.sampler.update()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, OnlineDataModule) or not datamodule.sampler.varying:
            return
        drawn = datamodule.drawn().double()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(drawn)
        if drawn.sum() == 0:  # validation before the first training batch
            return
        sampler = datamodule.sampler
        labels = sampler.cell_labels()
        values = {
            f"sampling/drawn/{label}": float(v) for label, v in zip(labels, drawn / drawn.sum(), strict=True)
        }
        if sampler.mode == "adaptive":
            values.update(
                {f"sampling/prob/{label}": float(p) for label, p in zip(labels, sampler.probs, strict=True)}
            )
        pl_module.log_dict(values)


class RolloutFigure(pl.Callback):
    """After each validation, logs a figure of one validation rollout (truth, prediction, error).

    Drawn with the evaluation report's sample figure (space-time plots in 1D, snapshots in 2D) and
    logged through the logger's ``log_image`` (wandb); loggers without images are skipped.
    """

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from evaluation.report import figure_samples, save_figure  # matplotlib only when a figure is drawn

        logger = trainer.logger
        sample = getattr(pl_module, "val_sample", None)
        if sample is None or not hasattr(logger, "log_image") or not trainer.is_global_zero:
            return
        pred, true, times = sample
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rollout.png"
            solver = trainer.datamodule.solver
            label = f"step {trainer.global_step}"
            save_figure(
                figure_samples(pred, true, times.numpy(), label, solver.length, solver.channels[0]), path
            )
            logger.log_image(key="val/rollout", images=[str(path)], step=trainer.global_step)


def progress_bar(every_s: float = 30.0, stream: TextIO | None = None) -> ProgressBar:
    """:class:`StepProgressBar` on a terminal; :class:`LogProgress` lines when output goes to a file."""
    return StepProgressBar() if (stream or sys.stdout).isatty() else LogProgress(every_s)


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar counting optimizer steps out of ``trainer.max_steps``.

    A run is as long as ``max_steps`` (the online stream has no epochs), so the training bar reads
    ``Training step 1200/3000``, not Lightning's ``Epoch 0/-2 … 200/200``, and it carries the logged
    metrics without the logger's version (``v_num``).
    """

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training step':{len(self.validation_description)}}"

    @property
    def total_train_batches(self) -> int | float:
        steps = self.trainer.max_steps
        return steps if steps and steps > 0 else super().total_train_batches

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class LogProgress(ProgressBar):
    """Plain progress lines for logs that are not a terminal (SLURM output files, ``nohup``, CI).

    Every ``every_s`` seconds and at the last step: ``step 1200/3000 (40%) · loss 0.0123 · 1803 samples/s
    · 41 s elapsed · about 1 min 02 s left`` (samples/s since the previous line, validation time not
    counted; the time left from the whole run's pace, validations included), and after each validation
    its metrics. Lines go through the ``pdestream`` logger, so they also reach the run's ``train.log``.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s, self._enabled = every_s, True
        self._start = self._last = self._paused = self._validation_start = 0.0
        self._samples, self._first_step = 0, 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _active(self, trainer: pl.Trainer) -> bool:
        return self._enabled and trainer.is_global_zero

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._samples, self._first_step, self._paused = 0, trainer.global_step, 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += len(batch["x"]) if isinstance(batch, dict) and "x" in batch else 0
        now = time.monotonic()
        last_step = 0 < trainer.max_steps <= trainer.global_step
        if self._active(trainer) and (now - self._last >= self.every_s or last_step):
            self._line(trainer, now)

    def _line(self, trainer: pl.Trainer, now: float) -> None:
        step, total = trainer.global_step, trainer.max_steps
        parts = [f"step {step}/{total} ({100 * step / total:.0f}%)" if total > 0 else f"step {step}"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4g}")
        training = now - self._last - self._paused
        if training > 0:
            parts.append(f"{self._samples / training:.0f} samples/s")
        parts.append(f"{duration(now - self._start)} elapsed")
        done = step - self._first_step
        if total > 0 and done > 0 and step < total:
            parts.append(f"about {duration((total - step) * (now - self._start) / done)} left")
        log.info(" · ".join(parts))
        self._last, self._samples, self._paused = now, 0, 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        took = time.monotonic() - self._validation_start
        self._paused += took
        if not self._active(trainer) or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        shown = " · ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        log.info("validation at step %d (%s): %s", trainer.global_step, duration(took), shown)


class BlowUpCheck(pl.Callback):
    """Says, in one warning line right after the validation line, when a validation blew up.

    A validation blew up when a ``val/`` metric is not finite, when ``val/rel_l2`` exceeds ``rel_l2_limit``
    (predictions that many times the size of the truth, whatever the units), or when ``val/mse`` exceeds
    ``mse_factor`` times the untrained model's (``reference``, which :func:`training.run.fit` sets from its
    untrained validation; absent without one). The run goes on: the line says what happened and what to try;
    ``best.ckpt`` keeps the best model validated before. Configured as ``callbacks.blow_up``.
    """

    def __init__(self, rel_l2_limit: float = 10.0, mse_factor: float = 100.0) -> None:
        self.rel_l2_limit = check_number("callbacks.blow_up.rel_l2_limit", rel_l2_limit, low=0, low_open=True)
        self.mse_factor = check_number("callbacks.blow_up.mse_factor", mse_factor, low=1)
        self.reference: dict[str, float] = {}

    def verdict(self, metrics: Mapping[str, float]) -> str | None:
        """Why the validation ``metrics`` (``val/<name>``: value) blew up, or None."""
        bad = sorted(k for k, v in metrics.items() if k.startswith("val/") and not math.isfinite(v))
        if bad:
            return f"{', '.join(bad)} not finite"
        mse, untrained = metrics.get("val/mse"), self.reference.get("val/mse")
        if mse is not None and untrained is not None and untrained > 0 and mse > self.mse_factor * untrained:
            return f"val/mse {mse:.3g} is {mse / untrained:.2g} times the untrained model's {untrained:.3g}"
        rel = metrics.get("val/rel_l2")
        if rel is not None and rel > self.rel_l2_limit:
            return f"val/rel_l2 {rel:.3g}: the predictions are over {self.rel_l2_limit:g} times the size of the truth"
        return None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        why = self.verdict(metrics)
        if why:
            log.warning(
                "validation at step %d blew up (%s): the rollouts diverge; try a lower optimizer.lr, "
                "a smaller trainer.gradient_clip_val or module.unroll_steps > 0",
                trainer.global_step,
                why,
            )


class ValidateAtEnd(pl.Callback):
    """Validates at the last training step, so every run ends with validation metrics and checkpoints.

    Lightning validates only every ``val_check_interval`` steps: a run whose ``max_steps`` is not a
    multiple of it (or is below it) would end without scoring its final weights, and one shorter than
    the interval would write no checkpoint at all. At ``max_steps`` this asks the trainer to stop,
    which makes its loop validate that step; the checkpoint callbacks then write ``best.ckpt`` and
    ``last.ckpt``. A step that validates anyway validates once.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class ThreadBudget(pl.Callback):
    """Keeps torch's intra-op threads at this process's share of the CPUs (:mod:`solvers.threads`).

    The run registers itself (with its ``workers`` DataLoader processes; ``ranks``: the job's processes
    on this node when the configuration says, else the launcher's environment) in the machine's
    :class:`~solvers.threads.Registry` when built and unregisters at teardown; the share is chosen when
    the run is built and re-evaluated every ``interval`` seconds while it trains, so runs that start or
    end beside it (sweep jobs, a second training run) are accounted for. A fixed ``threads`` count (the
    configuration's, or the one a resumed checkpoint recorded: ``reason`` says which) is kept as it is (the
    run still registers, so that the others count it).
    """

    def __init__(
        self,
        workers: int = 0,
        threads: int | None = None,
        ranks: int | None = None,
        interval: float = 10.0,
        registry: Registry | None = None,
        reason: str = "fixed",
    ) -> None:
        self.workers, self.threads, self.ranks, self.interval = workers, threads, ranks, interval
        self.registry, self.reason = registry or Registry(), reason
        self._checked = -math.inf
        self.setup()

    def update(self) -> int:
        """Set (and return) the thread count for the processes registered now."""
        first = self._checked == -math.inf
        self._checked = time.monotonic()
        if self.threads is not None:
            threads, reason = self.threads, self.reason
        else:
            threads, reason = intra_op_threads(self.workers, self.registry.processes(), ranks=self.ranks)
        if first or threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            log.info("torch threads: %d (%s)", threads, reason)
        return threads

    def state_dict(self) -> dict[str, Any]:
        """The thread count in use, recorded in each checkpoint: a resume uses it (floating-point sums depend on
        how the work is split among threads, so the same count is what makes a resume bit-exact)."""
        return {"threads": torch.get_num_threads()}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.registry.register(1 + self.workers)
        self.update()

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        self.registry.unregister()

    def on_exception(self, *args: Any, **kwargs: Any) -> None:
        self.registry.unregister()

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        if self.threads is None and time.monotonic() - self._checked >= self.interval:
            self.update()
