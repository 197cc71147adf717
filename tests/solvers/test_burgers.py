"""Burgers solver against the exact Cole-Hopf solution, plus conservation, bounds, batching and errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.special import ive

from solvers.base import DivergenceError
from solvers.burgers import Burgers
from solvers.errors import ConfigError


def exact_sine(x: np.ndarray, t: float, nu: float, points: int = 2001) -> np.ndarray:
    """Exact solution for ``u0 = sin x`` by the Cole-Hopf transform, evaluated by quadrature.

    ``u = -2ν φ_x / φ`` with ``φ_t = ν φ_xx`` and ``φ(x, 0) = exp(cos(x) / (2ν))``, so
    ``u(x, t) = ∫ (z/t) K(z) dz / ∫ K(z) dz`` with ``K(z) = exp(-z²/(4νt) + cos(x - z)/(2ν))``.
    The integrand is normalised by its maximum (no overflow at small ν) and integrated by the
    trapezoidal rule over ``|z| <= t + 14 sqrt(2νt)``, which is spectrally accurate here.
    """
    if t == 0:
        return np.sin(x)
    half = t + 14 * math.sqrt(2 * nu * t)
    z = np.linspace(-half, half, points)
    exponent = -(z**2) / (4 * nu * t) + np.cos(x[:, None] - z) / (2 * nu)
    kernel = np.exp(exponent - exponent.max(axis=1, keepdims=True))
    return (kernel * z / t).sum(axis=1) / kernel.sum(axis=1)


def bessel_sine(x: np.ndarray, t: float, nu: float, terms: int = 200) -> np.ndarray:
    """The same solution by the series ``φ = I_0(a) + 2 Σ_k I_k(a) e^{-νk²t} cos kx``, ``a = 1/(2ν)``."""
    k = np.arange(1, terms + 1)
    coef = ive(k, 1 / (2 * nu)) * np.exp(-nu * k**2 * t)
    numerator = 4 * nu * (k * coef * np.sin(np.outer(x, k))).sum(axis=1)
    denominator = ive(0, 1 / (2 * nu)) + 2 * (coef * np.cos(np.outer(x, k))).sum(axis=1)
    return numerator / denominator


def solve_sine(n: int, nu: float, times: list[float], dtype: torch.dtype = torch.float64) -> np.ndarray:
    solver = Burgers(n=n, nu=nu)
    u0 = torch.sin(solver.grid[0]).to(dtype).reshape(1, 1, n)
    out = solver.solve(u0, times)
    assert out.shape == (1, len(times), 1, n) and out.dtype == dtype
    return out[0, :, 0].double().numpy()


def errors_vs_exact(n: int, nu: float, times: list[float]) -> list[float]:
    x = np.arange(n) * 2 * np.pi / n
    out = solve_sine(n, nu, times)
    return [float(np.abs(out[i] - exact_sine(x, t, nu)).max()) for i, t in enumerate(times)]


def test_exact_reference_agrees_with_bessel_series() -> None:
    x = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for t in (0.1, 1.0, 2.0):
        assert np.abs(exact_sine(x, t, 0.1) - bessel_sine(x, t, 0.1)).max() < 1e-11


@pytest.mark.parametrize(
    ("nu", "n", "tolerances"),
    [
        # times 0.5 (smooth), 1.0 (the inviscid breaking time), 2.0 (steep front)
        (0.1, 256, (1e-7, 2e-6, 2e-5)),
        (0.02, 512, (1e-8, 1e-5, 2e-3)),
    ],
)
def test_matches_cole_hopf(nu: float, n: int, tolerances: tuple[float, ...]) -> None:
    times = [0.5, 1.0, 2.0]
    errors = errors_vs_exact(n, nu, times)
    assert all(e < tol for e, tol in zip(errors, tolerances, strict=True)), errors
    if nu == 0.02:  # the front has really steepened: max |u_x| grew from 1 to about 21
        x = np.arange(n) * 2 * np.pi / n
        assert np.abs(np.diff(exact_sine(x, 2.0, nu))).max() * n / (2 * np.pi) > 15


def test_spatial_order_four_on_smooth_solution() -> None:
    """WENO5 advection with 4th-order diffusion: the error falls like Δx⁴ (measured ≈ 4.3-4.8)."""
    sizes = [32, 64, 128, 256]
    errors = [errors_vs_exact(n, 0.1, [0.5])[0] for n in sizes]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    slope = -np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert slope > 3.8 and orders.min() > 3.5, (errors, orders)


def test_shocks_stay_bounded_and_conserve_mass() -> None:
    solver = Burgers(n=256, nu=1e-3, dt=0.25)
    u0 = solver.initial_condition(4, torch.Generator().manual_seed(0), dtype=torch.float64) + 0.3
    out = solver.solve(u0, [0.0, 1.0, 2.0, 3.0])
    low = u0.amin(dim=-1, keepdim=True).unsqueeze(1)
    high = u0.amax(dim=-1, keepdim=True).unsqueeze(1)
    assert bool((out >= low - 1e-6).all() and (out <= high + 1e-6).all())
    mass = out.sum(dim=-1) * solver.dx
    assert (mass - mass[:, :1]).abs().max().item() < 1e-11
    jumps = out[:, -1].diff(dim=-1).abs().amax(dim=-1)
    assert bool((jumps > 0.3).all()), jumps  # every trajectory has a shock a few cells wide


def test_batch_with_different_nu_equals_single_solves() -> None:
    solver = Burgers(n=128, nu=[1e-3, 0.1, "log"], dt=0.1)
    generator = torch.Generator().manual_seed(3)
    scale = torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64).reshape(-1, 1, 1)
    u0 = solver.initial_condition(4, generator, dtype=torch.float64) * scale
    params = solver.sample_params(4, generator)
    assert params["nu"].unique().numel() == 4
    times = [0.0, 0.3, 0.8]
    batched = solver.solve(u0, times, params)
    for b in range(4):
        single = solver.solve(u0[b : b + 1], times, {"nu": params["nu"][b : b + 1]})
        torch.testing.assert_close(batched[b : b + 1], single, rtol=0, atol=1e-12)


def test_float32() -> None:
    n = 128
    out = solve_sine(n, 0.1, [0.5], dtype=torch.float32)
    x = np.arange(n) * 2 * np.pi / n
    assert np.abs(out[0] - exact_sine(x, 0.5, 0.1)).max() < 2e-5
    solver = Burgers(n=64)
    u0 = solver.initial_condition(2, torch.Generator().manual_seed(1))
    result = solver.solve(u0, [0.0, 0.5], solver.sample_params(2, torch.Generator().manual_seed(1)))
    assert result.dtype == torch.float32 and bool(torch.isfinite(result).all())


def test_initial_condition() -> None:
    solver = Burgers(n=128, max_mode=3)
    u0 = solver.initial_condition(6, torch.Generator().manual_seed(5), dtype=torch.float64)
    assert u0.shape == (6, 1, 128)
    torch.testing.assert_close(u0.abs().amax(dim=-1), torch.ones(6, 1, dtype=torch.float64))
    spectrum = torch.fft.rfft(u0, dim=-1).abs()
    assert spectrum[..., 0].max() < 1e-10 and spectrum[..., 4:].max() < 1e-10  # modes 1..3 only
    again = solver.initial_condition(6, torch.Generator().manual_seed(5), dtype=torch.float64)
    other = solver.initial_condition(6, torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.equal(u0, again) and not torch.allclose(u0, other)


def test_config_file_builds_the_solver() -> None:
    cfg = OmegaConf.load(Path(__file__).parents[2] / "conf" / "pde" / "burgers.yaml")
    solver = instantiate(cfg)
    assert isinstance(solver, Burgers) and solver.n == 256 and solver.length == pytest.approx(2 * math.pi)
    assert solver.params["nu"].log and solver.params["nu"].low == 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cfl": 0.0}, r"^cfl=0\.0 is not allowed; allowed: a number in \(0, 1\]$"),
        ({"cfl": 1.5}, r"cfl=1\.5"),
        ({"nu": -0.01}, r"nu=-0\.01 .*must be >= 0"),
        ({"nu": [-0.01, 0.1]}, r"nu=\[-0\.01, 0\.1\] .*must be >= 0"),
        ({"nu": [0.0, 0.1, "log"]}, r"nu must be > 0"),
        ({"waves": 0}, r"waves=0"),
        ({"max_mode": 64, "n": 128}, r"^max_mode=64 is not allowed; allowed: an int in \[1, 63\]$"),
    ],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Burgers(**kwargs)


def test_absurd_substep_count_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"needs (\d+) sub-steps per step") as info:
        Burgers(n=4096, nu=1.0, dt=10.0)
    assert int(re.search(r"needs (\d+)", str(info.value)).group(1)) > 10**6
    solver = Burgers(n=256, nu=0.01)
    u0 = 1e8 * torch.sin(solver.grid[0]).reshape(1, 1, -1)
    with pytest.raises(ConfigError, match=r"max\|u\|=1e\+08"):
        solver.solve(u0, [1.0])


def test_bad_solve_inputs() -> None:
    solver = Burgers(n=64, nu=[0.0, 0.1])
    u0 = torch.sin(solver.grid[0]).reshape(1, 1, -1)
    with pytest.raises(ConfigError, match=r"nu must be >= 0"):
        solver.solve(u0, [0.1], {"nu": -0.5})
    with pytest.raises(ConfigError, match=r"non-finite"):
        solver.solve(torch.full_like(u0, math.nan), [0.1])


def test_blowup_reports_divergence() -> None:
    solver = Burgers(n=64, nu=0.05, blowup=1.5)
    scale = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64).reshape(-1, 1, 1)
    u0 = solver.initial_condition(3, torch.Generator().manual_seed(2), dtype=torch.float64) * scale
    times = [0.0, 0.2, 0.4]
    with pytest.raises(DivergenceError, match=r"1 of 3 trajectories blew up") as info:
        solver.solve(u0, times)
    assert info.value.indices == [1]
    result = info.value.result
    assert result.shape == (3, 3, 1, 64) and bool(result[1].isnan().all())
    for b in (0, 2):
        torch.testing.assert_close(result[b : b + 1], solver.solve(u0[b : b + 1], times), rtol=0, atol=0)


# ------------------------------------------------------------------ spectral method, GRF initial conditions
def cole_hopf(u0: np.ndarray, times: list[float], nu: float, length: float, fine: int = 4) -> np.ndarray:
    """Exact solutions ``[B, len(times), n]`` for periodic ``u0`` ``[B, n]`` (trigonometric polynomials).

    With ``c`` the mean of ``u0``, ``u(x, t) = c + v(x − c t, t)`` (Galilean invariance), where ``v`` starts from
    ``u0 − c`` and is given by Cole-Hopf: ``v = −2ν φ_x / φ`` with ``φ_t = ν φ_xx`` and
    ``φ(x, 0) = exp(−∫_0^x v0 / (2ν))``, periodic since ``v0`` has zero mean. The heat equation is solved exactly
    in Fourier space on a ``fine``× finer grid (``φ0`` is analytic: its coefficients decay exponentially), and
    the shift by ``c t`` is a phase factor.
    """
    batch, n = u0.shape
    m = fine * n
    c = u0.mean(axis=-1, keepdims=True)
    v_hat = np.fft.rfft(u0 - c)
    k = 2 * np.pi * np.fft.rfftfreq(n, 1.0 / n) / length
    integral_hat = np.zeros_like(v_hat)
    integral_hat[:, 1:] = v_hat[:, 1:] / (1j * k[1:])
    padded = np.zeros((batch, m // 2 + 1), dtype=complex)
    padded[:, : n // 2] = integral_hat[:, : n // 2] * (m / n)
    exponent = -np.fft.irfft(padded, n=m) / (2 * nu)
    phi_hat = np.fft.rfft(np.exp(exponent - exponent.max(axis=-1, keepdims=True)))
    kf = 2 * np.pi * np.fft.rfftfreq(m, 1.0 / m) / length
    out = []
    for t in times:
        shifted = phi_hat * np.exp(-nu * kf**2 * t - 1j * kf * c * t)
        phi, phi_x = np.fft.irfft(shifted, n=m), np.fft.irfft(1j * kf * shifted, n=m)
        out.append((c - 2 * nu * phi_x / phi)[:, ::fine])
    return np.stack(out, axis=1)


def test_cole_hopf_reference_agrees_with_quadrature_for_a_moving_sine() -> None:
    """``u0 = c + sin x``: the Galilean shift of the quadrature solution of ``sin x``."""
    n, nu, c = 256, 0.1, 0.7
    x = np.arange(n) * 2 * np.pi / n
    got = cole_hopf((c + np.sin(x))[None], [0.5, 1.0], nu, 2 * np.pi)[0]
    for row, t in zip(got, (0.5, 1.0), strict=True):
        assert np.abs(row - (c + exact_sine(x - c * t, t, nu))).max() < 1e-10


def grf_solver(n: int, nu: float, dt: float) -> Burgers:
    return Burgers(n=n, length=1.0, dt=dt, nu=nu, method="spectral", ic="grf")


def spectral_errors(n: int, nu: float, dt: float, times: list[float], batch: int = 8) -> np.ndarray:
    """Largest relative L2 error over a batch of the paper's GRF starts, per time, against Cole-Hopf."""
    solver = grf_solver(n, nu, dt)
    u0 = solver.initial_condition(batch, torch.Generator().manual_seed(0), dtype=torch.float64)
    # the solver keeps the modes |k| < n/3 after its first step: compare with the exact solution of those
    kept = np.fft.irfft(np.fft.rfft(u0[:, 0].numpy()) * (np.fft.rfftfreq(n, 1.0 / n) < n / 3), n=n)
    out = solver.solve(u0, times)[:, :, 0].numpy()
    exact = cole_hopf(kept, times, nu, 1.0)
    return (np.linalg.norm(out - exact, axis=-1) / np.linalg.norm(exact, axis=-1)).max(axis=0)


