"""The network contract: ``[B, T_in, C, *S]`` plus conditioning ``[B, P]`` to ``[B, T_out, C, *S]``, and the
registry of every network class (filled as each :class:`SurrogateNet` subclass is defined)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

NETWORKS: dict[str, type[SurrogateNet]] = {}
"""Every :class:`SurrogateNet` subclass under its import path (``models.fno.FNO``), the ``_target_`` that
``conf/model/*.yaml`` and stored checkpoint configs name; a class is registered when it is defined."""


def network_class(target: object, what: str = "_target_") -> type[SurrogateNet]:
    """The registered network class named ``target``; anything else raises ``ValueError`` naming ``what``."""
    if not isinstance(target, str) or target not in NETWORKS:
        raise ValueError(
            f"{what}={target!r} is not a pdestream network class; allowed: {', '.join(sorted(NETWORKS))}"
        )
    return NETWORKS[target]


class SurrogateNet(nn.Module):
    """Base class of every architecture.

    Subclasses implement :meth:`_forward` on the time-and-channel-flattened input
    ``[B, T_in * C, *S]`` and return ``[B, T_out * C, *S]``. ``cond`` is ``[B, P]`` (PDE parameters
    and the time step) for conditioned networks (``cond_dim > 0``) and ``None`` otherwise.

    Every subclass records its constructor arguments in ``self.hparams`` (a plain dict), so a
    network can be rebuilt with ``type(net)(**net.hparams)``, and is registered in :data:`NETWORKS`.

    Args:
        ndim: spatial dimensions (1 or 2).
        channels: physical channels ``C`` per frame.
        time_history: input frames ``T_in``.
        time_future: output frames ``T_out``.
        cond_dim: length ``P`` of the conditioning vector; 0 for an unconditioned network.
    """

    hparams: dict[str, Any]
    translation_step: int | None = 1
    """Smallest periodic shift (cells) that commutes exactly with the network; ``None`` for none."""

    def __init__(
        self, ndim: int, channels: int, time_history: int, time_future: int, cond_dim: int = 0
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("ndim", ndim, 1),
            ("channels", channels, 1),
            ("time_history", time_history, 1),
            ("time_future", time_future, 1),
            ("cond_dim", cond_dim, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{type(self).__name__}: {name}={value!r} must be an int >= {low}")
        if ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: ndim={ndim} is not supported; allowed: 1, 2")
        self.ndim, self.channels = ndim, channels
        self.time_history, self.time_future, self.cond_dim = time_history, time_future, cond_dim

    @property
    def in_features(self) -> int:
        return self.time_history * self.channels

    @property
    def out_features(self) -> int:
        return self.time_future * self.channels

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        expected = (self.time_history, self.channels)
        if x.ndim != 3 + self.ndim or tuple(x.shape[1:3]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects input [B, {expected[0]}, {expected[1]}, "
                f"{', '.join('S' * self.ndim)}], got {tuple(x.shape)}"
            )
        if self.cond_dim:
            if cond is None or cond.shape != (x.shape[0], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"{type(self).__name__} expects cond [B, {self.cond_dim}], got {got}")
        else:
            cond = None
        y = self._forward(x.flatten(1, 2), cond)
        return y.unflatten(1, (self.time_future, self.channels))

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__init__
        signature = inspect.signature(init)

        def recording_init(self: SurrogateNet, *args: Any, **kw: Any) -> None:
            if "hparams" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self.__dict__["hparams"] = {k: v for k, v in bound.arguments.items() if k != "self"}
            init(self, *args, **kw)

        recording_init.__signature__ = signature  # type: ignore[attr-defined]
        recording_init.__doc__ = init.__doc__
        cls.__init__ = recording_init  # type: ignore[method-assign]
        NETWORKS[f"{cls.__module__}.{cls.__qualname__}"] = cls
