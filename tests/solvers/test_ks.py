"""Kuramoto-Sivashinsky solver: exact linear evolution, ETDRK4 order, invariants, batching, errors."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from solvers.base import SERIAL_POINTS, DivergenceError
from solvers.errors import ConfigError
from solvers.ks import KuramotoSivashinsky
from solvers.spectral import etdrk4_coefficients

F64 = torch.float64


def _initial(
    solver: KuramotoSivashinsky, batch: int, seed: int = 0, dtype: torch.dtype = F64
) -> torch.Tensor:
    return solver.initial_condition(batch, torch.Generator().manual_seed(seed), dtype=dtype)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def test_etdrk4_coefficients_match_closed_forms() -> None:
    """Against the direct formulas where they are well conditioned, and the limits 1/2, 1/6 at z = 0."""
    z = torch.tensor([-3000.0, -40.0, -2.5, 0.0, 0.7], dtype=F64)
    q, f1, f2, f3 = etdrk4_coefficients(z)
    torch.testing.assert_close(q[3], torch.tensor(0.5, dtype=F64), rtol=1e-13, atol=0)
    for f in (f1, f2, f3):
        torch.testing.assert_close(f[3], torch.tensor(1 / 6, dtype=F64), rtol=1e-12, atol=0)
    y, ey = z[[0, 1, 2, 4]], torch.exp(z[[0, 1, 2, 4]])
    direct = (
        (torch.exp(y / 2) - 1) / y,
        (-4 - y + ey * (4 - 3 * y + y**2)) / y**3,
        (2 + y + ey * (y - 2)) / y**3,
        (-4 - 3 * y - y**2 + ey * (4 - y)) / y**3,
    )
    for got, want in zip((q, f1, f2, f3), direct, strict=True):
        torch.testing.assert_close(got[[0, 1, 2, 4]], want, rtol=1e-10, atol=0)


@pytest.mark.parametrize("nu", [1.0, 0.3])
def test_small_amplitude_mode_follows_linear_growth_exactly(nu: float) -> None:
    """With u = eps sin(k x), eps = 1e-9, u(t) = eps exp((k^2 - nu k^4) t) sin(k x); ETDRK4 is exact in h."""
    solver = KuramotoSivashinsky(n=64, length=32.0, dt=0.25, nu=nu, burn_in=0.0)
    x = solver.grid[0]
    k = 2 * math.pi * 3 / solver.length
    u0 = 1e-9 * torch.sin(k * x).reshape(1, 1, -1)
    t = torch.tensor([0.0, 1.3, 4.0], dtype=F64)
    out = solver.solve(u0, t)
    exact = u0 * torch.exp((k**2 - nu * k**4) * t).reshape(1, -1, 1)
    torch.testing.assert_close(out, exact.unsqueeze(2), rtol=1e-6, atol=1e-20)


def test_fourth_order_in_time_on_a_resolved_grid() -> None:
    """Observed order ~4 under dt halving (reference dt = 1/512).

    A coarse grid keeps ``h |Lin|`` moderate; on the default fine grid (n = 256, kmax^4 ~ 5e3) the
    Cox-Matthews ETDRK4 shows the known stiff order reduction (observed ~3.0-3.5 for dt in [1/64, 1/4]).
    """
    solver = KuramotoSivashinsky(n=64, length=64.0, burn_in=0.0)
    u0 = 4 * _initial(solver, 2, seed=1)
    reference = KuramotoSivashinsky(n=64, length=64.0, dt=1 / 512, burn_in=0.0).solve(u0, [2.0])
    errors = [
        _relative_error(
            KuramotoSivashinsky(n=64, length=64.0, dt=dt, burn_in=0.0).solve(u0, [2.0]), reference
        )
        for dt in (1 / 8, 1 / 16, 1 / 32)
    ]
    orders = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert all(3.6 <= p <= 4.4 for p in orders), (errors, orders)


def test_default_dt_is_accurate_on_a_chaotic_state() -> None:
    """Default set-up: after the burn-in, dt = 0.25 stays within 1e-3 (relative) of dt = 1/128 at t = 2."""
    solver = KuramotoSivashinsky(burn_in=0.0)
    chaotic = KuramotoSivashinsky(burn_in=50.0).solve(_initial(solver, 2), [0.0])[:, 0]
    reference = KuramotoSivashinsky(dt=1 / 128, burn_in=0.0).solve(chaotic, [2.0])
    assert _relative_error(solver.solve(chaotic, [2.0]), reference) < 1e-3


def test_spatial_mean_is_conserved() -> None:
    solver = KuramotoSivashinsky(n=128, length=64.0, burn_in=0.0)
    u0 = _initial(solver, 3) + torch.tensor([0.0, 0.3, -0.2], dtype=F64).reshape(3, 1, 1)
    out = solver.solve(u0, [0.0, 10.0, 30.0])
    means = out.mean(dim=-1)
    torch.testing.assert_close(means, means[:, :1].expand_as(means), rtol=0, atol=1e-12)
    assert float(out[:, -1].std(dim=-1).min()) > 0.5  # the fields did evolve


def test_batched_parameters_equal_single_solves() -> None:
    solver = KuramotoSivashinsky(n=64, length=32.0, nu=[0.5, 1.5], burn_in=1.0)
    u0 = _initial(solver, 3)
    nu = torch.tensor([0.6, 1.0, 1.4], dtype=F64)
    t = [0.0, 0.7, 2.0]
    batched = solver.solve(u0, t, {"nu": nu})
    for i in range(3):
        single = solver.solve(u0[i : i + 1], t, {"nu": nu[i : i + 1]})
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(batched[0], batched[2])  # nu matters


def test_float32_tracks_float64() -> None:
    solver = KuramotoSivashinsky(n=128, burn_in=0.0)
    u0 = _initial(solver, 2)
    out64 = solver.solve(u0, [0.0, 5.0])
    out32 = solver.solve(u0.float(), [0.0, 5.0])
    assert out32.dtype == torch.float32
    assert _relative_error(out32.double(), out64) < 1e-4


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_follows_input_device_and_dtype(device: str, dtype: torch.dtype) -> None:
    solver = KuramotoSivashinsky(n=32, length=16.0, burn_in=0.0)
    u0 = solver.initial_condition(2, torch.Generator().manual_seed(0), device=device, dtype=dtype)
    out = solver.solve(u0, [0.0, 0.5, 1.0])
    assert out.shape == (2, 3, 1, 32) and out.dtype == dtype and out.device.type == device
    torch.testing.assert_close(out[:, 0], u0)  # the initial waves lie in the kept modes


def test_initial_condition_recipe() -> None:
    """Sum of 10 sines with integer wavenumbers 1..max_mode and amplitudes in [-1/2, 1/2]."""
    solver = KuramotoSivashinsky(max_mode=3)
    g = torch.Generator().manual_seed(5)
    u0 = solver.initial_condition(64, g, dtype=F64)
    again = solver.initial_condition(64, torch.Generator().manual_seed(5), dtype=F64)
    assert u0.shape == (64, 1, 256) and torch.equal(u0, again)
    spectrum = torch.fft.rfft(u0, dim=-1).abs() / (solver.n / 2)
    assert float(spectrum[..., 0].abs().max()) < 1e-12 and float(spectrum[..., 4:].max()) < 1e-12
    assert float(spectrum[..., 1:4].amax(dim=(0, 1)).min()) > 0.1  # every mode 1..3 is drawn
    assert float(spectrum.max()) <= 10 * 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 255},
        {"n": 4},
        {"nu": 0.0},
        {"nu": -1.0},
        {"nu": [-0.5, 1.0]},
        {"nu": [1.0, "fast"]},
        {"dt": 0.0},
        {"dt": -0.1},
        {"dt": 2.5},  # above 2 * nu: refused as unstable
        {"dt": 1.5, "nu": [0.5, 1.5]},
        {"length": 0.0},
        {"burn_in": -1.0},
        {"waves": 0},
        {"max_mode": 200},
        {"contour_points": 4},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        KuramotoSivashinsky(**kwargs)


def test_bad_solve_inputs_are_refused() -> None:
    solver = KuramotoSivashinsky(n=32, length=16.0)
    u0 = _initial(solver, 2)
    with pytest.raises(ConfigError, match="nu"):
        solver.solve(u0, [1.0], {"nu": torch.tensor([1.0, -1.0])})
    with pytest.raises(ConfigError, match="dtype"):
        solver.solve(u0.half(), [1.0])


def test_unstable_step_raises_divergence_naming_the_bad_trajectory() -> None:
    """dt = 0.5 is fine for O(1) fields but not for an amplitude-50 one, which blows up within t = 1."""
    solver = KuramotoSivashinsky(n=64, length=32.0, dt=0.5, burn_in=0.0)
    u0 = _initial(solver, 3)
    u0[1] *= 50
    t = [0.0, 1.0, 2.0]
    with pytest.raises(DivergenceError, match="1 of 3 trajectories") as info:
        solver.solve(u0, t)
    assert info.value.indices == [1]
    result = info.value.result
    assert result.shape == (3, 3, 1, 64)
    assert bool(torch.isnan(result[1, 1:]).all())
    good = solver.solve(u0[[0, 2]], t)
    torch.testing.assert_close(result[[0, 2]], good, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nu", [1.0, 0.5])
def test_chaotic_statistics(nu: float) -> None:
    """Long runs stay bounded with O(nu^-1/2) RMS, and the mean spectrum peaks at the fastest-growing
    linear mode ``k = 1 / sqrt(2 nu)``, i.e. mode ``L / (2 pi sqrt(2 nu))`` (7.2 for nu = 1, 10.2 for 0.5)."""
    solver = KuramotoSivashinsky(nu=nu, burn_in=100.0)
    out = solver.solve(_initial(solver, 4), torch.arange(0.0, 200.0, 1.0))
    rms = out.square().mean(dim=-1).sqrt() * math.sqrt(nu)
    assert 0.9 < float(rms.mean()) < 1.8 and float(rms.max()) < 2.5
    assert float(out.abs().max()) * math.sqrt(nu) < 6
    spectrum = torch.fft.rfft(out, dim=-1).abs().square().mean(dim=(0, 1, 2))
    expected = solver.length / (2 * math.pi * math.sqrt(2 * nu))
    assert abs(int(spectrum.argmax()) - expected) <= 1.5


def test_cpu_solves_run_on_one_thread_and_large_batches_in_parts() -> None:
    """Every step sees one intra-op thread; a batch of 2 * SERIAL_POINTS values is solved as two parts
    (one stepper each) equal to the one-part solve, below that as one; the caller's thread count is back
    afterwards, also after a DivergenceError, which names the diverged trajectories of every part."""
    seen = []

    class Probe(KuramotoSivashinsky):
        def _stepper(self, *args: Any) -> Any:
            seen.append(torch.get_num_threads())
            return super()._stepper(*args)

    before = torch.get_num_threads()
    solver = Probe(n=32, length=16.0, dt=0.5, burn_in=0.0)
    large = _initial(solver, 2 * SERIAL_POINTS // solver.n)
    try:
        torch.set_num_threads(1)
        serial = solver.solve(large, [0.5, 1.0])
        torch.set_num_threads(2)
        solver.solve(_initial(solver, SERIAL_POINTS // solver.n), [0.5])
        assert seen == [1, 1] and torch.get_num_threads() == 2
        parts = solver.solve(large, [0.5, 1.0])
        assert seen == [1, 1, 1, 1] and torch.get_num_threads() == 2
        torch.testing.assert_close(parts, serial, rtol=1e-5, atol=1e-6)
        bad = large.clone()
        bad[[5, len(bad) - 3]] *= 50
        with pytest.raises(DivergenceError) as caught:
            solver.solve(bad, [2.0])
        assert caught.value.indices == [5, len(bad) - 3] and torch.get_num_threads() == 2
        assert f"2 of {len(bad)} trajectories blew up" in str(caught.value)
        healthy = caught.value.result[[0, len(bad) - 1]]
        assert torch.isfinite(healthy).all() and caught.value.result[5].isnan().all()
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------- per-trajectory length and time scale
RANGED = {"n": 64, "dt": 0.25, "nu": [0.5, 1.5], "length": [28.8, 35.2], "time_scale": [0.9, 1.1]}


def test_ranged_length_and_time_scale_become_parameters_in_order() -> None:
    solver = KuramotoSivashinsky(**RANGED)
    assert tuple(solver.params) == ("nu", "length", "time_scale")
    assert KuramotoSivashinsky.param_names(RANGED) == ("nu", "length", "time_scale")
    assert KuramotoSivashinsky.param_names({"length": 64.0}) == ("nu",)
    assert solver.length == 32.0 and solver.dx == 0.5  # the grid of the midpoint
    draws = solver.sample_params(4000, torch.Generator().manual_seed(0))
    assert 28.8 <= float(draws["length"].min()) < 29.0 and 35.0 < float(draws["length"].max()) <= 35.2
    assert 0.9 <= float(draws["time_scale"].min()) < 0.91 and 1.09 < float(draws["time_scale"].max()) <= 1.1


def test_per_trajectory_length_equals_fixed_length_solves() -> None:
    solver = KuramotoSivashinsky(n=64, length=[28.8, 35.2], burn_in=1.0)
    u0 = _initial(solver, 3)
    length = torch.tensor([28.8, 31.7, 35.2], dtype=F64)
    t = [0.0, 0.7, 2.0]
    batched = solver.solve(u0, t, {"length": length})
    for i in range(3):
        fixed = KuramotoSivashinsky(n=64, length=float(length[i]), burn_in=1.0)
        assert torch.equal(batched[i : i + 1], fixed.solve(u0[i : i + 1], t))  # bit for bit
    assert not torch.allclose(batched[0], batched[2])  # L matters


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_ranges_at_their_nominal_values_are_the_fixed_solver_bit_for_bit(dtype: torch.dtype) -> None:
    """The ranged code path at L = 64, s = 1 gives exactly the fixed preset's trajectories."""
    fixed = KuramotoSivashinsky(n=64, dt=0.25, nu=[0.5, 1.5], burn_in=2.0)
    ranged = KuramotoSivashinsky(
        n=64, dt=0.25, nu=[0.5, 1.5], burn_in=2.0, length=[60.0, 68.0], time_scale=[0.5, 1.5]
    )
    u0 = _initial(fixed, 3, dtype=dtype)
    nu = torch.tensor([0.6, 1.0, 1.4], dtype=F64)
    t = [0.0, 0.7, 2.0]
    nominal = {"nu": nu, "length": torch.full((3,), 64.0, dtype=F64), "time_scale": torch.ones(3, dtype=F64)}
    assert torch.equal(ranged.solve(u0, t, nominal), fixed.solve(u0, t, {"nu": nu}))


