"""Behaviour of solvers/base.py (parameters, output times, burn-in), with the KS solver as concrete class."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from solvers.base import ParamSpec, dealias_mask, spectral_resample, wavenumbers, whole_multiple
from solvers.burgers import Burgers
from solvers.errors import ConfigError, check_choice, check_int, check_number
from solvers.ks import KuramotoSivashinsky

F64 = torch.float64
CONF = Path(__file__).resolve().parents[2] / "conf" / "pde"


def _solver(**kwargs: object) -> KuramotoSivashinsky:
    return KuramotoSivashinsky(**{"n": 32, "length": 16.0, "burn_in": 0.0, **kwargs})


def _u0(solver: KuramotoSivashinsky, batch: int = 2) -> torch.Tensor:
    return solver.initial_condition(batch, torch.Generator().manual_seed(0), dtype=F64)


# ----------------------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    ("value", "low", "high", "message"),
    [
        (0, 1, None, "data.k=0 is not allowed; allowed: an int >= 1"),
        (True, 0, None, "data.k=True is not allowed; allowed: an int >= 0"),
        (2.0, 1, None, "data.k=2.0 is not allowed; allowed: an int >= 1"),
        ("3", 1, None, "data.k='3' is not allowed; allowed: an int >= 1"),
        (6, 0, 5, "data.k=6 is not allowed; allowed: an int in [0, 5]"),
    ],
)
def test_check_int_refuses_with_one_sentence(value: object, low: int, high: int | None, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_int("data.k", value, low, high)
    assert str(error.value) == message


def test_check_int_accepts_the_bounds() -> None:
    assert check_int("k", 0, 0, 5) == 0 and check_int("k", 5, 0, 5) == 5 and check_int("k", 10**9, 1) == 10**9


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {"low": 0, "low_open": True}, "dt=0 is not allowed; allowed: a number > 0"),
        (-0.5, {"low": 0}, "dt=-0.5 is not allowed; allowed: a number >= 0"),
        (1.0, {"low": 0, "high": 1, "high_open": True}, "dt=1.0 is not allowed; allowed: a number in [0, 1)"),
        (0, {"low": 0, "high": 1, "low_open": True}, "dt=0 is not allowed; allowed: a number in (0, 1]"),
        (2, {"high": 1}, "dt=2 is not allowed; allowed: a number <= 1"),
        (math.inf, {}, "dt=inf is not allowed; allowed: a finite number"),
        (math.nan, {"low": 0}, "dt=nan is not allowed; allowed: a number >= 0"),
        (False, {}, "dt=False is not allowed; allowed: a finite number"),
        ("0.1", {}, "dt='0.1' is not allowed; allowed: a finite number"),
    ],
)
def test_check_number_refuses_with_one_sentence(value: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_number("dt", value, **kwargs)
    assert str(error.value) == message


def test_check_number_accepts_closed_bounds_and_ints() -> None:
    assert check_number("x", 0, low=0, high=1) == 0.0 and isinstance(check_number("x", 1, high=1), float)
    assert check_number("x", 0.5, low=0, high=1, low_open=True, high_open=True) == 0.5


def test_check_choice_lists_the_allowed_values() -> None:
    assert check_choice("data.generation", "cpu", ("cpu", "device")) == "cpu"
    with pytest.raises(ConfigError) as error:
        check_choice("data.generation", "gpu", ("cpu", "device"))
    assert str(error.value) == "data.generation='gpu' is not allowed; allowed: cpu, device"


# ----------------------------------------------------------------------------- ParamSpec
def test_number_is_fixed() -> None:
    spec = ParamSpec("nu", 2)
    assert spec.fixed and spec.low == spec.high == 2.0
    assert torch.equal(spec.sample(3, None), torch.full((3,), 2.0, dtype=F64))


def test_range_is_uniform() -> None:
    spec = ParamSpec("nu", [0.5, 1.5])
    draws = spec.sample(4000, torch.Generator().manual_seed(0))
    assert not spec.fixed and draws.dtype == F64
    assert float(draws.min()) >= 0.5 and float(draws.max()) <= 1.5
    assert abs(float(draws.mean()) - 1.0) < 0.02  # uniform mean; std of the estimate ~ 0.0046
    assert abs(float((draws < 0.75).double().mean()) - 0.25) < 0.03


def test_log_range_is_log_uniform() -> None:
    spec = ParamSpec("nu", [1e-3, 1e-1, "log"])
    draws = spec.sample(4000, torch.Generator().manual_seed(0))
    assert spec.log and float(draws.min()) >= 1e-3 and float(draws.max()) <= 1e-1
    assert abs(float(draws.log10().mean()) + 2.0) < 0.03  # log10 uniform on [-3, -1]
    assert abs(float((draws < 1e-2).double().mean()) - 0.5) < 0.03


def test_sampling_is_reproducible() -> None:
    spec = ParamSpec("nu", [0.5, 1.5])
    a = spec.sample(5, torch.Generator().manual_seed(3))
    b = spec.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("value", "positive", "match"),
    [
        ([1.0], False, "number, \\[low, high\\]"),
        ([1.0, 2.0, 3.0], False, "number, \\[low, high\\]"),
        ([1.0, "x"], False, "number, \\[low, high\\]"),
        ([1.0, 2.0, "linear"], False, "number, \\[low, high\\]"),
        ([2.0, 1.0], False, "low must not exceed high"),
        ([0.0, 1.0, "log"], False, "must be > 0"),
        (-1.0, True, "must be > 0"),
        ([0.0, 1.0], True, "must be > 0"),
        (math.inf, False, "finite"),
        ([0.0, math.nan], False, "must be finite"),
    ],
)
def test_bad_parameter_values(value: object, positive: bool, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ParamSpec("nu", value, positive=positive)


def test_sample_params_gives_one_value_per_trajectory() -> None:
    params = _solver(nu=[0.5, 1.5]).sample_params(6, torch.Generator().manual_seed(0))
    assert set(params) == {"nu"} and params["nu"].shape == (6,) and params["nu"].dtype == F64


# ----------------------------------------------------------------------------- complete_params
def test_complete_params_fills_missing_with_midpoint_and_broadcasts_scalars() -> None:
    solver = _solver(nu=[0.5, 1.5])
    full = solver.complete_params(None, 3, torch.device("cpu"), torch.float32)
    assert torch.equal(full["nu"], torch.ones(3))
    full = solver.complete_params({"nu": 0.7}, 3, torch.device("cpu"), F64)
    assert torch.equal(full["nu"], torch.full((3,), 0.7, dtype=F64))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"viscosity": 1.0}, "unknown parameter"),
        ({"nu": torch.ones(3)}, "3 values for a batch of 2"),
        ({"nu": torch.tensor([1.0, 0.0])}, "must be > 0"),
        ({"nu": torch.tensor([1.0, math.nan])}, "non-finite"),
    ],
)
def test_complete_params_errors(params: dict, match: str) -> None:
    solver = _solver()
    with pytest.raises(ConfigError, match=match):
        solver.complete_params(params, 2, torch.device("cpu"), F64)
    with pytest.raises(ConfigError, match=match):
        solver.solve(_u0(solver), [0.5], params)


# ----------------------------------------------------------------------------- solve
@pytest.mark.parametrize("t", [[], [-0.5, 1.0], [1.0, 0.5]])
def test_output_times_are_validated(t: list[float]) -> None:
    solver = _solver()
    with pytest.raises(ConfigError, match="output times"):
        solver.solve(_u0(solver), t)


@pytest.mark.parametrize("shape", [(2, 32), (2, 2, 32), (2, 1, 16), (2, 1, 32, 32)])
def test_u0_shape_is_validated(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="expected \\[batch, 1, 32\\]"):
        _solver().solve(torch.zeros(shape, dtype=F64), [1.0])


def test_repeated_and_zero_times() -> None:
    solver = _solver()
    u0 = _u0(solver)
    out = solver.solve(u0, [0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(out[:, 0], u0)
    torch.testing.assert_close(out[:, 1], u0)
    torch.testing.assert_close(out[:, 2], out[:, 3])
    assert not torch.allclose(out[:, 1], out[:, 2])


def test_burn_in_shifts_time() -> None:
    """With burn-in b, the output at t equals the output at t + b of a run without burn-in."""
    u0 = _u0(_solver())
    shifted = _solver(burn_in=2.0).solve(u0, [0.0, 1.0])
    plain = _solver().solve(u0, [2.0, 3.0])
    torch.testing.assert_close(shifted, plain, rtol=1e-12, atol=1e-12)


def test_outputs_split_into_equal_substeps_no_larger_than_dt() -> None:
    """An interval of 0.6 with dt = 0.25 takes three steps of 0.2: equal to outputs at every 0.2."""
    solver = _solver(dt=0.25)
    u0 = _u0(solver)
    coarse = solver.solve(u0, [0.6])
    fine = _solver(dt=0.2).solve(u0, [0.2, 0.4, 0.6])
    torch.testing.assert_close(coarse[:, 0], fine[:, -1], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- spectral helpers
def test_wavenumbers_and_dealias_mask() -> None:
    k = wavenumbers(8, 2 * math.pi)
    assert k.tolist() == [0, 1, 2, 3, -4, -3, -2, -1]
    assert wavenumbers(8, 4 * math.pi, real=True).tolist() == [0, 0.5, 1, 1.5, 2]
    assert dealias_mask(12, real=True).tolist() == [True] * 4 + [False] * 3  # |k| < 4
    assert int(dealias_mask(12).sum()) == 7  # 0, ±1, ±2, ±3


@pytest.mark.parametrize("cls", [KuramotoSivashinsky, Burgers])
def test_solve_fine_store_coarse_in_1d(cls: type) -> None:
    """``n_solve = 4n``: the fine solve's every 4th point; initial states on the fine grid; both grids accepted."""
    fine = cls(n=64, length=16.0, dt=0.05, burn_in=0.0)
    stored = cls(n=16, n_solve=64, length=16.0, dt=0.05, burn_in=0.0)
    u0 = stored.initial_condition(2, torch.Generator().manual_seed(0), dtype=F64)
    assert u0.shape == (2, 1, 64)
    torch.testing.assert_close(u0, fine.initial_condition(2, torch.Generator().manual_seed(0), dtype=F64))
    t = [0.0, 0.5, 1.0]
    out = stored.solve(u0, t)
    assert out.shape == (2, 3, 1, 16)
    torch.testing.assert_close(out, fine.solve(u0, t)[..., ::4], rtol=0, atol=1e-12)
    assert stored.grid[0].shape == (16,) and stored.dx == 1.0 and stored.dx_solve == 0.25
    band_limited = spectral_resample(u0, 16, 1)  # representable on the output grid: the same solve
    torch.testing.assert_close(
        stored.solve(band_limited, t), stored.solve(spectral_resample(band_limited, 64, 1), t)
    )


