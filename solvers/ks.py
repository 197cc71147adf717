"""Kuramoto-Sivashinsky equation, pseudo-spectral ETDRK4.

    u_t + u u_x + u_xx + nu u_xxxx = 0,   x in [0, L) periodic,

written in Fourier space as ``v_t = Lin v + N(v)`` with ``v = rfft(u)``,
``Lin(k) = k^2 - nu k^4`` and ``N(v) = -(i k / 2) rfft(u^2)``. Time stepping is the fourth-order
exponential time-differencing Runge-Kutta scheme of Cox & Matthews (2002) with the coefficients
evaluated by the contour-integral method of Kassam & Trefethen (2005, SIAM J. Sci. Comput. 26(4),
1214-1233). The linear part is integrated exactly, so the step is limited by the nonlinear term only.

Dealiasing follows Orszag's 2/3 rule as a Galerkin truncation: the state keeps only the Fourier modes
``|k| < n/3`` (the initial field is projected on them, every ETDRK4 weight vanishes above), so the
product ``u^2`` formed on the ``n``-point grid is alias-free on the kept modes.

Units: ``x`` and ``length`` in the same length unit, ``t`` and ``dt`` in the time unit fixed by the
unit coefficient of ``u_xx``; ``nu`` has units length^2 (it sets the length scale ``sqrt(nu)`` and
the time scale ``nu``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from solvers.base import (
    ParamValue,
    Solver,
    Stepper,
    check_int,
    dealias_mask,
    random_sines,
    require,
)

STABLE_DT_PER_NU = 2.0
"""Largest allowed ``dt / nu``. Measured on the default grid (n = 256, L = 64, t = 400, 16
trajectories each): no blow-up up to ``dt / nu = 1.5``, the first at 2 (nu = 1), about half of them
at 3; larger steps are refused at construction. Accurate runs need much less (default ``dt = 0.25``)."""

_CACHED_STEP_SIZES = 4
"""Step sizes whose ETDRK4 coefficients are kept per ``solve`` call (output intervals of equal length
share one entry)."""

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def etdrk4_coefficients(z: Tensor, points: int = 32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ETDRK4 weights for real ``z = h * Lin``, divided by ``h``.

    Returns ``(Q, f1, f2, f3) / h`` with (Kassam & Trefethen 2005, eq. 2.5 and 26)

        Q  = (e^{z/2} - 1) / z
        f1 = (-4 - z + e^z (4 - 3z + z^2)) / z^3
        f2 = ( 2 + z + e^z (z - 2)) / z^3
        f3 = (-4 - 3z - z^2 + e^z (4 - z)) / z^3

    each evaluated as the mean over ``points`` points of the upper half of the unit circle centred at
    ``z`` (real part taken), which avoids the cancellation of the direct formulas near ``z = 0``.
    ``z`` must be float64; the result has its shape, device and dtype.
    """
    theta = math.pi * (torch.arange(points, device=z.device, dtype=torch.float64) + 0.5) / points
    r = torch.polar(torch.ones_like(theta), theta)
    zr = z.unsqueeze(-1) + r
    ez, z3 = torch.exp(zr), zr**3
    q = ((torch.exp(zr / 2) - 1) / zr).real.mean(-1)
    f1 = ((-4 - zr + ez * (4 - 3 * zr + zr**2)) / z3).real.mean(-1)
    f2 = ((2 + zr + ez * (zr - 2)) / z3).real.mean(-1)
    f3 = ((-4 - 3 * zr - zr**2 + ez * (4 - zr)) / z3).real.mean(-1)
    return q, f1, f2, f3


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
        self.modes = torch.fft.rfftfreq(self.n_solve, d=1.0 / self.n_solve).to(torch.float64)  # m = 0 … n/2
        self.dealias = dealias_mask(self.n_solve, real=True)

    # ----------------------------------------------------------------- initial condition
    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """A random sum of ``waves`` sines (:func:`~solvers.base.random_sines`), ``l_j`` in ``1..max_mode``
        (LPSDA's generator draws ``randint(1, 3)``, i.e. 1 or 2)."""
        return random_sines(
            batch, self.mesh(solve=True)[0], self.length, self.waves, self.max_mode, generator
        )

    # ----------------------------------------------------------------- state
    def _to_state(self, u: Tensor) -> Tensor:
        """Fourier coefficients, projected on the modes ``|k| < n/3``."""
        return torch.fft.rfft(u) * self.dealias.to(u.device)

    def _from_state(self, state: Tensor) -> Tensor:
        return torch.fft.irfft(state, n=self.n_solve)

    # ----------------------------------------------------------------- time stepping
    def _coefficients(self, params: dict[str, Tensor], h: float, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """ETDRK4 weights for the nominal step ``h``: ``(E, E2, Q g, (E2 - 1) Q g, 2 Q g, f1 g, 2 f2 g, f3 g)``.

        Each is ``[B, 1, K]`` complex with ``g = -i k / 2`` and zero on the modes ``|k| >= n/3``
        (Galerkin truncation); trajectory ``b`` has ``k = 2π m / L_b`` and the step ``s_b · h``. Computed in
        float64 once per distinct ``(nu, L, s)``, then cast to the complex type of ``dtype``.
        """
        nu = params["nu"].to(torch.float64)
        length = params.get("length", torch.full_like(nu, self.length)).to(torch.float64)
        scale = params.get("time_scale", torch.ones_like(nu)).to(torch.float64)
        values, inverse = torch.unique(torch.stack([nu, length, scale], -1), dim=0, return_inverse=True)
        nu, length, scale = values.T.unsqueeze(-1)  # [U, 1] each
        device, step = nu.device, h * scale
        kept = int(self.dealias.sum())
        k = (torch.full_like(length, 2 * math.pi) / length) * self.modes[:kept].to(device)  # as wavenumbers()
        z = step * (k**2 - nu * k**4)
        q, f1, f2, f3 = etdrk4_coefficients(z, self.contour_points)
        g = (-0.5j * step) * k
        e2 = torch.exp(z / 2)
        qg = q * g
        weights = torch.stack([e2 * e2, e2, qg, (e2 - 1) * qg, 2 * qg, f1 * g, 2 * f2 * g, f3 * g])
        full = torch.zeros((*weights.shape[:2], self.modes.numel()), dtype=_COMPLEX[dtype], device=device)
        full[..., :kept] = weights
        return tuple(w[inverse].unsqueeze(1) for w in full)

    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        require(dtype in _COMPLEX, f"dtype={dtype}: KuramotoSivashinsky runs in {sorted(map(str, _COMPLEX))}")
        cache: OrderedDict[float, tuple[Tensor, ...]] = OrderedDict()
        n = self.n_solve

        def nonlinear(v: Tensor) -> Tensor:
            """``rfft(u^2)``; the factor ``-ik/2`` and the 2/3 rule are folded into the weights."""
            return torch.fft.rfft(torch.fft.irfft(v, n=n).square_())

        def step(v: Tensor, h: float) -> Tensor:
            """One ETDRK4 step (Cox & Matthews 2002, eq. 26), using ``E2 a = E v + E2 Q N(v)``."""
            key = float(f"{h:.12g}")
            if key not in cache:
                cache[key] = self._coefficients(params, h, dtype)
                if len(cache) > _CACHED_STEP_SIZES:
                    cache.popitem(last=False)
            e, e2, q, p, q2, f1, f2, f3 = cache[key]
            nv = nonlinear(v)
            e2v = e2 * v
            na = nonlinear(torch.addcmul(e2v, q, nv))
            nb = nonlinear(torch.addcmul(e2v, q, na))
            ev = e * v
            nc = nonlinear(torch.addcmul(ev, p, nv).addcmul_(q2, nb))
            out = torch.addcmul(ev, f1, nv).addcmul_(f2, na).addcmul_(f2, nb)
            return out.addcmul_(f3, nc)

        return step