def test_per_trajectory_time_scale_stretches_burn_in_outputs_and_steps() -> None:
    """Trajectory ``b`` at nominal times ``t`` is the solve with step ``s_b · dt`` and burn-in ``s_b · burn_in``
    at times ``s_b · t``."""
    solver = KuramotoSivashinsky(**RANGED, burn_in=1.0)
    params = solver.sample_params(3, torch.Generator().manual_seed(2))
    u0 = _initial(solver, 3)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    batched = solver.solve(u0, t, params)
    for i in range(3):
        s = float(params["time_scale"][i])
        fixed = KuramotoSivashinsky(
            n=64, dt=0.25 * s, nu=float(params["nu"][i]), length=float(params["length"][i]), burn_in=s
        )
        torch.testing.assert_close(batched[i : i + 1], fixed.solve(u0[i : i + 1], t * s), rtol=0, atol=1e-11)


def test_linear_growth_is_exact_with_per_trajectory_length_and_time_scale() -> None:
    """u = eps sin(2π 3 i / n) grows as exp((k_b^2 - nu k_b^4) s_b t) with k_b = 2π 3 / L_b."""
    solver = KuramotoSivashinsky(**RANGED, burn_in=0.0)
    params = {
        "nu": torch.tensor([0.6, 1.2], dtype=F64),
        "length": torch.tensor([29.0, 35.0], dtype=F64),
        "time_scale": torch.tensor([0.9, 1.1], dtype=F64),
    }
    grid_phase = 2 * math.pi * 3 * torch.arange(64, dtype=F64) / 64
    u0 = 1e-9 * torch.sin(grid_phase).expand(2, 1, 64)
    t = torch.tensor([0.0, 1.3, 4.0], dtype=F64)
    k = 2 * math.pi * 3 / params["length"]
    rate = (k**2 - params["nu"] * k**4) * params["time_scale"]
    exact = u0.unsqueeze(1) * torch.exp(rate[:, None] * t).reshape(2, 3, 1, 1)
    torch.testing.assert_close(solver.solve(u0, t, params), exact, rtol=1e-6, atol=1e-20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"time_scale": 2.0}, "time_scale=2.0 is not allowed: give 1 or a range"),
        ({"length": [64.0, "long"]}, "length="),
        ({"dt": 1.0, "nu": [0.5, 1.5], "time_scale": [0.9, 1.1]}, "time_scale up to 1.1"),
    ],
)
def test_bad_ranged_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KuramotoSivashinsky(**kwargs)
