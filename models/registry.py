"""One registry of named network presets.

Every architecture module declares ``PRESETS: dict[str, dict]``: preset name → architecture
hyper-parameters, with the class under ``"cls"``. :func:`build` adds the data-dependent shape
(``ndim``, ``channels``, ``time_history``, ``time_future``, ``cond_dim``) and any overrides; the Hydra
configs ``conf/model/<name>.yaml`` call it as their ``_target_``.
"""

from __future__ import annotations

import inspect
from typing import Any

from models import fno, lsm, pde_refiner, sinenet, unet
from models.base import SurrogateNet

PRESETS: dict[str, dict[str, Any]] = {
    name: preset
    for module in (fno, unet, sinenet, lsm, pde_refiner)
    for name, preset in module.PRESETS.items()
}


def available() -> list[str]:
    """Names of all presets, sorted."""
    return sorted(PRESETS)


def build(
    name: str,
    *,
    ndim: int,
    channels: int,
    time_history: int,
    time_future: int,
    cond_dim: int = 0,
    **overrides: Any,
) -> SurrogateNet:
    """The network of preset ``name`` for this data shape; ``overrides`` replace preset values.

    Raises ``ValueError`` for an unknown preset name or an override the class does not accept.
    """
    if name not in PRESETS:
        raise ValueError(f"model name={name!r} is not a preset; allowed: {', '.join(available())}")
    kwargs = dict(PRESETS[name])
    cls = kwargs.pop("cls")
    accepted = set(inspect.signature(cls).parameters) - {"ndim", "channels", "time_history", "time_future"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(
            f"model {name!r} ({cls.__name__}) has no option(s) {unknown}; allowed: {sorted(accepted - {'cond_dim'})}"
        )
    kwargs.update(overrides)
    return cls(
        ndim=ndim,
        channels=channels,
        time_history=time_history,
        time_future=time_future,
        cond_dim=cond_dim,
        **kwargs,
    )