@pytest.mark.parametrize(
    ("nu", "n", "dt", "tolerance"),
    [(0.1, 1024, 0.002, 2e-8), (0.05, 1024, 0.001, 2e-8), (0.02, 1024, 0.0005, 2e-8)],
)
def test_spectral_matches_cole_hopf_for_random_fields_with_a_mean(nu, n, dt, tolerance) -> None:
    """The FNO benchmark's u0 ~ N(0, 625 (−Δ + 25 I)^−2), mean mode included, at several ν."""
    errors = spectral_errors(n, nu, dt, [0.25, 1.0])
    assert errors.max() < tolerance, errors


@pytest.mark.parametrize(("nu", "order"), [(0.05, 3.5), (0.1, 2.5)])
def test_spectral_converges_with_etdrk4s_order_in_time(nu: float, order: float) -> None:
    """Observed orders 3.8 (ν = 0.05) and 2.7-3.1 (ν = 0.1): the stiffer problem shows ETDRK4's known order
    reduction for parabolic problems (Hochbruck & Ostermann 2005, SIAM J. Numer. Anal. 43(3))."""
    errors = np.array([spectral_errors(256, nu, dt, [0.5], batch=4)[0] for dt in (0.04, 0.02, 0.01, 0.005)])
    orders = np.log2(errors[:-1] / errors[1:])
    assert orders.min() > order and errors[-1] < 5e-8, (errors, orders)


