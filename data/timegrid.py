"""The time grid of trajectories: ``frames`` frames ``dt_out`` apart, ``dt_out`` a whole multiple of ``dt``.

The times are nominal: a solver with per-trajectory time scales ``s_b`` (``time_scale`` given as a range)
stretches them, so trajectory ``b``'s frames are ``s_b · dt_out`` apart (:meth:`TimeGrid.spacing`).

One object says when a trajectory's frames lie: the solver's internal step ``dt``, the output interval
``dt_out`` between stored frames (the model's time step) and the frames per trajectory. It is resolved
once from the solver (:meth:`TimeGrid.of_solver`) or read from a file, and travels with the validation
and test trajectories and in a checkpoint's config (``time_grid``, :meth:`TimeGrid.to_dict`), so that
training, validation and evaluation take the model's step from it rather than from time coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from solvers.base import TIME_SCALE, Solver, whole_multiple
from solvers.errors import ConfigError


@dataclass(frozen=True)
class TimeGrid:
    """Output times ``0, dt_out, …, (frames - 1) · dt_out``; ``dt_out`` is ``stride`` solver steps ``dt``.

    Raises :class:`ConfigError` when ``frames`` is not an int >= 2 or ``dt_out`` is not a positive multiple
    of ``dt`` (:func:`~solvers.base.whole_multiple`).
    """

    dt: float
    dt_out: float
    frames: int

    def __post_init__(self) -> None:
        if not isinstance(self.frames, int) or isinstance(self.frames, bool) or self.frames < 2:
            raise ConfigError(
                f"frames={self.frames!r} is not allowed: give an int >= 2 frames per trajectory"
            )
        if whole_multiple(self.dt_out, self.dt) < 1:
            raise ConfigError(
                f"dt_out={self.dt_out!r} is not allowed: it must be a positive multiple of dt={self.dt!r}"
            )

    @classmethod
    def of_solver(cls, solver: Solver, frames: int) -> TimeGrid:
        """``frames`` frames at the solver's ``dt_out`` (:func:`output_interval`)."""
        return cls(solver.dt, output_interval(solver), frames)

    @classmethod
    def from_dict(cls, value: Any, what: str = "time_grid") -> TimeGrid:
        """The grid :meth:`to_dict` wrote; anything else raises :class:`ConfigError` naming ``what``."""
        keys = ("dt", "dt_out", "frames")
        if not isinstance(value, Mapping) or set(value) != set(keys):
            raise ConfigError(
                f"{what}={value!r} is not a time grid: give a mapping with keys {', '.join(keys)}"
            )
        return cls(float(value["dt"]), float(value["dt_out"]), value["frames"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def stride(self) -> int:
        """Solver steps ``dt`` per output interval ``dt_out``."""
        return whole_multiple(self.dt_out, self.dt)

    def times(self) -> Tensor:
        """The output times (float64); a solver's burn-in is integrated before ``t = 0``."""
        return torch.arange(self.frames, dtype=torch.float64) * self.dt_out

    def frames_per(self, interval: float) -> int:
        """Frames of this grid one step of ``interval`` spans (a positive multiple of ``dt_out``); else 0."""
        return whole_multiple(interval, self.dt_out)

    def spacing(self, params: Mapping[str, Tensor], batch: int) -> Tensor:
        """Each of ``batch`` trajectories' interval between frames (:func:`trajectory_steps` of ``dt_out``).
        The grid's times are the nominal ones; trajectory ``b``'s are ``s_b`` times them."""
        return trajectory_steps(self.dt_out, params, batch)

    def every(self, k: int) -> TimeGrid:
        """The grid of every ``k``-th frame (``k · dt_out`` apart)."""
        return TimeGrid(self.dt, k * self.dt_out, len(range(0, self.frames, k)))


def output_interval(solver: Solver) -> float:
    """The solver's ``dt_out``; a solver without one is refused, so that no data silently use one solver step."""
    if solver.dt_out is None:
        raise ConfigError(
            f"pde.dt_out is missing for {type(solver).__name__}: give the output interval (the model's time "
            f"step) in its conf/pde preset, a positive multiple of pde.dt={solver.dt:g}"
        )
    return solver.dt_out


def trajectory_steps(step: float, params: Mapping[str, Tensor], batch: int) -> Tensor:
    """The nominal ``step`` of each of ``batch`` trajectories, float64 ``[batch]``: ``s_b · step`` for the
    per-trajectory time scales ``params["time_scale"]`` (:data:`~solvers.base.RANGED_SETTINGS`), else ``step``."""
    if TIME_SCALE in params:
        return step * params[TIME_SCALE].double().reshape(batch).cpu()
    return torch.full((batch,), step, dtype=torch.float64)
