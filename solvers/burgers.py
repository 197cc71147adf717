"""The 1D viscous Burgers equation ``u_t + (u²/2)_x = ν u_xx`` on the periodic interval ``[0, L)``.

Two methods, chosen per preset with ``method``:

* ``weno5`` (default): shock-capturing finite differences with CFL-safe sub-steps, for any ``ν >= 0``;
* ``spectral``: pseudo-spectral ETDRK4 (:mod:`solvers.spectral`, the scheme of the KS solver with
  ``Lin(k) = -ν k²``), the diffusion integrated exactly, for smooth viscous regimes (the FNO benchmark's
  ``ν = 0.1``), where the explicit path is diffusion-limited to ``ν h / Δx² <= 1/4`` (about 10^5 sub-steps per
  time unit on 8192 points). Its step ``dt`` is set by accuracy alone; shocks it does not resolve ring
  (Gibbs) instead of being captured.

``weno5`` discretisation (method of lines on the point values ``u_i = u(i Δx)``):

* advection: conservative finite differences (Shu & Osher 1989) with the global Lax-Friedrichs
  flux splitting ``f± = (u²/2 ± α u) / 2``, ``α = max_x |u|`` per trajectory, and fifth-order WENO
  reconstruction of ``f+`` (left-biased) and ``f-`` (right-biased) at ``x_{i+1/2}`` with the
  smoothness indicators and linear weights ``(1/10, 6/10, 3/10)`` of Jiang & Shu (1996), ``ε = 1e-6``;
* diffusion: the fourth-order flux ``ν (u_{i-1} - 15 u_i + 15 u_{i+1} - u_{i+2}) / (12 Δx)``, whose
  difference is the five-point stencil ``(-1, 16, -30, 16, -1) / (12 Δx²)`` for ``u_xx``;
* time: the three-stage SSP Runge-Kutta method of Shu & Osher (1988).

Both fluxes are combined into one numerical flux, so ``Σ_i u_i`` (the mass ``∫u dx / Δx``) changes only
by round-off. Smooth solutions converge with spatial order four (the diffusion stencil; WENO5 itself is
fifth order); shocks at small ``ν`` stay essentially non-oscillatory.

Sub-steps: by the maximum principle ``max|u(t)| <= max|u0|``, so the sub-step size is fixed once per
solve and trajectory from ``u0`` and ``ν``: every sub-step ``h`` satisfies
``h (max|u0| / (cfl Δx) + ν / (D Δx²)) <= 1`` with ``D = 1/4``. (The stencil's most negative eigenvalue is
``-16/3 ν/Δx²`` and SSP-RK3 is stable on the negative real axis down to ``-2.51``, so pure diffusion
would allow ``D <= 0.47``; the sum keeps the combined spectrum inside the stability region.) Each
trajectory takes its own number of equal sub-steps, so a batched solve equals per-trajectory solves
exactly: a trajectory never depends on the others in its batch.

Initial conditions (``ic``):

* ``sines`` (Brandstetter, Worrall & Welling 2022, *Message passing neural PDE solvers*, ICLR):
``u0 = Σ_{j=1..J} A_j sin(2π l_j x / L + φ_j)`` with ``A_j ~ U[-1/2, 1/2]``, ``l_j ∈ {1, …, max_mode}``
uniformly, ``φ_j ~ U[0, 2π)``, ``J = waves``; here rescaled to ``max|u0| = 1``, so that the Reynolds number of a
trajectory is ``L / ν``. The default domain ``L = 2π`` is that of the Burgers data of
Brandstetter et al. (2022, *Lie point symmetry data augmentation for neural PDE solvers*, ICML), which
the exact Cole-Hopf solutions of the tests also use.

* ``grf``: the Gaussian random field ``N(0, ic_scale (−Δ + ic_tau² I)^{−ic_alpha})``
  (:func:`~solvers.base.gaussian_random_field`, mean mode included); the FNO paper's Burgers data
  (Li et al., ICLR 2021, Section 5.1) draw ``u0 ~ N(0, 625 (−Δ + 25 I)^{−2})`` on the unit interval:
  ``ic_scale = 625``, ``ic_tau = 5``, ``ic_alpha = 2`` (``conf/pde/burgers_fno.yaml``), whose constant
  mode has variance 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from solvers.base import ParamValue, Solver, Stepper, gaussian_random_field, random_sines
from solvers.errors import ConfigError, check_choice, check_int, check_number, require
from solvers.spectral import ConservativeETDRK4

METHODS = ("weno5", "spectral")
"""Allowed values of the ``method`` key."""

INITIAL_CONDITIONS = ("sines", "grf")
"""Allowed values of the ``ic`` key."""

DIFFUSION_LIMIT = 0.25
"""Largest ``ν h / Δx²`` of one sub-step (see the module docstring)."""

MAX_SUBSTEPS = 10**6
"""Most sub-steps allowed per internal step ``dt``; more means the configuration cannot work."""

WENO_EPS = 1e-6
"""Jiang & Shu's ε in the nonlinear weights ``d_k / (ε + β_k)²``."""


