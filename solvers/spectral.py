"""Pseudo-spectral ETDRK4 for 1D periodic equations ``u_t = Lin u - (u²/2)_x`` (KS, viscous Burgers).

In Fourier space, ``v = rfft(u)``: ``v_t = Lin(k) v + N(v)`` with a diagonal linear operator ``Lin(k)``
(``k² - ν k⁴`` for Kuramoto-Sivashinsky, ``-ν k²`` for Burgers) and the conservative quadratic advection
``N(v) = -(i k / 2) rfft(u²)``. Time stepping is the fourth-order exponential time-differencing Runge-Kutta
scheme of Cox & Matthews (2002) with the coefficients evaluated by the contour-integral method of Kassam &
Trefethen (2005, SIAM J. Sci. Comput. 26(4), 1214-1233): the linear part is integrated exactly, so the step
is limited by the nonlinear term only.

Dealiasing follows Orszag's 2/3 rule as a Galerkin truncation: every ETDRK4 weight vanishes on the Fourier
modes ``|k| >= n/3``, so after the first step the state holds only the modes below and the product ``u²``
formed on the ``n``-point grid is alias-free on them. :meth:`ConservativeETDRK4.to_state` projects the
initial field on those modes too (KS); a solver that keeps the whole initial field as its frame 0 (Burgers)
lets its first step see the higher modes' products.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from solvers.base import Stepper, dealias_mask
from solvers.errors import require

LinearOperator = Callable[[Tensor, Tensor], Tensor]
"""``(k [U, K], coefficients [U, P]) -> Lin [U, K]``: the linear operator at the angular wavenumbers ``k`` of
``U`` distinct trajectories, from their rows of coefficients (float64)."""

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


class ConservativeETDRK4:
    """ETDRK4 for ``v_t = Lin(k) v - (i k / 2) rfft(u²)`` on an ``n``-point periodic grid.

    Each trajectory ``b`` has its own domain length ``L_b`` (wavenumbers ``k = 2π m / L_b``), time scale
    ``s_b`` (its steps are ``s_b · h``) and row of linear-operator coefficients; the weights are computed in
    float64 once per distinct row and step size, then cast to the complex type of the state.

    Args:
        n: grid points of the integration (even).
        linear: the operator ``Lin`` (:data:`LinearOperator`).
        contour_points: points on the half circle of the contour integrals.
    """

    def __init__(self, n: int, linear: LinearOperator, contour_points: int = 32) -> None:
        self.n, self.linear, self.contour_points = n, linear, contour_points
        self.modes = torch.fft.rfftfreq(n, d=1.0 / n).to(torch.float64)  # m = 0 … n/2
        self.dealias = dealias_mask(n, real=True)

    def to_state(self, u: Tensor) -> Tensor:
        """Fourier coefficients, projected on the modes ``|k| < n/3``."""
        return torch.fft.rfft(u) * self.dealias.to(u.device)

    def from_state(self, state: Tensor) -> Tensor:
        return torch.fft.irfft(state, n=self.n)

    def weights(
        self, coefficients: Tensor, length: Tensor, scale: Tensor, h: float, dtype: torch.dtype
    ) -> tuple[Tensor, ...]:
        """``(E, E2, Q g, (E2 - 1) Q g, 2 Q g, f1 g, 2 f2 g, f3 g)`` for the nominal step ``h``, each
        ``[B, 1, K]`` complex with ``g = -i k / 2`` and zero on the modes ``|k| >= n/3``.

        ``coefficients`` ``[B, P]``, ``length`` and ``scale`` ``[B]``: each trajectory's operator coefficients,
        domain length and time scale.
        """
        rows = torch.cat([coefficients, length[:, None], scale[:, None]], dim=-1).to(torch.float64)
        values, inverse = torch.unique(rows, dim=0, return_inverse=True)
        length, scale = values[:, -2:].T.unsqueeze(-1)  # [U, 1] each
        step = h * scale
        kept = int(self.dealias.sum())
        k = (torch.full_like(length, 2 * math.pi) / length) * self.modes[:kept].to(values.device)
        z = step * self.linear(k, values[:, :-2])
        q, f1, f2, f3 = etdrk4_coefficients(z, self.contour_points)
        g = (-0.5j * step) * k
        e2 = torch.exp(z / 2)
        qg = q * g
        weights = torch.stack([e2 * e2, e2, qg, (e2 - 1) * qg, 2 * qg, f1 * g, 2 * f2 * g, f3 * g])
        full = torch.zeros((*weights.shape[:2], self.modes.numel()), dtype=_COMPLEX[dtype], device=k.device)
        full[..., :kept] = weights
        return tuple(w[inverse].unsqueeze(1) for w in full)

    def stepper(self, coefficients: Tensor, length: Tensor, scale: Tensor, dtype: torch.dtype) -> Stepper:
        """``step(v, h)``: one ETDRK4 step of the state ``v`` ``[B, 1, K]`` (see :meth:`weights` for the
        arguments)."""
        require(dtype in _COMPLEX, f"dtype={dtype}: spectral solvers run in {sorted(map(str, _COMPLEX))}")
        cache: OrderedDict[float, tuple[Tensor, ...]] = OrderedDict()
        n = self.n

        def nonlinear(v: Tensor) -> Tensor:
            """``rfft(u^2)``; the factor ``-ik/2`` and the 2/3 rule are folded into the weights."""
            return torch.fft.rfft(torch.fft.irfft(v, n=n).square_())

        def step(v: Tensor, h: float) -> Tensor:
            """One ETDRK4 step (Cox & Matthews 2002, eq. 26), using ``E2 a = E v + E2 Q N(v)``."""
            key = float(f"{h:.12g}")
            if key not in cache:
                cache[key] = self.weights(coefficients, length, scale, h, dtype)
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
