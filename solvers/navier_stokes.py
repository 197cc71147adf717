"""2D incompressible Navier-Stokes in vorticity form on a periodic square (FNO data set, Kolmogorov flow).

Equation, on ``[0, L)^2`` with coordinates ``(x, y)`` (``indexing="ij"``, x first)::

    w_t + u·∇w = nu Δw + f − drag w,      u = (ψ_y, −ψ_x),      −Δψ = w.

Discretisation: Fourier pseudo-spectral (``rfft2``) with Orszag's 2/3 rule (inputs and products truncated,
so the kept modes are alias-free). Advection in Basdevant's form (J. Comput. Phys. 50, 1983), which for a
divergence-free ``u`` equals ``∂_x(u w) + ∂_y(v w)``::

    u·∇w = (∂_x² − ∂_y²)(u v) + ∂_x ∂_y (v² − u²),

so a right-hand side costs two inverse transforms (u, v) and two forward ones (u v, v² − u²), one fewer than
the conservative form's three and two; being alias-free, both give the same kept modes.

Time stepping: fourth-order integrating-factor Runge-Kutta (IFRK4, see Trefethen, *Spectral Methods in
MATLAB*, 2000, program 27; Kassam & Trefethen 2005): the linear part
``−nu |k|^2 − drag`` is integrated exactly, advection and forcing explicitly with classical RK4.
Global order 4 in time; the linear part imposes no step limit, advection imposes a CFL limit
(RK4's imaginary-axis stability bound 2√2 with the dealiased ``k_max = 2π/(3 dx)`` gives
``h (|u| + |v|)_max / dx <= 1.35``, with the dealiased velocity). Each trajectory keeps to it by itself:
within every internal step of at most ``dt``, before each sub-step, it splits what is left of the step into
the fewest equal shares its current velocity allows at a Courant number ``<= cfl``, and takes one. The speed
comes from the fields of the sub-step's first RK4 stage, so checking it costs no transform. A trajectory's
result never depends on the other trajectories of its batch, and ``dt`` caps the step for accuracy; it
does not set stability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from solvers.base import ParamValue, Solver, Stepper, dealias_mask, gaussian_random_field, wavenumbers
from solvers.errors import ConfigError, check_choice, check_int, check_number, require

FORCINGS = ("fno", "kolmogorov", "none")
"""Allowed values of the ``forcing`` key."""
INITIAL_CONDITIONS = ("grf",)
"""Allowed values of the ``ic`` key."""
_DEFAULT_FORCING = {"fno": (0.1, 1), "kolmogorov": (1.0, 4)}
"""Default ``(forcing_amplitude, forcing_wavenumber)`` per forcing kind."""
MAX_SUBSTEPS = 1000
"""Most CFL sub-steps one internal step may need; beyond it the configuration is refused as too costly."""
MAX_CFL = 2 * math.sqrt(2) * 3 / (2 * math.pi)
"""RK4 is stable on the imaginary axis up to ``|λ h| = 2√2``; dealiased advection has
``|λ| <= (|u| + |v|) 2π / (3 dx)``, so ``h (|u| + |v|) / dx <= 1.35``."""


class NavierStokes2D(Solver):
    """Vorticity ``w`` of 2D incompressible flow, one channel, state ``[B, 1, n, n]``.

    Forcing (vorticity source ``f``, ``A`` = ``forcing_amplitude``, ``m`` = ``forcing_wavenumber``):

    * ``"fno"``: ``f = A (sin(2π m (x + y)/L) + cos(2π m (x + y)/L))``; with ``L = 1, A = 0.1, m = 1`` this
      is the forcing of the FNO Navier-Stokes data set (Li et al., ICLR 2021);
    * ``"kolmogorov"``: ``f = A sin(2π m y / L)``, e.g. ``sin(4y)`` for ``L = 2π, m = 4``;
    * ``"none"``: ``f = 0`` (decaying turbulence).

    Initial condition ``"grf"``: the Gaussian random field ``N(0, σ^2 (−Δ + τ^2)^{−α})`` of the FNO
    generator with ``σ = τ^{α − 1}``, normalised as there: the unnormalised DFT coefficients have
    ``E|ŵ_k|^2 = 2 σ^2 n^4 (κ^2 + τ^2)^{−α}`` with ``κ = 2π|k|/L`` and ``ŵ_0 = 0`` (FNO: ``α = 2.5``,
    ``τ = 7``, ``L = 1``, i.e. the covariance ``7^{3/2} (−Δ + 49 I)^{−2.5}`` of the paper).

    PDE parameters (one value per trajectory): ``nu`` (> 0), ``drag`` (>= 0) and, unless the forcing
    is ``"none"``, ``forcing_amplitude``.

    Args:
        n: grid points per dimension (even, >= 8).
        length: side ``L`` of the periodic square.
        dt: largest internal time step (time units of the equation).
        dt_out: interval between stored frames, a multiple of ``dt`` (see :class:`~solvers.base.Solver`).
        nu: kinematic viscosity: number, ``[low, high]`` or ``[low, high, "log"]``.
        drag: linear (Rayleigh) drag coefficient, same forms, >= 0.
        forcing: one of :data:`FORCINGS`.
        forcing_amplitude: ``A`` above (same forms); default 0.1 for ``"fno"``, 1 for ``"kolmogorov"``.
        forcing_wavenumber: integer mode number ``m`` (``1 <= m < n/3``); default 1 (fno), 4 (kolmogorov).
        ic: initial condition, one of :data:`INITIAL_CONDITIONS`.
        ic_alpha: GRF smoothness ``α`` (> 1 for a finite variance in 2D).
        ic_tau: GRF inverse correlation length ``τ`` (> 0, same units as the wavenumber ``κ``).
        burn_in: time integrated before ``t = 0`` (spin-up of forced turbulence).
        blowup: ``max |w|`` above which a trajectory counts as diverged.
        cfl: largest Courant number ``h (|u| + |v|)_max / dx`` of a sub-step (at most :data:`MAX_CFL` = 1.35).
        n_solve: grid points per dimension of the integration (a multiple of ``n``; the FNO data set: 256
            for ``n = 64``); initial conditions and forcing live on it, outputs keep every ``n_solve/n``-th point.
    """

    ndim = 2
    channels = ("vorticity",)
    param_order = ("nu", "drag", "forcing_amplitude")
    work_fields = 26.0
    """The state, the per-trajectory linear operator and forcing, four RK4 stages and the velocity and product
    fields of a step (measured: 24 per trajectory at n = 2048, 25-48 with the allocator's slack at n = 256)."""
    channel_units: ClassVar[Mapping[str, str]] = {"vorticity": "1/time unit"}  # ω = ∂v/∂x − ∂u/∂y
    param_meanings: ClassVar[Mapping[str, tuple[str, str]]] = {
        **Solver.param_meanings,
        "nu": ("kinematic viscosity ν", "length units²/time unit"),
        "drag": ("linear drag", "1/time unit"),
        "forcing_amplitude": ("forcing amplitude A (vorticity source)", "1/time units²"),
    }

    @classmethod
    def param_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        """``nu``, ``drag`` and, unless ``forcing`` is ``none``, ``forcing_amplitude``."""
        forced = config.get("forcing", "fno") != "none"
        return cls.param_order if forced else cls.param_order[:2]

    def __init__(
        self,
        n: int,
        length: float,
        dt: float,
        dt_out: float | None = None,
        nu: ParamValue = 1e-3,
        drag: ParamValue = 0.0,
        forcing: str = "fno",
        forcing_amplitude: ParamValue | None = None,
        forcing_wavenumber: int | None = None,
        ic: str = "grf",
        ic_alpha: float = 2.5,
        ic_tau: float = 7.0,
        burn_in: float = 0.0,
        blowup: float = 1e6,
        cfl: float = 1.0,
        n_solve: int | None = None,
    ) -> None:
        super().__init__(n, length, dt, burn_in, blowup, n_solve, dt_out)
        check_choice("forcing", forcing, FORCINGS)
        check_choice("ic", ic, INITIAL_CONDITIONS)
        check_number("ic_alpha", ic_alpha, low=1, low_open=True)
        check_number("ic_tau", ic_tau, low=0, low_open=True)
        require(
            isinstance(cfl, int | float) and 0 < cfl <= MAX_CFL,
            f"cfl={cfl!r}: must be in (0, {MAX_CFL:.2f}] (RK4 stability bound for dealiased advection)",
        )
        self.forcing, self.ic = forcing, ic
        self.ic_alpha, self.ic_tau, self.cfl = float(ic_alpha), float(ic_tau), float(cfl)
        self.add_param("nu", nu, positive=True)
        self.add_param("drag", drag)
        require(self.params["drag"].low >= 0, f"drag={drag!r} is not allowed: drag must be >= 0")

        fine = self.n_solve
        kx = wavenumbers(fine, self.length)[:, None]
        ky = wavenumbers(fine, self.length, real=True)[None, :]
        self._kx, self._ky = kx, ky
        self._k_sq = kx**2 + ky**2
        self._inv_k_sq = torch.where(self._k_sq > 0, 1.0 / self._k_sq.clamp_min(1e-300), 0.0)
        self._mask = (dealias_mask(fine)[:, None] & dealias_mask(fine, real=True)[None, :]).to(torch.float64)
        self._forcing_hat: Tensor | None = None
        if forcing != "none":
            default_amplitude, default_wavenumber = _DEFAULT_FORCING[forcing]
            m = default_wavenumber if forcing_wavenumber is None else forcing_wavenumber
            check_int("forcing_wavenumber", m, 1, (n - 1) // 3)  # resolved modes: m < n/3
            self.add_param(
                "forcing_amplitude", default_amplitude if forcing_amplitude is None else forcing_amplitude
            )
            x, y = self.mesh(solve=True)
            phase = 2 * math.pi * m / self.length
            pattern = (
                torch.sin(phase * (x + y)) + torch.cos(phase * (x + y))
                if forcing == "fno"
                else torch.sin(phase * y)
            )
            self._forcing_hat = torch.fft.rfft2(pattern)

    # ----------------------------------------------------------------- hooks
    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """FNO's Gaussian random field (see the class docstring), float64 ``[B, 1, n, n]``."""
        # FNO's normalisation, E|ŵ_k|² = 2 σ² n⁴ (κ² + τ²)^{−α} whatever L: the measure
        # N(0, 2 σ² L² (−Δ + τ² I)^{−α}) without its mean mode.
        scale = 2 * self.ic_tau ** (2 * (self.ic_alpha - 1)) * self.length**2
        return gaussian_random_field(
            batch, self.n_solve, self.length, 2, scale, self.ic_tau, self.ic_alpha, generator, zero_mean=True
        )

    def _to_state(self, u: Tensor) -> Tensor:
        return torch.fft.rfft2(u)

    def _from_state(self, state: Tensor) -> Tensor:
        return torch.fft.irfft2(state, s=(self.n_solve, self.n_solve))

    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        if bool((params["drag"] < 0).any()):
            raise ConfigError(f"parameter drag must be >= 0, got min {params['drag'].min().item():g}")
        n, dx = self.n_solve, self.dx_solve
        ikx, iky, inv_k_sq, mask, k_sq = self._spectral_operators(device, dtype)
        # one product each way: w -> the dealiased (u, v), u = (ψ_y, −ψ_x) with −Δψ = w, and the
        # products (u v, v² − u²) -> minus their dealiased share of u·∇w
        to_velocity = torch.stack([iky * inv_k_sq, -ikx * inv_k_sq]) * mask
        of_uv, of_squares = (iky * iky - ikx * ikx) * mask, -ikx * iky * mask  # k_x² − k_y², k_x k_y
        nu, drag = (params[name].reshape(-1, 1, 1, 1) for name in ("nu", "drag"))
        linear = -(nu * k_sq + drag)
        source = torch.zeros((), dtype=_complex(dtype), device=device)
        if self._forcing_hat is not None:
            amplitude = params["forcing_amplitude"].reshape(-1, 1, 1, 1)
            source = amplitude * self._forcing_hat.to(device=device, dtype=_complex(dtype))

        def fields_of(w_hat: Tensor) -> Tensor:
            """The dealiased velocity ``(u, v)`` on the grid, ``[B, 2, n, n]``."""
            return torch.fft.irfft2(w_hat * to_velocity, s=(n, n))

        def rhs(fields: Tensor) -> Tensor:
            """Explicit part ``f − u·∇w`` (dealiased), in Fourier space, from ``fields_of``."""
            products = fields * fields[:, 1:]  # (u v, v²) ...
            products[:, 1:].addcmul_(fields[:, :1], fields[:, :1], value=-1)  # ... (u v, v² − u²)
            hat = torch.fft.rfft2(products)
            return torch.addcmul(source + hat[:, :1] * of_uv, hat[:, 1:], of_squares)

        def ifrk4(w_hat: Tensor, fields: Tensor, h: Tensor) -> Tensor:
            """One IFRK4 step of size ``h`` (``[B, 1, 1, 1]``, per trajectory) from ``w_hat`` and its fields."""
            half = torch.exp(0.5 * h * linear)
            full = half * half
            k1 = h * rhs(fields)
            k2 = h * rhs(fields_of(half * w_hat.add(k1, alpha=0.5)))
            half_w = half * w_hat
            k3 = h * rhs(fields_of(half_w.add(k2, alpha=0.5)))
            full_w = full * w_hat
            k4 = h * rhs(fields_of(torch.addcmul(full_w, half, k3)))
            increment = torch.addcmul(torch.addcmul(k4, full, k1), half, k2.add_(k3), value=2)
            return full_w.add_(increment, alpha=1 / 6)

        def step(w_hat: Tensor, h: float) -> Tensor:
            """Advance by ``h``. Before every sub-step each trajectory sizes its own from its current speed:
            what it has left, in the fewest equal shares at a Courant number ``<= cfl``. A trajectory that is
            done (or non-finite: blown up, flagged by the caller) takes steps of size 0, which leave it as is."""
            left = torch.full((w_hat.shape[0], 1, 1, 1), h, dtype=torch.float64, device=device)
            for _ in range(MAX_SUBSTEPS):
                if not bool((left > 0).any()):
                    return w_hat
                fields = fields_of(w_hat)
                speed = fields.abs().sum(dim=1, keepdim=True).amax(dim=(2, 3), keepdim=True).double()
                finite = torch.isfinite(speed)
                shares = torch.where(
                    finite, torch.ceil(left * speed / (self.cfl * dx) - 1e-9).clamp_min(1), 1.0
                )
                most = int(shares.max().item())
                if most > MAX_SUBSTEPS:
                    raise ConfigError(
                        f"{type(self).__name__}: a step of dt={h:g} needs {most} CFL sub-steps at max(|u|+|v|)="
                        f"{speed.max().item():.3g} (at most {MAX_SUBSTEPS}); lower n_solve or shorten the rollout"
                    )
                sub = torch.where(finite, left / shares, 0.0)
                w_hat = ifrk4(w_hat, fields, sub.to(dtype))
                left = torch.where(finite, left - sub, 0.0)
            raise ConfigError(
                f"{type(self).__name__}: a step of dt={h:g} took {MAX_SUBSTEPS} CFL sub-steps without ending; "
                "lower n_solve or shorten the rollout"
            )

        return step

    # ----------------------------------------------------------------- helpers
    def _spectral_operators(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``i k_x``, ``i k_y``, ``1/|k|^2`` (0 at k = 0), 2/3 mask and ``|k|^2`` on ``device``."""
        real = [t.to(device=device, dtype=dtype) for t in (self._inv_k_sq, self._mask, self._k_sq)]
        imag = [(1j * k).to(device=device, dtype=_complex(dtype)) for k in (self._kx, self._ky)]
        return imag[0], imag[1], real[0], real[1], real[2]


def _complex(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real one."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64