@pytest.mark.parametrize("n_solve", [24, 8, 32.0])
def test_n_solve_must_be_a_multiple_of_n(n_solve: object) -> None:
    with pytest.raises(ConfigError, match="n_solve"):
        _solver(n_solve=n_solve)


@pytest.mark.parametrize(
    ("dt", "dt_out", "steps"),
    [(0.25, 1.0, 4), (0.2, 0.8, 4), (0.1, 0.3, 3), (0.05, 0.05, 1), (0.25, None, 0)],
)
def test_dt_out_is_a_whole_number_of_solver_steps(dt: float, dt_out: float | None, steps: int) -> None:
    solver = _solver(dt=dt, dt_out=dt_out)
    assert solver.dt_out == (None if dt_out is None else steps * dt)


@pytest.mark.parametrize("dt_out", [0.3, 0.1, -0.25, 0.0, math.inf, math.nan, "1.0"])
def test_dt_out_must_be_a_positive_multiple_of_dt(dt_out: object) -> None:
    with pytest.raises(
        ConfigError,
        match=r"dt_out=.* is not allowed: it must be a positive multiple of the solver's dt=0\.25",
    ):
        _solver(dt_out=dt_out)


def test_whole_multiple_tolerates_decimal_rounding_only() -> None:
    assert whole_multiple(0.3, 0.1) == 3 and 0.3 / 0.1 != 3  # 2.9999999999999996
    assert whole_multiple(1.0 + 1e-5, 0.25) == 0 and whole_multiple(1.0, 0.0) == 0


