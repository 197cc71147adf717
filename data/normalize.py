"""Per-channel normalisation of fields, the conditioning vector's layout and its unit-range scaling.

The statistics are estimated once (from solver output or from a file) by the DataModule; the
:class:`Normalizer` is an ``nn.Module`` whose buffers travel in the LightningModule's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from solvers.base import TIME_SCALE, ParamSpec, Solver
from solvers.errors import ConfigError

TIME_STEP = "dt"
"""The conditioning vector's last entry: the model's time step."""


@dataclass(frozen=True)
class CondLayout:
    """The conditioning vector ``[B, P]``: the PDE's parameters in their solver's order, then the time step.

    A per-trajectory time scale (``time_scale``, :data:`~solvers.base.RANGED_SETTINGS`) is not an entry of
    its own: it reaches the network through the time step, each trajectory's ``s_b · dt``; a per-trajectory
    domain length is (the grid spacing ``Δx = L / n`` PDEArena conditions on, up to the factor ``n``).

    The one place that order is decided: the stream stores the parameters of its windows in it, the
    :class:`Normalizer` stacks and scales it, and ``model.cond_dim`` is its length (``conf/train.yaml``
    reads the names from the solver class and its config, :meth:`~solvers.base.Solver.param_names`,
    without building a solver).
    """

    params: tuple[str, ...]

    @classmethod
    def of(cls, solver: Solver) -> CondLayout:
        return cls(tuple(name for name in solver.params if name != TIME_SCALE))

    @classmethod
    def of_names(cls, names: tuple[str, ...]) -> CondLayout:
        """The layout of a solver whose parameters are ``names`` (:meth:`~solvers.base.Solver.param_names`)."""
        return cls(tuple(name for name in names if name != TIME_SCALE))

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.params, TIME_STEP)

    def __len__(self) -> int:
        return len(self.params) + 1

    def stack(self, params: Mapping[str, Tensor], dt: Tensor) -> Tensor:
        """The raw vector ``[B, P]`` (dtype and device of ``dt``) from ``{name: [B]}`` and ``dt`` ``[B]``."""
        missing = set(self.params) - set(params)
        if missing:
            raise ValueError(f"conditioning: missing parameter(s) {sorted(missing)}; has {sorted(params)}")
        return torch.stack([params[k].to(dt) for k in self.params] + [dt], dim=-1)


class Normalizer(nn.Module):
    """``normalize(u) = (u - mean_c) / std_c`` per channel ``c`` of ``[B, T, C, *S]``, and the conditioning.

    The conditioning vector ``[B, P]`` (:class:`CondLayout`: the PDE parameters in ``param_names`` order,
    then the time step) has each entry mapped to about ``[-1, 1]``: a range ``[low, high]`` by
    ``(p - (low + high)/2) / ((high - low)/2)`` (in ``log p`` for log-uniform ranges), a fixed value
    ``v ≠ 0`` by ``p / |v|``; the time step likewise, ``dt · [low, high]`` of a time-scale range.

    Args:
        mean, std: per-channel statistics ``[C]``.
        param_names: parameter names, in conditioning order.
        center, scale, log: per-entry affine map of the ``P = len(param_names) + 1`` conditioning entries.
    """

    def __init__(
        self, mean: Tensor, std: Tensor, param_names: list[str], center: Tensor, scale: Tensor, log: Tensor
    ) -> None:
        super().__init__()
        if bool((std <= 0).any()) or not bool(torch.isfinite(std).all() and torch.isfinite(mean).all()):
            raise ValueError(
                f"Normalizer: mean and std must be finite with std > 0; got mean {mean.tolist()} and std {std.tolist()}"
            )
        self.layout = CondLayout(tuple(param_names))
        self.register_buffer("mean", mean.double().clone())
        self.register_buffer("std", std.double().clone())
        self.register_buffer("center", center.double().clone())
        self.register_buffer("scale", scale.double().clone())
        self.register_buffer("log", log.bool().clone())

    @classmethod
    def from_solver(cls, solver: Solver, mean: Tensor, std: Tensor, dt_out: float) -> Normalizer:
        """Conditioning ranges from the solver's parameter specs; the time step's from the model's step
        ``dt_out`` (times the time-scale range, if any)."""
        layout = CondLayout.of(solver)
        time_scale = solver.params.get(TIME_SCALE)
        steps = ParamSpec(
            TIME_STEP, dt_out if time_scale is None else [dt_out * time_scale.low, dt_out * time_scale.high]
        )
        center, scale, log = [], [], []
        for spec in [*(solver.params[name] for name in layout.params), steps]:
            low, high = (math.log(spec.low), math.log(spec.high)) if spec.log else (spec.low, spec.high)
            if spec.fixed:
                center.append(0.0)
                scale.append(abs(spec.low) or 1.0)
            else:
                center.append(0.5 * (low + high))
                scale.append(0.5 * (high - low))
            log.append(spec.log)
        return cls(
            mean,
            std,
            list(layout.params),
            torch.tensor(center),
            torch.tensor(scale),
            torch.tensor(log),
        )

    @property
    def param_names(self) -> list[str]:
        return list(self.layout.params)

    @property
    def cond_dim(self) -> int:
        """Length ``P`` of the conditioning vector (parameters and the time step)."""
        return len(self.layout)

    def _channel_shape(self, u: Tensor) -> tuple[int, ...]:
        if u.ndim < 3 or u.shape[2] != len(self.mean):
            raise ValueError(f"Normalizer expects [B, T, {len(self.mean)}, *S], got {tuple(u.shape)}")
        return (1, 1, len(self.mean), *([1] * (u.ndim - 3)))

    def normalize(self, u: Tensor) -> Tensor:
        shape = self._channel_shape(u)
        return (u - self.mean.to(u.dtype).reshape(shape)) / self.std.to(u.dtype).reshape(shape)

    def denormalize(self, u: Tensor) -> Tensor:
        shape = self._channel_shape(u)
        return u * self.std.to(u.dtype).reshape(shape) + self.mean.to(u.dtype).reshape(shape)

    def cond(self, params: Mapping[str, Tensor], dt: Tensor) -> Tensor:
        """The scaled conditioning vector ``[B, P]`` (dtype and device of ``dt``)."""
        raw = self.layout.stack(params, dt)
        raw = torch.where(self.log.to(raw.device), raw.clamp_min(1e-30).log(), raw)
        return (raw - self.center.to(raw)) / self.scale.to(raw)

    def get_extra_state(self) -> dict[str, Any]:
        return {"param_names": self.param_names}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.layout = CondLayout(tuple(state["param_names"]))


def channel_stats(u: Tensor, source: str = "the data") -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation (float64) of ``[N, T, C, *S]``; a zero std becomes 1.

    Raises:
        ConfigError: the statistics are not finite (``u`` holds NaN or inf, or nothing); the sentence names
            ``source``, the trajectories ``u`` are.
    """
    values = u.double().transpose(0, 2).reshape(u.shape[2], -1)
    none = torch.full((u.shape[2],), math.nan, dtype=torch.float64)  # fewer than two values: no statistics
    mean, std = (values.mean(dim=1), values.std(dim=1)) if values.shape[1] > 1 else (none, none)
    if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all()):
        raise ConfigError(
            f"the normalisation statistics of {source} are not finite (per-channel mean {mean.tolist()}, std "
            f"{std.tolist()}) because those trajectories hold NaN or inf or there are none; fix their source or "
            "set data.normalize=none"
        )
    return mean, torch.where(std > 0, std, torch.ones_like(std))