def test_spectral_keeps_the_initial_condition_and_the_mean() -> None:
    solver = grf_solver(512, 0.1, 0.01)
    u0 = solver.initial_condition(4, torch.Generator().manual_seed(3), dtype=torch.float64)
    out = solver.solve(u0, [0.0, 0.5, 1.0])
    torch.testing.assert_close(out[:, 0], u0, rtol=0, atol=1e-13)  # frame 0 is u0 itself, all its modes
    mean = out.mean(dim=-1)
    torch.testing.assert_close(mean, mean[:, :1].expand_as(mean), rtol=0, atol=1e-13)
    assert mean[:, 0].abs().min() > 1e-3  # a non-zero mean: the constant mode is part of the field


def test_grf_has_the_covariance_it_names() -> None:
    """``E|û_k|² = n² λ_k / L`` with ``λ_k = 625 ((2πk/L)² + 25)^−2``: the paper's field, constant mode variance 1."""
    n, batch = 32, 20_000
    for length in (1.0, 2.0):
        solver = Burgers(n=n, length=length, dt=0.01, nu=0.1, method="spectral", ic="grf")
        u0 = solver.initial_condition(batch, torch.Generator().manual_seed(4), dtype=torch.float64)[:, 0]
        power = torch.fft.rfft(u0).abs().pow(2).mean(0)[: n // 2] / n**2
        k = 2 * math.pi * torch.arange(n // 2, dtype=torch.float64) / length
        expected = 625 * (k**2 + 25) ** -2 / length
        assert (power / expected - 1).abs().max() < 0.04, power / expected
    assert u0.mean(-1).var().item() == pytest.approx(0.5, rel=0.04)  # λ_0 / L on L = 2


def test_fno_preset_builds_the_papers_solver() -> None:
    cfg = OmegaConf.load(Path(__file__).parents[2] / "conf" / "pde" / "burgers_fno.yaml")
    solver = instantiate(cfg)
    assert (solver.n, solver.length, solver.method, solver.ic) == (8192, 1.0, "spectral", "grf")
    assert (solver.ic_scale, solver.ic_tau, solver.ic_alpha) == (625.0, 5.0, 2.0)
    assert solver.params["nu"].low == solver.params["nu"].high == 0.1 and solver.dt_out == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "fd"}, r"^method='fd' is not allowed; allowed: weno5, spectral$"),
        ({"ic": "gauss"}, r"^ic='gauss' is not allowed; allowed: sines, grf$"),
        ({"ic_alpha": 0.5}, r"^ic_alpha=0\.5 is not allowed; allowed: a number > 0\.5$"),
        ({"ic_scale": 0}, r"ic_scale=0"),
        ({"method": "spectral", "nu": [0.0, 0.1]}, r"nu=\[0\.0, 0\.1\] is not allowed with method=spectral"),
    ],
)
def test_bad_spectral_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Burgers(**kwargs)
