"""EMA of the weights, updated in one vectorised call per step, that survives pickling (``trainer.strategy=
ddp_spawn`` pickles the callbacks)."""

from __future__ import annotations

from itertools import chain
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from torch import Tensor
from torch.optim.swa_utils import AveragedModel


def averaged(tensor: Tensor) -> bool:
    """Whether the EMA averages ``tensor`` (real or complex floating point, as the FNO's spectral weights), or
    copies it (integer counters and flags)."""
    return tensor.is_floating_point() or tensor.is_complex()


class EMAUpdate:
    """``ema ← ema + (1 − decay) · (current − ema)`` for every parameter at once (``torch._foreach_lerp_``: one
    kernel per group instead of three per tensor), as an object that pickles (torch's
    ``get_ema_multi_avg_fn`` returns a closure)."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema: list[Tensor], current: list[Tensor], num_averaged: Any) -> None:
        if ema and not averaged(ema[0]):  # a group of integer or flag buffers: kept as they are now
            torch._foreach_copy_(ema, current)
            return
        torch._foreach_lerp_(ema, current, 1 - self.decay)


class EMAWeightAveraging(LightningEMA):
    """Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` with a vectorised, picklable update."""

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self._kwargs.pop("avg_fn", None)
        self._kwargs["multi_avg_fn"] = EMAUpdate(decay)
        self._pairs: tuple[pl.LightningModule, list[tuple[list[Tensor], list[Tensor]]]] | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Lightning's update rule (after each optimizer step that :meth:`should_update` accepts), applied by
        :meth:`update`."""
        if trainer.global_step > self._latest_update_step and self.should_update(
            step_idx=trainer.global_step - 1
        ):
            self.update(pl_module)
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def update(self, pl_module: pl.LightningModule) -> None:
        """One vectorised update per group of tensors, over lists built once: torch's
        ``AveragedModel.update_parameters`` (used for the first update, which copies) walks and regroups every
        parameter and buffer on each step, which costs more than the update on a small network."""
        average = self._average_model
        assert average is not None
        if self._pairs is None or self._pairs[0] is not pl_module:
            average.update_parameters(pl_module)
            self._pairs = (pl_module, _groups(average, pl_module))
            return
        (ema, current), (copies, sources) = self._pairs[1]
        if ema:
            self._kwargs["multi_avg_fn"](ema, current, None)
        if copies:
            torch._foreach_copy_(copies, sources)
        average.n_averaged += 1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pairs": None}


def _groups(average: AveragedModel, module: torch.nn.Module) -> list[tuple[list[Tensor], list[Tensor]]]:
    """``(averaged, current)`` tensor lists in ``update_parameters``' order: the real and complex tensors it
    averages, then those it copies (integer buffers; every buffer when ``use_buffers`` is off)."""
    if average.use_buffers:
        pairs = list(zip(chain(average.module.parameters(), average.module.buffers()),
                         chain(module.parameters(), module.buffers()), strict=True))  # fmt: skip
        mean = [(a, c) for a, c in pairs if averaged(a)]
        copy = [(a, c) for a, c in pairs if not averaged(a)]
    else:
        mean = list(zip(average.module.parameters(), module.parameters(), strict=True))
        copy = list(zip(average.module.buffers(), module.buffers(), strict=True))
    if any(a.device != c.device or a.dtype != c.dtype for a, c in mean + copy):
        raise ValueError(
            "the EMA copy must share the model's devices and dtypes (EMAWeightAveraging(device=None))"
        )
    return [([a for a, _ in group], [c for _, c in group]) for group in (mean, copy)]