@pytest.mark.parametrize(
    ("config", "names"),
    [
        (OmegaConf.load(CONF / "ks.yaml"), ("nu",)),
        (OmegaConf.load(CONF / "burgers.yaml"), ("nu",)),
        (OmegaConf.load(CONF / "navier_stokes.yaml"), ("nu", "drag", "forcing_amplitude")),
        (OmegaConf.merge(OmegaConf.load(CONF / "kolmogorov.yaml"), {"forcing": "none"}), ("nu", "drag")),
    ],
)
def test_param_names_read_from_the_class_match_the_built_solver(config, names) -> None:
    cls = hydra.utils.get_class(config._target_)
    assert cls.param_names(config) == names == tuple(hydra.utils.instantiate(config).params)


def test_a_parameter_missing_from_param_order_is_refused() -> None:
    class Unlisted(KuramotoSivashinsky):
        param_order = ()

    with pytest.raises(TypeError, match=r"Unlisted\.param_order does not list the parameter 'nu'"):
        Unlisted(n=32)


def test_every_pde_preset_carries_its_output_interval() -> None:
    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        intervals = {
            p.stem: compose("generate", [f"pde={p.stem}"]).pde.get("dt_out") for p in CONF.glob("*.yaml")
        }
    assert intervals == {
        "ks": 1.0,
        "ks_lpsda": 100 / 499,
        "burgers": 0.1,
        "burgers_fno": 1.0,  # the operator u0 -> u(., 1)
        "burgers_fno_2pi": 1.0,
        "navier_stokes": 1.0,
        "kolmogorov": 0.2,
        "external": 1.0,  # data another program made: the frames' interval, a multiple of the file's
    }


