"""EMA of the weights, updated in one vectorised call per step, that survives pickling (``trainer.strategy=
ddp_spawn`` pickles the callbacks)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from torch import Tensor


class EMAUpdate:
    """``ema ← ema + (1 − decay) · (current − ema)`` for every parameter at once (``torch._foreach_lerp_``: one
    kernel per group instead of three per tensor), as an object that pickles (torch's
    ``get_ema_multi_avg_fn`` returns a closure)."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema: list[Tensor], current: list[Tensor], num_averaged: Any) -> None:
        if ema and not ema[0].is_floating_point():  # a group of integer or flag buffers: kept as they are now
            torch._foreach_copy_(ema, current)
            return
        torch._foreach_lerp_(ema, current, 1 - self.decay)


class EMAWeightAveraging(LightningEMA):
    """Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` with a vectorised, picklable update."""

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self._kwargs.pop("avg_fn", None)
        self._kwargs["multi_avg_fn"] = EMAUpdate(decay)
