"""Clean stops of a training run: a signal saves a resumable checkpoint, a data error stops every rank.

SLURM sends SIGTERM before it kills a preempted job, the signal of ``--signal`` (SIGUSR1, or SIGUSR2 for
submitit) before its time limit; a user may send either by hand. :class:`StopGuard` notes the signal,
writes ``last.ckpt`` at the end of the current optimizer step and stops the run with :class:`Stopped`,
which ``train.py`` turns into exit status ``128 + signal`` (143 for SIGTERM), so a job runner can tell a
stopped run from a finished one; ``ckpt_path=auto`` continues it exactly. Under submitit, whose handler
of SIGUSR2 requeues the job, that handler runs after the checkpoint is written (one requeue mechanism:
submitit's; Lightning's own SLURM requeue is switched off in :func:`training.run.build`).

Under DDP every rank must stop at the same step: at the start of each step the ranks agree (one
``all_reduce``) on whether any of them received a signal or had its data stream fail; a stream failure
on any rank stops all of them with that rank's sentence.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch

from data.stream import STREAM_ERROR
from solvers.base import ConfigError

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
CHAINED = (signal.SIGUSR2,)
"""Signals whose previous handler (submitit's checkpoint-and-requeue) runs after the checkpoint is written."""


class Stopped(Exception):
    """Training stopped on a signal after writing a resumable checkpoint."""

    def __init__(self, signum: int, step: int, path: str | None) -> None:
        kept = (
            f"{path} holds the run (resume with ckpt_path=auto in the same run directory, or ckpt_path=<that file>)"
            if path
            else "before training, nothing to resume"
        )
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; {kept}")
        self.signum = signum


class StopGuard(pl.Callback):
    """Handles SIGTERM/SIGUSR1/SIGUSR2 during training and stops all ranks together on errors.

    Args:
        checkpoint_path: where the checkpoint of a stopped run is written (the run's ``last.ckpt``).
    """

    def __init__(self, checkpoint_path: str) -> None:
        self.checkpoint_path = checkpoint_path
        self.received = 0
        self._stop_on = 0
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning's own handlers (registered when the run starts), which these replace
        self.received, self._stop_on = 0, 0
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        error = batch.get(STREAM_ERROR) if isinstance(batch, Mapping) else None
        status = torch.tensor([1 if error else 0, self.received])
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            status = status.to(trainer.strategy.root_device)
            torch.distributed.all_reduce(status, op=torch.distributed.ReduceOp.MAX)
        failed, signum = (int(v) for v in status.tolist())
        if failed:
            messages: list[Any] = [error]
            if distributed:
                messages = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(messages, error)
            raise ConfigError(next(m for m in messages if m))
        self._stop_on = signum

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._stop_on:
            return
        trainer.save_checkpoint(self.checkpoint_path)
        previous = self._previous.get(self._stop_on)
        if self._stop_on in CHAINED and callable(previous):
            previous(self._stop_on, None)
        raise Stopped(self._stop_on, trainer.global_step, self.checkpoint_path)
