"""The experiment loggers a run configures (``conf/logger/``)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's Weights & Biases logger without the ``anonymous`` setting.

    Lightning passes ``anonymous`` to ``wandb.init`` on every run (``None`` unless asked for), and wandb
    0.31 answers any value of it, ``None`` included, with "The anonymous setting has no effect"; the
    setting is dropped here, so a run starts without that warning. Everything else is Lightning's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
