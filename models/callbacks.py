"""Training callbacks: throughput, the share of time spent waiting for data, and a rollout figure."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


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


class RolloutFigure(pl.Callback):
    """After each validation, logs a figure of one validation rollout (truth, prediction, error).

    Drawn with the evaluation report's sample figure (space-time plots in 1D, snapshots in 2D) and
    logged through the logger's ``log_image`` (wandb); loggers without images are skipped.
    """

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from evaluation.report import figure_samples  # matplotlib only when a figure is drawn

        logger = trainer.logger
        sample = getattr(pl_module, "val_sample", None)
        if sample is None or not hasattr(logger, "log_image") or not trainer.is_global_zero:
            return
        pred, true, times = sample
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rollout.png"
            figure_samples(pred, true, times.numpy(), f"step {trainer.global_step}", path)
            logger.log_image(key="val/rollout", images=[str(path)], step=trainer.global_step)
