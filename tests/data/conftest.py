"""An exactly solvable solver for the data tests: periodic heat equation ``u_t = nu Δu`` in 1D or 2D.

In Fourier space ``û_k(t) = û_k(0) exp(-nu |k|² t)``, so every output is known in closed form. A
negative ``nu`` makes high wavenumbers grow like ``exp(|nu| |k|² t)``: those trajectories blow up,
which is how the tests produce diverging configurations.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from solvers.base import ParamValue, Solver, Stepper, wavenumbers


class Heat(Solver):
    """Heat equation on ``[0, length)^ndim`` with random low-mode initial conditions; frames 0.2 apart."""

    param_order = ("nu",)

    def __init__(
        self,
        n: int = 16,
        length: float = 2 * math.pi,
        dt: float = 0.1,
        dt_out: float | None = 0.2,
        ndim: int = 1,
        nu: ParamValue = (0.01, 0.1),
        burn_in: float = 0.0,
        blowup: float = 1e6,
    ) -> None:
        super().__init__(n=n, length=length, dt=dt, burn_in=burn_in, blowup=blowup, dt_out=dt_out)
        self.ndim = ndim
        self.add_param("nu", list(nu) if not isinstance(nu, int | float) else nu)
        k = wavenumbers(n, length)
        self.k2 = sum(g**2 for g in torch.meshgrid(*([k] * ndim), indexing="ij"))

    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        x = self.mesh()
        u = torch.zeros(batch, 1, *([self.n] * self.ndim), dtype=torch.float64)
        for mode in range(1, 4):
            a, phase = torch.randn(2, batch, generator=generator, dtype=torch.float64)
            arg = sum(mode * 2 * math.pi * xi / self.length for xi in x)
            u += a.reshape(-1, *([1] * (self.ndim + 1))) * torch.sin(
                arg + phase.reshape(-1, *([1] * (self.ndim + 1)))
            )
        return u

    def _to_state(self, u: Tensor) -> Tensor:
        return torch.fft.fftn(u, dim=tuple(range(2, 2 + self.ndim)))

    def _from_state(self, state: Tensor) -> Tensor:
        return torch.fft.ifftn(state, dim=tuple(range(2, 2 + self.ndim))).real

    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        nu = params["nu"].reshape(-1, *([1] * (self.ndim + 1)))
        k2 = self.k2.to(device=device, dtype=dtype)

        def step(state: Tensor, h: float) -> Tensor:
            return state * torch.exp(-nu * k2 * h)

        return step

    def exact(self, u0: Tensor, t: float, nu: Tensor) -> Tensor:
        """Closed-form solution at time ``t`` (after burn-in) from ``u0`` ``[B, 1, *S]``."""
        decay = torch.exp(-nu.reshape(-1, *([1] * (self.ndim + 1))) * self.k2 * (t + self.burn_in))
        return self._from_state(self._to_state(u0.double()) * decay)


@pytest.fixture
def heat1d() -> Heat:
    return Heat(n=16, dt=0.1, ndim=1)


@pytest.fixture
def heat2d() -> Heat:
    return Heat(n=8, dt=0.1, ndim=2)
