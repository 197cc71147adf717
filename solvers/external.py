"""Data no pdestream solver makes: ``pde=external`` describes its grid, fields and parameters, nothing more.

A The Well set of another PDE (scalar and vector fields on a square grid) or any foreign file trains with
``data=offline`` under this description: the file is checked against it (fields, grid, frame interval,
domain length) as against any solver's. It cannot solve: the online stream, ``python -m data.generate`` and
the evaluation's classical-solver rows refuse or leave it out, saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from solvers.base import ParamValue, Solver, Stepper
from solvers.errors import ConfigError


class External(Solver):
    """The description of data another program made.

    Args:
        n: grid points per spatial dimension (a file with a multiple of it is subsampled).
        length: side of the domain.
        dt_out: the interval between frames the model steps (a multiple of the file's).
        ndim: spatial dimensions, 1 or 2.
        channels: the fields' names, in the file's order.
        params: ``{name: value or [low, high]}`` of the PDE parameters the file records per trajectory (a
            fixed value for one it does not record); the model is conditioned on the ranged ones.
        blowup: ``max |u|`` above which a rollout counts as blown up.
    """

    can_solve = False

    def __init__(
        self,
        n: int,
        length: float,
        dt_out: float,
        ndim: int = 1,
        channels: Sequence[str] = ("u",),
        params: Mapping[str, ParamValue] | None = None,
        blowup: float = 1e6,
    ) -> None:
        if ndim not in (1, 2):
            raise ConfigError(f"pde.ndim={ndim!r} is not allowed: give 1 or 2")
        if not channels or not all(isinstance(c, str) for c in channels):
            raise ConfigError(f"pde.channels={channels!r} is not allowed: give the fields' names, e.g. [u]")
        self.ndim, self.channels = ndim, tuple(channels)
        self.param_order = tuple(params or {})
        super().__init__(n=n, length=length, dt=dt_out, dt_out=dt_out, blowup=blowup)
        for name, value in (params or {}).items():
            self.add_param(name, value)

    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        raise self.refusal("draw initial conditions")

    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        raise self.refusal("solve")

    @staticmethod
    def refusal(what: str) -> ConfigError:
        return ConfigError(
            f"pde=external describes data no pdestream solver makes, so it cannot {what}: train on the files "
            "with data=offline (and give a solver's pde preset to stream or generate)"
        )

    @classmethod
    def param_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(config.get("params") or {})

    @classmethod
    def fields_of(cls, config: Mapping[str, Any]) -> tuple[int, tuple[str, ...]]:
        return int(config.get("ndim", 1)), tuple(config.get("channels") or ("u",))