class Burgers(Solver):
    """Viscous Burgers equation ``u_t + (u²/2)_x = ν u_xx`` on ``[0, length)``, periodic.

    Args:
        n: grid points.
        length: domain length ``L`` (default ``2π``).
        dt: largest internal step: ``weno5`` splits each further into CFL-safe SSP-RK3 sub-steps,
            ``spectral`` takes it as its ETDRK4 step.
        dt_out: interval between stored frames, a multiple of ``dt`` (see :class:`~solvers.base.Solver`).
        nu: viscosity ``ν >= 0`` (units length²/time): a number, ``[low, high]`` or ``[low, high, "log"]``.
        cfl: advective Courant number ``max|u| h / Δx`` of a sub-step, in ``(0, 1]``.
        burn_in: time integrated before ``t = 0``.
        blowup: ``max|u|`` above which a trajectory counts as diverged.
        waves: number ``J`` of sine waves in the ``sines`` initial condition.
        max_mode: largest wavenumber ``l_j`` (periods per domain) of those waves.
        n_solve: cells of the integration (a multiple of ``n``; see :class:`~solvers.base.Solver`).
        method: one of :data:`METHODS`.
        ic: initial condition, one of :data:`INITIAL_CONDITIONS`.
        ic_scale, ic_tau, ic_alpha: the ``grf`` covariance ``ic_scale (−Δ + ic_tau² I)^{−ic_alpha}``
            (``ic_alpha > 1/2`` for a finite variance in 1D).
        ic_zero_mean: drop the ``grf``'s constant mode (the reference FNO generator ``GRF1.m`` does).
        contour_points: points on the half circle of the ETDRK4 contour integrals (``spectral``).
    """

    param_order = ("nu",)
    channel_units: ClassVar[Mapping[str, str]] = {"u": "length units/time unit"}  # a velocity
    param_meanings: ClassVar[Mapping[str, tuple[str, str]]] = {
        **Solver.param_meanings,
        "nu": ("viscosity ν", "length units²/time unit"),
    }

    def __init__(
        self,
        n: int = 256,
        length: float = 2 * math.pi,
        dt: float = 0.05,
        dt_out: float | None = None,
        nu: ParamValue = (1e-3, 5e-2, "log"),
        cfl: float = 0.4,
        burn_in: float = 0.0,
        blowup: float = 100.0,
        waves: int = 5,
        max_mode: int = 3,
        n_solve: int | None = None,
        method: str = "weno5",
        ic: str = "sines",
        ic_scale: float = 625.0,
        ic_tau: float = 5.0,
        ic_alpha: float = 2.0,
        ic_zero_mean: bool = False,
        contour_points: int = 32,
    ) -> None:
        super().__init__(n, length, dt, burn_in, blowup, n_solve, dt_out)
        check_number("cfl", cfl, low=0, high=1, low_open=True)
        check_int("waves", waves, 1)
        check_int("max_mode", max_mode, 1, n // 2 - 1)
        check_choice("method", method, METHODS)
        check_choice("ic", ic, INITIAL_CONDITIONS)
        check_number("ic_scale", ic_scale, low=0, low_open=True)
        check_number("ic_tau", ic_tau, low=0, low_open=True)
        check_number("ic_alpha", ic_alpha, low=0.5, low_open=True)
        check_int("contour_points", contour_points, 8)
        self.add_param("nu", nu)
        require(self.params["nu"].low >= 0, f"nu={nu!r} is not allowed: the viscosity must be >= 0")
        self.cfl, self.waves, self.max_mode = float(cfl), waves, max_mode
        self.method, self.ic = method, ic
        self.ic_scale, self.ic_tau, self.ic_alpha = float(ic_scale), float(ic_tau), float(ic_alpha)
        require(
            isinstance(ic_zero_mean, bool),
            f"ic_zero_mean={ic_zero_mean!r} is not allowed; allowed: true, false",
        )
        self.ic_zero_mean = ic_zero_mean
        self.contour_points = contour_points
        if method == "spectral":
            require(
                self.params["nu"].low > 0,
                f"nu={nu!r} is not allowed with method=spectral: it needs nu > 0 (a viscous, smooth regime); "
                "use method=weno5 for inviscid or shock-forming flows",
            )
            self.scheme = ConservativeETDRK4(self.n_solve, _burgers_operator, contour_points)
        elif ic == "sines":  # these initial conditions have max|u0| = 1
            self.substeps(self.dt, speed=1.0, nu=self.params["nu"].high)

    @property
    def work_fields(self) -> float:
        """``weno5``: three SSP-RK3 stages and, per stage, the padded field, the split fluxes and a dozen WENO5
        stencil terms (measured: 52 per trajectory at n = 2^18, 52-72 at n = 4096); ``spectral``: the ETDRK4
        work of :class:`~solvers.ks.KuramotoSivashinsky` (measured: 14-21 at n = 4096)."""
        return 56.0 if self.method == "weno5" else 24.0

    def substeps(self, h: float, speed: float, nu: float) -> int:
        """Equal SSP-RK3 sub-steps needed to advance by ``h`` at ``max|u| = speed`` and viscosity ``nu``.

        Raises:
            ConfigError: more than :data:`MAX_SUBSTEPS` would be needed.
        """
        rate = speed / (self.cfl * self.dx_solve) + nu / (DIFFUSION_LIMIT * self.dx_solve**2)
        count = max(1, math.ceil(h * rate - 1e-9))
        if count > MAX_SUBSTEPS:
            raise ConfigError(
                f"Burgers with n_solve={self.n_solve}, length={self.length:g}, dt={h:g}, nu={nu:g}, max|u|={speed:g}, "
                f"cfl={self.cfl:g} needs {count} sub-steps per step (at most {MAX_SUBSTEPS} allowed): "
                "lower dt, n_solve or nu"
            )
        return count

    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        if self.ic == "grf":
            return gaussian_random_field(
                batch,
                self.n_solve,
                self.length,
                1,
                self.ic_scale,
                self.ic_tau,
                self.ic_alpha,
                generator,
                zero_mean=self.ic_zero_mean,
            )
        u = random_sines(batch, self.mesh(solve=True)[0], self.length, self.waves, self.max_mode, generator)
        return u / u.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)

    def _to_state(self, u: Tensor) -> Tensor:
        """``spectral``: all Fourier coefficients, so that frame 0 is ``u0`` itself (the FNO data's input); the
        modes ``|k| >= n/3`` vanish in the first step, whose weights are zero there (Galerkin truncation)."""
        return torch.fft.rfft(u) if self.method == "spectral" else u

    def _from_state(self, state: Tensor) -> Tensor:
        return self.scheme.from_state(state) if self.method == "spectral" else state

    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        nu = params["nu"].tolist()
        if min(nu) < 0:
            raise ConfigError(f"parameter nu must be >= 0, got min {min(nu):g}")
        if self.method == "spectral":
            viscosity = params["nu"].to(torch.float64)
            ones = torch.ones_like(viscosity)
            return self.scheme.stepper(viscosity[:, None], self.length * ones, ones, dtype)
        viscosity = params["nu"].reshape(-1, 1, 1)
        speed: list[float] = []  # max|u0| per trajectory, read once on the first step (maximum principle)
        plans: dict[float, tuple[int, Tensor, Tensor | None]] = {}

        def plan(h: float) -> tuple[int, Tensor, Tensor | None]:
            """Sub-steps per trajectory: the most of them, each one's size, and who is still active."""
            if h not in plans:
                counts = [self.substeps(h, s, v) for s, v in zip(speed, nu, strict=True)]
                sizes = torch.tensor([h / c for c in counts], device=device, dtype=dtype).reshape(-1, 1, 1)
                uneven = min(counts) < max(counts)
                active = torch.tensor(counts, device=device).reshape(-1, 1, 1) if uneven else None
                plans[h] = max(counts), sizes, active
            return plans[h]

        def rhs(u: Tensor) -> Tensor:
            flux = _flux(u, viscosity, self.dx_solve)
            return (flux.roll(1, dims=-1) - flux) / self.dx_solve

        def step(u: Tensor, h: float) -> Tensor:
            if not speed:
                speed.extend(u.reshape(u.shape[0], -1).abs().amax(dim=1).tolist())
                if not all(map(math.isfinite, speed)):
                    raise ConfigError("u0 contains non-finite values")
            count, k, counts = plan(h)
            for i in range(count):
                u1 = u + k * rhs(u)
                u2 = 0.75 * u + 0.25 * (u1 + k * rhs(u1))
                u3 = u / 3 + (2 / 3) * (u2 + k * rhs(u2))
                # A trajectory that needs fewer sub-steps than the slowest one stops after its own count.
                u = u3 if counts is None else torch.where(counts > i, u3, u)
            return u

        return step


