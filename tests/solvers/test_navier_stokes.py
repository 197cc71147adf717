"""NavierStokes2D against exact solutions, convergence order, invariants, the GRF spectrum and config errors."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from solvers.base import DivergenceError
from solvers.errors import ConfigError
from solvers.navier_stokes import NavierStokes2D

TWO_PI = 2 * math.pi
CONF = Path(__file__).resolve().parents[2] / "conf" / "pde"


def times(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def rms(w: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over the grid (and channel): ``[..., C, X, Y] -> [...]``."""
    return w.pow(2).mean(dim=(-1, -2, -3)).sqrt()


# ------------------------------------------------------------------ exact solutions
@pytest.mark.parametrize("drag", [0.0, 0.3])
def test_taylor_green_vortex_is_exact(drag: float) -> None:
    """w = 2k cos(kx) cos(ky) exp(−(2 nu k^2 + drag) t) solves the equation (u·∇w = 0)."""
    nu, k = 0.02, 3
    solver = NavierStokes2D(n=32, length=TWO_PI, dt=0.05, nu=nu, drag=drag, forcing="none")
    x, y = solver.mesh()
    w0 = 2 * k * torch.cos(k * x) * torch.cos(k * y)
    t = times(0.0, 0.7, 3.0)
    out = solver.solve(w0[None, None], t)
    decay = torch.exp(-(2 * nu * k**2 + drag) * t)
    exact = w0 * decay[:, None, None, None]
    assert out.shape == (1, 3, 1, 32, 32)
    assert (out[0] - exact).abs().max().item() < 1e-12


@pytest.mark.parametrize(
    ("forcing", "length", "amplitude", "wavenumber"),
    [("kolmogorov", TWO_PI, 1.0, 4), ("fno", 1.0, 0.1, 1), ("fno", 2.0, 0.5, 2)],
)
def test_forced_shear_flow_from_rest(forcing: str, length: float, amplitude: float, wavenumber: int) -> None:
    """Both forcings are plane waves, so u·∇w = 0 and w = f (1 − e^{−λt}) / λ with λ = nu κ^2 + drag."""
    nu, drag = 0.01, 0.05
    solver = NavierStokes2D(
        n=32,
        length=length,
        dt=0.01,
        nu=nu,
        drag=drag,
        forcing=forcing,
        forcing_amplitude=amplitude,
        forcing_wavenumber=wavenumber,
    )
    x, y = solver.mesh()
    kappa = TWO_PI * wavenumber / length
    if forcing == "kolmogorov":
        f, kappa2 = amplitude * torch.sin(kappa * y), kappa**2
    else:
        f, kappa2 = amplitude * (torch.sin(kappa * (x + y)) + torch.cos(kappa * (x + y))), 2 * kappa**2
    lam = nu * kappa2 + drag
    t = times(0.0, 0.5, 2.0)
    out = solver.solve(torch.zeros(1, 1, 32, 32, dtype=torch.float64), t)
    exact = f * ((1 - torch.exp(-lam * t)) / lam)[:, None, None, None]
    assert (out[0] - exact).abs().max().item() < 1e-10 * exact.abs().max().item()


def test_advection_sign_and_axes() -> None:
    """ψ = cos x + sin 2y: w = cos x + 4 sin 2y, u = (2 cos 2y, sin x), u·∇w = 6 sin x cos 2y.

    With nu = drag = f = 0 the initial tendency must be w_t = −6 sin x cos 2y; it is estimated from
    the solver by Richardson extrapolation of one-sided differences, (w(τ) − w0)/τ and (w(2τ) − w0)/(2τ).
    """
    solver = NavierStokes2D(n=32, length=TWO_PI, dt=1e-5, nu=1e-12, forcing="none")
    x, y = solver.mesh()
    w0 = (torch.cos(x) + 4 * torch.sin(2 * y))[None, None]
    tau = 1e-4
    out = solver.solve(w0, times(tau, 2 * tau))[0, :, 0]
    tendency = 2 * (out[0] - w0[0, 0]) / tau - (out[1] - w0[0, 0]) / (2 * tau)
    exact = -6 * torch.sin(x) * torch.cos(2 * y)
    assert (tendency - exact).abs().max().item() < 1e-5


