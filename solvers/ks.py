"""Kuramoto-Sivashinsky equation, pseudo-spectral ETDRK4 (:mod:`solvers.spectral`).

    u_t + u u_x + u_xx + nu u_xxxx = 0,   x in [0, L) periodic,

written in Fourier space as ``v_t = Lin v + N(v)`` with ``v = rfft(u)``, ``Lin(k) = k^2 - nu k^4`` and
``N(v) = -(i k / 2) rfft(u^2)``, integrated by ETDRK4 with Kassam & Trefethen's contour-integral
coefficients and the 2/3 rule as a Galerkin truncation.

Units: ``x`` and ``length`` in the same length unit, ``t`` and ``dt`` in the time unit fixed by the
unit coefficient of ``u_xx``; ``nu`` has units length^2 (it sets the length scale ``sqrt(nu)`` and
the time scale ``nu``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from solvers.base import ParamValue, Solver, Stepper, random_sines
from solvers.errors import check_int, require
from solvers.spectral import ConservativeETDRK4

STABLE_DT_PER_NU = 2.0
"""Largest allowed ``dt / nu``. Measured on the default grid (n = 256, L = 64, t = 400, 16
trajectories each): no blow-up up to ``dt / nu = 1.5``, the first at 2 (nu = 1), about half of them
at 3; larger steps are refused at construction. Accurate runs need much less (default ``dt = 0.25``)."""


class KuramotoSivashinsky(Solver):
    """Batched 1D Kuramoto-Sivashinsky solver; each trajectory has its own ``nu``, and, given as ranges, its
    own domain length ``L`` and time scale ``s`` (:data:`~solvers.base.RANGED_SETTINGS`).

    Defaults: ``L = 64``, ``n = 256``, ``nu = 1``, the KS setup of Brandstetter et al. (2022, LPSDA) as used
    by PDE-Refiner (Lippe et al. 2023). Their generator (LPSDA ``generate/generate_data.py``) draws per
    trajectory ``L ~ U(0.9, 1.1) · 64`` and a duration ``T ~ U(0.9, 1.1) · 100`` over 500 frames
    ``T / 499`` apart, and keeps the last 140 (``conf/pde/ks_lpsda.yaml``: ``length: [57.6, 70.4]``,
    ``time_scale: [0.9, 1.1]`` on the nominal spacing ``dt_out = 100/499``); the conditional variant samples
    ``nu ~ U(0.5, 1.5)``. Trajectory ``b`` then has the wavenumbers ``2π m / L_b`` and the step ``s_b · h``:
    its ETDRK4 coefficients are its own (computed once per distinct ``(nu, L, s)``).

    Args:
        n: grid points (even, >= 8).
        length: domain length ``L``: a number, or ``[low, high]`` per trajectory (the grid is the midpoint's).
        dt: largest internal step. The default 0.25 (Kassam & Trefethen's h) is within ~1.5e-4 (t = 2)
            and ~1e-3 (t = 10) relative L2 error of dt = 1/512 from a chaotic state at nu = 1.
        dt_out: interval between stored frames, a multiple of ``dt`` (see :class:`~solvers.base.Solver`).
        nu: fourth-order (hyper-)viscosity: a number, ``[low, high]`` or ``[low, high, "log"]``.
        burn_in: time integrated before ``t = 0`` (transient dropped).
        blowup: ``max |u|`` above which a trajectory counts as diverged (solutions are O(nu^-1/2)).
        waves: number ``J`` of sine waves in the random initial condition.
        max_mode: the initial waves have integer wavenumbers ``l_j`` in ``1..max_mode``.
        contour_points: points on the half circle of the ETDRK4 contour integrals.
        n_solve: grid points of the integration (a multiple of ``n``; see :class:`~solvers.base.Solver`).
        time_scale: 1, or ``[low, high]``: trajectory ``b`` runs ``s_b`` times the nominal times (burn-in,
            output times and steps), so its frames are ``s_b · dt_out`` apart.

    The initial condition is drawn in grid units (``sin(2π l_j i / n + φ_j)`` at point ``i``), as LPSDA's
    ``sin(2π l_j x / L + φ_j)`` on ``x = i L / n``, so it does not depend on ``L``.
    """

    ndim = 1
    channels = ("u",)
    param_order = ("nu", "length", "time_scale")
    work_fields = 28.0
    """The state, eight ETDRK4 weights per trajectory, the stages and FFT buffers of a step (measured: 26 per
    trajectory at n = 2^20, up to 47 with the allocator's slack at n = 8192)."""
    channel_units: ClassVar[Mapping[str, str]] = {"u": "length units/time unit"}  # u_t + u u_x: a velocity
    param_meanings: ClassVar[Mapping[str, tuple[str, str]]] = {
        **Solver.param_meanings,
        "nu": (
            "hyper-viscosity ν (coefficient of u_xxxx)",
            "length units²",
        ),  # time scaled: u_xx has coefficient 1
    }

    def __init__(
        self,
        n: int = 256,
        length: ParamValue = 64.0,
        dt: float = 0.25,
        dt_out: float | None = None,
        nu: ParamValue = 1.0,
        burn_in: float = 72.0,
        blowup: float = 1e3,
        waves: int = 10,
        max_mode: int = 2,
        contour_points: int = 32,
        n_solve: int | None = None,
        time_scale: ParamValue = 1.0,
    ) -> None:
        super().__init__(n, length, dt, burn_in, blowup, n_solve, dt_out, time_scale)
        self.add_param("nu", nu, positive=True)
        nu_low, scale = self.params["nu"].low, self.max_time_scale
        require(
            dt * scale <= STABLE_DT_PER_NU * nu_low,
            f"dt={dt!r} is unstable for nu={nu!r}"
            + (f" and time_scale up to {scale:g}: dt * max(time_scale)" if scale != 1 else ": dt")
            + f" must be <= {STABLE_DT_PER_NU:g} * min(nu) = {STABLE_DT_PER_NU * nu_low:g}",
        )
        check_int("waves", waves, 1)
        check_int("max_mode", max_mode, 1, n // 3 - 1)
        check_int("contour_points", contour_points, 8)
        self.waves, self.max_mode, self.contour_points = waves, max_mode, contour_points
        self.scheme = ConservativeETDRK4(self.n_solve, _ks_operator, contour_points)

    # ----------------------------------------------------------------- initial condition
    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """A random sum of ``waves`` sines (:func:`~solvers.base.random_sines`), ``l_j`` in ``1..max_mode``
        (LPSDA's generator draws ``randint(1, 3)``, i.e. 1 or 2)."""
        return random_sines(
            batch, self.mesh(solve=True)[0], self.length, self.waves, self.max_mode, generator
        )

    # ----------------------------------------------------------------- state and time stepping
    def _to_state(self, u: Tensor) -> Tensor:
        return self.scheme.to_state(u)

    def _from_state(self, state: Tensor) -> Tensor:
        return self.scheme.from_state(state)

    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        """ETDRK4 with each trajectory's ``nu``, domain length ``L_b`` and time scale ``s_b``."""
        nu = params["nu"].to(torch.float64)
        length = params.get("length", torch.full_like(nu, self.length)).to(torch.float64)
        scale = params.get("time_scale", torch.ones_like(nu)).to(torch.float64)
        return self.scheme.stepper(nu[:, None], length, scale, dtype)


def _ks_operator(k: Tensor, nu: Tensor) -> Tensor:
    """``Lin(k) = k² - ν k⁴`` for rows of ``ν`` ``[U, 1]``."""
    return k**2 - nu * k**4
