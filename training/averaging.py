"""EMA of the weights that survives pickling (``trainer.strategy=ddp_spawn`` pickles the callbacks)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from torch import Tensor


class EMAUpdate:
    """``ema ← decay · ema + (1 − decay) · current``, as ``torch.optim.swa_utils.get_ema_avg_fn`` computes it,
    as an object that pickles (that function returns a closure)."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, ema_param: Tensor, current_param: Tensor, num_averaged: Any) -> Tensor:
        return self.decay * ema_param + (1 - self.decay) * current_param


class EMAWeightAveraging(LightningEMA):
    """Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` with a picklable update."""

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self._kwargs["avg_fn"] = EMAUpdate(decay)