def _burgers_operator(k: Tensor, nu: Tensor) -> Tensor:
    """``Lin(k) = -ν k²`` for rows of ``ν`` ``[U, 1]``."""
    return -nu * k**2


def _flux(u: Tensor, viscosity: Tensor, dx: float) -> Tensor:
    """Numerical flux at ``x_{i+1/2}``: WENO5 Lax-Friedrichs advective flux minus the diffusive flux."""
    n = u.shape[-1]
    alpha = u.abs().amax(dim=-1, keepdim=True)
    # padded[p] = u[p - 3] (periodic), p = 0 … n + 6.
    padded = torch.cat([u[..., -3:], u, u[..., :4]], dim=-1)
    flux, wave = 0.25 * padded**2, 0.5 * alpha * padded
    # f+ is reconstructed from the left (stencil u[i-2 … i+2] for the face i+1/2). f- from the right, i.e.
    # from u[i+3 … i-1]: flipping f- turns that into the same left-biased stencil, at the same offsets.
    split = torch.stack([flux + wave, (flux - wave).flip(-1)])
    faces = _weno5(*(split[..., s : s + n] for s in range(1, 6)))
    advective = faces[0] + faces[1].flip(-1)
    gradient = (
        padded[..., 2 : n + 2]
        - 15 * padded[..., 3 : n + 3]
        + 15 * padded[..., 4 : n + 4]
        - padded[..., 5 : n + 5]
    ) / (12 * dx)
    return advective - viscosity * gradient


def _weno5(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor) -> Tensor:
    """Jiang-Shu WENO5 value at the face between ``c`` and ``d`` from the upwind-first stencil ``a … e``."""
    q0 = (2 * a - 7 * b + 11 * c) / 6
    q1 = (-b + 5 * c + 2 * d) / 6
    q2 = (2 * c + 5 * d - e) / 6
    beta0 = 13 / 12 * (a - 2 * b + c) ** 2 + 0.25 * (a - 4 * b + 3 * c) ** 2
    beta1 = 13 / 12 * (b - 2 * c + d) ** 2 + 0.25 * (b - d) ** 2
    beta2 = 13 / 12 * (c - 2 * d + e) ** 2 + 0.25 * (3 * c - 4 * d + e) ** 2
    w0 = 0.1 / (WENO_EPS + beta0) ** 2
    w1 = 0.6 / (WENO_EPS + beta1) ** 2
    w2 = 0.3 / (WENO_EPS + beta2) ** 2
    return (w0 * q0 + w1 * q1 + w2 * q2) / (w0 + w1 + w2)