SMALL = {
    "ks": ["n=64", "burn_in=4.0"],
    "burgers": ["n=64"],
    "navier_stokes": ["n=32"],
    "kolmogorov": ["n=32", "burn_in=0.4"],
}


@pytest.mark.parametrize("pde", sorted(SMALL))
@pytest.mark.parametrize("batch", [3, 5])
def test_a_solve_gives_the_same_bits_on_one_thread_and_two(pde: str, batch: int, monkeypatch) -> None:
    """Split over two threads (SERIAL_POINTS lowered so that a small batch splits), a batch gives the bits
    of the one-part solve: no part holds a lone trajectory, which MKL transforms by another path in 2D."""
    config = OmegaConf.load(CONF / f"{pde}.yaml")
    config.merge_with_dotlist(SMALL[pde])
    solver = hydra.utils.instantiate(config)
    u0 = solver.initial_condition(batch, torch.Generator().manual_seed(1))
    params = solver.sample_params(batch, torch.Generator().manual_seed(2))
    times = [solver.dt_out * k for k in range(4)]
    monkeypatch.setattr("solvers.base.SERIAL_POINTS", 8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = solver.solve(u0, times, params)
        torch.set_num_threads(2)
        split = solver.solve(u0, times, params)
    finally:
        torch.set_num_threads(before)
    assert serial.isfinite().all() and serial.std() > 0
    assert torch.equal(split, serial)


# ----------------------------------------------------------------------------- spectral resampling
L = 2 * math.pi  # period of the resampling test fields


def trig_1d(n):
    x = torch.arange(n, dtype=torch.float64) * L / n
    return 1 + torch.sin(3 * x) - 0.5 * torch.cos(7 * x)


def trig_2d(n):
    x = torch.arange(n, dtype=torch.float64) * L / n
    x, y = torch.meshgrid(x, x, indexing="ij")
    return torch.sin(3 * x - 5 * y) + torch.cos(2 * x + 6 * y) + 0.3 * torch.sin(7 * y)


@pytest.mark.parametrize(("field", "ndim"), [(trig_1d, 1), (trig_2d, 2)])
def test_spectral_resample_is_exact_for_band_limited_fields(field, ndim):
    assert torch.allclose(spectral_resample(field(16), 48, ndim), field(48), atol=1e-12)
    assert torch.allclose(spectral_resample(field(64), 16, ndim), field(16), atol=1e-12)
    assert spectral_resample(field(16), 16, ndim) is not None


def test_spectral_resample_drops_unresolved_modes():
    x = torch.arange(32, dtype=torch.float64) * L / 32
    coarse = spectral_resample(torch.sin(x) + torch.sin(12 * x), 16, 1)  # 12 > 16 / 2: not representable
    assert torch.allclose(coarse, torch.sin(torch.arange(16, dtype=torch.float64) * L / 16), atol=1e-12)


def test_solvers_register_themselves_and_only_pdestreams_are_allowed_in_stored_configs():
    from data.config import SOLVER_TARGETS
    from solvers.base import SOLVERS
    from tests.data.conftest import Heat

    assert set(SOLVERS) == {
        "solvers.ks.KuramotoSivashinsky",
        "solvers.burgers.Burgers",
        "solvers.navier_stokes.NavierStokes2D",
        "solvers.external.External",
    }
    assert Heat not in SOLVERS.values() and "solvers.KuramotoSivashinsky" in SOLVER_TARGETS


def test_a_ranged_setting_the_solver_does_not_support_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"length=\[6.0, 7.0\] is not allowed for Burgers: give a number"):
        Burgers(length=[6.0, 7.0])
