"""Clean stops of a training run: a signal saves a resumable checkpoint, a data error stops every rank, a
non-finite loss, gradient or input stops the run before it reaches the weights.

SLURM sends SIGTERM before it kills a preempted job, the signal of ``--signal`` (SIGUSR1, or SIGUSR2 for
submitit) before its time limit; a user may send either by hand, or press Ctrl-C (SIGINT). :class:`StopGuard`
notes the signal, writes ``last.ckpt`` at the end of the current optimizer step and stops the run with
:class:`Stopped`, which ``train.py`` turns into exit status ``128 + signal`` (143 for SIGTERM, 130 for
Ctrl-C), so a job runner can tell a stopped run from a finished one; ``ckpt_path=auto`` continues it exactly. Under submitit, whose handler
of SIGUSR2 requeues the job, that handler runs after the checkpoint is written (one requeue mechanism:
submitit's; Lightning's own SLURM requeue is switched off in :func:`training.run.build`).

Under DDP every rank must stop at the same step: at the start of each step the ranks agree (one
``all_reduce``) on whether any of them received a signal or had its data stream fail; a stream failure
on any rank stops all of them with that rank's sentence.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch

from data.stream import STREAM_ERROR
from solvers.errors import ConfigError

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
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
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        previous = self._previous.get(self._stop_on)
        if self._stop_on in CHAINED and callable(previous):
            previous(self._stop_on, None)
        raise Stopped(self._stop_on, trainer.global_step, self.checkpoint_path)


class NonFinite(Exception):
    """Training met a non-finite input, loss or gradient; the message is one sentence for the user."""


def _first_non_finite(named: Iterable[tuple[str, torch.Tensor | None]]) -> str | None:
    """The name of the first tensor of ``named`` that holds a NaN or an infinity, else ``None``; one
    synchronisation for all of them."""
    named = [(name, t) for name, t in named if t is not None and t.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return next((name for (name, _), ok in zip(named, finite, strict=True) if not ok), None)


class FiniteGuard(pl.Callback):
    """Stops training at the first non-finite gradient, before the optimizer applies it, naming its cause.

    One check per step: the gradients' norms (equal on every DDP rank once reduced, so all ranks stop at the
    same step), one reduction and one synchronisation. Only when they are not finite is the cause looked for:
    the batch (``x``, ``y``, the PDE parameters), else the loss, else the first parameter whose gradient is
    not finite. The weights, the EMA and the checkpoints are never touched by a NaN: ``last.ckpt`` and
    ``best.ckpt`` stay the last state a validation saved. The error (:class:`NonFinite`, one sentence) names
    the step and the cause; ``train.py`` exits with status 2.
    """

    DATA = "check the training data (the solver's blowup bound, or the file's trajectories)"
    TRAINING = "lower optimizer.lr, set trainer.gradient_clip_val, or check the data"

    def __init__(self) -> None:
        self.batch: Any = None
        self.loss: torch.Tensor | None = None
        self.params: list[tuple[str, torch.nn.Parameter]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.params = [(name, p) for name, p in pl_module.named_parameters() if p.requires_grad]

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch, self.loss = batch, None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self.loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for _, p in self.params if p.grad is not None]
        if not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            return
        named = [(f"the gradient of {n}", p.grad) for n, p in self.params]
        bad = _first_non_finite(named)  # a norm may overflow where every value is finite
        if bad is None:
            return
        batch = self.batch if isinstance(self.batch, Mapping) else {}
        inputs = [(f"the batch's {k}", batch.get(k)) for k in ("x", "y")]
        inputs += [(f"the batch's parameter {k}", v) for k, v in (batch.get("params") or {}).items()]
        cause = _first_non_finite(inputs)
        if cause is not None:
            what, remedy = cause, self.DATA
        elif _first_non_finite([("the training loss", self.loss)]):
            what, remedy = "the training loss", self.TRAINING
        else:
            what, remedy = bad, self.TRAINING
        raise NonFinite(
            f"training stopped at step {trainer.global_step + 1}: {what} is NaN or infinite; {remedy}; "
            "no checkpoint holds a step after the last validation"
        )