def test_advection_of_a_random_flow_is_the_dealiased_advective_form() -> None:
    """Random modes up to the 2/3 cut (|k| <= 10 at n = 32): the solver's initial tendency (nu = f = 0) is
    −u·∇w computed apart, in advective form on a 64² grid where the products are exact, then cut to the kept
    modes. Checks the whole nonlinear term, whatever form the solver evaluates it in."""
    n, fine, cut = 32, 64, 10
    solver = NavierStokes2D(n=n, length=TWO_PI, dt=1e-5, nu=1e-12, forcing="none")
    generator = torch.Generator().manual_seed(3)
    kx = torch.fft.fftfreq(fine, 1 / fine, dtype=torch.float64)[:, None]
    ky = torch.fft.rfftfreq(fine, 1 / fine, dtype=torch.float64)[None, :]
    kept = (kx.abs() <= cut) & (ky <= cut)
    w_hat = torch.complex(*torch.randn(2, fine, fine // 2 + 1, generator=generator, dtype=torch.float64))
    w_hat = torch.where(kept & ((kx != 0) | (ky != 0)), w_hat, 0) * fine**2 / 10
    w = torch.fft.irfft2(w_hat, s=(fine, fine))  # real, band-limited to the kept modes
    psi_hat = w_hat / (kx**2 + ky**2).clamp_min(1)
    u, v, w_x, w_y = (
        torch.fft.irfft2(factor * hat, s=(fine, fine))
        for factor, hat in ((1j * ky, psi_hat), (-1j * kx, psi_hat), (1j * kx, w_hat), (1j * ky, w_hat))
    )
    advection_hat = torch.where(kept, torch.fft.rfft2(u * w_x + v * w_y), 0)
    exact = -torch.fft.irfft2(advection_hat, s=(fine, fine))[::2, ::2]
    w0 = w[::2, ::2][None, None]
    tau = 1e-4
    out = solver.solve(w0, times(tau, 2 * tau))[0, :, 0]
    tendency = 2 * (out[0] - w0[0, 0]) / tau - (out[1] - w0[0, 0]) / (2 * tau)
    assert exact.abs().max().item() > 10, "the flow must advect its vorticity markedly"
    assert (tendency - exact).abs().max().item() < 1e-6 * exact.abs().max().item()


def smooth_flow(solver: NavierStokes2D) -> torch.Tensor:
    """A few interacting low modes (a genuinely nonlinear flow), ``[1, 1, n, n]``."""
    x, y = solver.mesh()
    w = 3 * torch.sin(x) * torch.cos(2 * y) + 2 * torch.cos(3 * x + y) + torch.sin(2 * x - 3 * y)
    return w[None, None]


def test_fourth_order_in_time() -> None:
    """IFRK4: errors at dt, dt/2, dt/4 against dt/32 fall by 2^4 per halving."""

    def final(dt: float) -> torch.Tensor:
        solver = NavierStokes2D(
            n=32, length=TWO_PI, dt=dt, nu=0.01, drag=0.1, forcing="kolmogorov", forcing_wavenumber=2
        )
        return solver.solve(smooth_flow(solver), times(0.0, 1.0))[:, -1]

    reference = final(0.04 / 32)
    errors = [(final(dt) - reference).abs().max().item() for dt in (0.04, 0.02, 0.01)]
    orders = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert errors[-1] > 1e-11, "errors must stay above round-off for the order to mean anything"
    assert min(orders) > 3.8, f"errors {errors}, observed orders {orders}"


# ------------------------------------------------------------------ invariants and long runs
def test_mean_vorticity_stays_zero_and_outputs_are_real_fields() -> None:
    solver = instantiate(OmegaConf.load(CONF / "navier_stokes.yaml"), n=32)
    w0 = solver.initial_condition(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    out = solver.solve(w0, times(0.0, 1.0, 2.0), {"nu": torch.tensor([1e-3, 1e-4])})
    assert out.shape == (2, 3, 1, 32, 32) and out.dtype == torch.float64
    assert out.mean(dim=(-1, -2)).abs().max().item() < 1e-13
    assert not torch.allclose(out[:, -1], out[:, 0])


def forced_run(n: int, duration: float, batch: int) -> tuple[NavierStokes2D, torch.Tensor, torch.Tensor]:
    """Kolmogorov preset at ``n`` points without burn-in, outputs every 5 time units."""
    solver = instantiate(OmegaConf.load(CONF / "kolmogorov.yaml"), n=n, burn_in=0.0)
    w0 = solver.initial_condition(batch, torch.Generator().manual_seed(1), dtype=torch.float64)
    return solver, w0, solver.solve(w0, torch.arange(0.0, duration + 1, 5.0, dtype=torch.float64))


def assert_enstrophy_bounded(solver: NavierStokes2D, w0: torch.Tensor, out: torch.Tensor) -> None:
    """Enstrophy balance: d‖w‖/dt <= ‖f‖ − (drag + nu κ_min^2) ‖w‖ (advection conserves ‖w‖), hence
    ``rms(w) <= max(rms(w0), rms(f) / (drag + nu))`` on ``[0, 2π)^2`` (κ_min = 1)."""
    params = solver.sample_params(1)
    forcing_rms = params["forcing_amplitude"].item() / math.sqrt(2)
    bound = max(rms(w0).max().item(), forcing_rms / (params["drag"].item() + params["nu"].item()))
    history = rms(out)
    assert bool(torch.isfinite(out).all())
    assert history.max().item() <= 1.01 * bound, (
        f"rms vorticity {history.max().item():.3g} > bound {bound:.3g}"
    )
    # forced turbulence, neither decayed nor stuck at the laminar state sin(4y) / (16 nu + drag)
    assert history[:, -1].min().item() > 0.5
    laminar = torch.sin(4 * solver.mesh()[1]) / (16 * params["nu"].item() + params["drag"].item())
    assert (out[:, -1, 0] - laminar).pow(2).mean().sqrt().item() > 0.5


def test_forced_kolmogorov_enstrophy_stays_bounded() -> None:
    solver, w0, out = forced_run(n=32, duration=60.0, batch=2)
    assert_enstrophy_bounded(solver, w0, out)


@pytest.mark.slow
def test_forced_kolmogorov_enstrophy_stays_bounded_long() -> None:
    solver, w0, out = forced_run(n=64, duration=500.0, batch=2)
    assert_enstrophy_bounded(solver, w0, out)


# ------------------------------------------------------------------ batching, dtype
def test_batched_parameters_equal_single_solves() -> None:
    solver = NavierStokes2D(
        n=32,
        length=TWO_PI,
        dt=0.05,
        nu=[1e-4, 1e-2, "log"],
        drag=[0.0, 0.2],
        forcing="kolmogorov",
        forcing_amplitude=[0.5, 2.0],
    )
    w0 = smooth_flow(solver).repeat(3, 1, 1, 1)
    params = solver.sample_params(3, torch.Generator().manual_seed(3))
    assert len(set(params["nu"].tolist())) == 3
    t = times(0.0, 0.5, 1.0)
    batched = solver.solve(w0, t, params)
    for i in range(3):
        single = solver.solve(w0[i : i + 1], t, {k: v[i : i + 1] for k, v in params.items()})
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-12)
    assert (batched[0, -1] - batched[1, -1]).abs().max().item() > 1e-3


def test_float32_matches_float64() -> None:
    solver = instantiate(OmegaConf.load(CONF / "navier_stokes.yaml"), n=32)
    w0 = solver.initial_condition(2, torch.Generator().manual_seed(5), dtype=torch.float64)
    t = times(0.0, 1.0, 2.0)
    ref = solver.solve(w0, t)
    out = solver.solve(w0.float(), t)
    assert out.dtype == torch.float32
    assert (rms(out.double() - ref) / rms(ref)).max().item() < 1e-5


# ------------------------------------------------------------------ initial condition
@pytest.mark.parametrize("length", [1.0, TWO_PI])
def test_grf_spectrum_slope_normalisation_and_zero_mean(length: float) -> None:
    """E|ŵ_k|^2 / n^4 = 2 σ^2 (κ^2 + τ^2)^{−α} with σ = τ^{α−1}, κ = 2π|k|/L (FNO: α = 2.5, τ = 7)."""
    n, batch = 32, 256
    solver = NavierStokes2D(n=n, length=length, dt=0.01)
    w = solver.initial_condition(batch, torch.Generator().manual_seed(7), dtype=torch.float64)
    assert w.shape == (batch, 1, n, n)
    assert w.mean(dim=(-1, -2)).abs().max().item() < 1e-14
    power = torch.fft.fft2(w).abs().pow(2).mean(dim=(0, 1)) / n**4
    k = torch.fft.fftfreq(n, d=1.0 / n).to(torch.float64) * TWO_PI / length
    lam = (k[:, None] ** 2 + k[None, :] ** 2 + 49.0).flatten()[1:]
    log_power = power.flatten()[1:].log()
    design = torch.stack([lam.log(), torch.ones_like(lam)], dim=1)
    slope = torch.linalg.lstsq(design, log_power[:, None]).solution[0].item()
    assert abs(slope + 2.5) < 0.03, slope
    ratio = (power.flatten()[1:] / (2 * 7.0**3 * lam**-2.5)).mean().item()
    assert abs(ratio - 1) < 0.02, ratio


def test_initial_condition_is_reproducible() -> None:
    solver = NavierStokes2D(n=16, length=1.0, dt=0.01)
    a = solver.initial_condition(3, torch.Generator().manual_seed(11))
    b = solver.initial_condition(3, torch.Generator().manual_seed(11))
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


# ------------------------------------------------------------------ errors
def test_steps_beyond_the_cfl_limit_are_split_per_trajectory() -> None:
    """dt = 0.5 is ~10× the CFL limit: each trajectory sub-steps by its own speed, accurately and alone."""
    solver = NavierStokes2D(n=32, length=TWO_PI, dt=0.5, nu=0.01, forcing="none")
    w0 = torch.cat([smooth_flow(solver), 0.1 * smooth_flow(solver)])  # one fast, one slow trajectory
    t = times(0.0, 0.5, 1.0)
    out = solver.solve(w0, t)
    reference = NavierStokes2D(n=32, length=TWO_PI, dt=0.002, nu=0.01, forcing="none").solve(w0, t)
    assert (rms(out - reference) / rms(reference)).max().item() < 5e-4  # RK4 at Courant number 1: ~1e-4
    for i in range(2):  # the slow trajectory takes fewer sub-steps, whatever its batch-mate needs
        torch.testing.assert_close(out[i : i + 1], solver.solve(w0[i : i + 1], t), rtol=0, atol=1e-12)


def test_a_blown_up_trajectory_leaves_its_batch_mates_to_finish() -> None:
    """A non-finite trajectory takes sub-steps of size 0: the others are solved as alone, it is reported."""
    solver = NavierStokes2D(n=32, length=TWO_PI, dt=0.5, nu=0.01, forcing="none")
    w0 = torch.cat([smooth_flow(solver), torch.full_like(smooth_flow(solver), math.nan)])
    t = times(0.0, 0.5, 1.0)
    with pytest.raises(DivergenceError) as failure:
        solver.solve(w0, t)
    assert failure.value.indices == [1]
    torch.testing.assert_close(failure.value.result[:1], solver.solve(w0[:1], t), rtol=0, atol=1e-12)


def test_a_step_needing_too_many_substeps_is_refused() -> None:
    solver = NavierStokes2D(n=32, length=TWO_PI, dt=50.0, nu=0.01, forcing="none")
    with pytest.raises(ConfigError, match="CFL sub-steps"):
        solver.solve(100 * smooth_flow(solver), times(0.0, 50.0))


# ------------------------------------------------------------------ solve fine, store coarse
def test_solve_fine_store_coarse_keeps_every_rth_point_of_the_fine_solve() -> None:
    kwargs = {"length": TWO_PI, "dt": 0.05, "nu": 0.01, "forcing": "kolmogorov", "forcing_wavenumber": 2}
    fine = NavierStokes2D(n=64, **kwargs)
    stored = NavierStokes2D(n=16, n_solve=64, **kwargs)
    w0 = fine.initial_condition(2, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert stored.initial_condition(2, torch.Generator().manual_seed(1), dtype=torch.float64).shape[-1] == 64
    t = times(0.0, 0.5, 1.0)
    out = stored.solve(w0, t)
    assert out.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(out, fine.solve(w0, t)[..., ::4, ::4], rtol=0, atol=1e-10)
    # the 16² solve of the same (band-limited) start differs: the fine grid resolves the cascade
    coarse = NavierStokes2D(n=16, **kwargs).solve(w0[..., ::4, ::4], t)
    assert (rms(coarse[:, -1] - out[:, -1]) / rms(out[:, -1])).min().item() > 1e-3
    assert torch.equal(stored.grid[0], torch.arange(16, dtype=torch.float64) * TWO_PI / 16)


def test_solve_fine_store_coarse_accepts_an_output_grid_start() -> None:
    """A start on the output grid is interpolated spectrally: the Taylor-Green vortex stays exact."""
    nu, k = 0.02, 3
    solver = NavierStokes2D(n=16, n_solve=64, length=TWO_PI, dt=0.05, nu=nu, forcing="none")
    x, y = solver.mesh()
    w0 = 2 * k * torch.cos(k * x) * torch.cos(k * y)
    out = solver.solve(w0[None, None], times(0.0, 1.0))
    exact = w0 * math.exp(-2 * nu * k**2)
    assert out.shape == (1, 2, 1, 16, 16)
    assert (out[0, -1, 0] - exact).abs().max().item() < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"forcing": "sine"}, "forcing"),
        ({"ic": "vortex"}, "ic"),
        ({"nu": -1e-3}, "nu"),
        ({"nu": 0.0}, "nu"),
        ({"nu": [1e-3]}, "nu"),
        ({"nu": [0.0, 1e-3, "log"]}, "nu"),
        ({"drag": -0.1}, "drag"),
        ({"drag": [-0.1, 0.1]}, "drag"),
        ({"forcing": "kolmogorov", "forcing_wavenumber": 0}, "forcing_wavenumber"),
        ({"forcing": "kolmogorov", "forcing_wavenumber": 11}, "forcing_wavenumber"),
        ({"forcing": "fno", "forcing_wavenumber": 1.5}, "forcing_wavenumber"),
        ({"forcing_amplitude": float("nan")}, "forcing_amplitude"),
        ({"ic_alpha": 1.0}, "ic_alpha"),
        ({"ic_tau": 0.0}, "ic_tau"),
        ({"cfl": 0.0}, "cfl"),
        ({"cfl": 2.0}, "cfl"),
        ({"n": 31}, "n"),
        ({"dt": -0.1}, "dt"),
        ({"n_solve": 48}, "n_solve"),
        ({"n_solve": 16}, "n_solve"),
    ],
)
def test_bad_config_is_refused(kwargs: dict, key: str) -> None:
    config = {"n": 32, "length": 1.0, "dt": 0.01} | kwargs
    with pytest.raises(ConfigError, match=key):
        NavierStokes2D(**config)


def test_bad_parameters_at_solve_time_are_refused() -> None:
    solver = NavierStokes2D(n=16, length=1.0, dt=0.01)
    w0 = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ConfigError, match="drag"):
        solver.solve(w0, [0.0], {"drag": torch.tensor([0.1, -0.1])})
    with pytest.raises(ConfigError, match="nu"):
        solver.solve(w0, [0.0], {"nu": torch.tensor([1e-3, 0.0])})
    with pytest.raises(ConfigError, match="allowed"):
        solver.solve(w0, [0.0], {"viscosity": torch.tensor([1e-3, 1e-3])})
    with pytest.raises(ConfigError, match="expected"):
        solver.solve(torch.zeros(2, 16, 16), [0.0])


def test_forcing_none_has_no_amplitude_parameter() -> None:
    solver = NavierStokes2D(n=16, length=1.0, dt=0.01, forcing="none")
    assert set(solver.sample_params(1)) == {"nu", "drag"}
    assert set(NavierStokes2D(n=16, length=1.0, dt=0.01).sample_params(1)) == {
        "nu",
        "drag",
        "forcing_amplitude",
    }
