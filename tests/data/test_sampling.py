import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data.sampling import ParameterSampler
from solvers.base import ParamSpec
from solvers.errors import ConfigError


def specs(*ranges):
    names = ["nu", "a", "b"]
    return {names[i]: ParamSpec(names[i], r) for i, r in enumerate(ranges)}


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("value", [[0.5, 1.5], [1e-3, 1e-1, "log"]])
def test_unit_coordinates_invert(value):
    spec = ParamSpec("nu", value)
    u = torch.rand(100, dtype=torch.float64)
    torch.testing.assert_close(spec.to_unit(spec.from_unit(u)), u)
    assert float(spec.from_unit(torch.tensor(0.0))) == pytest.approx(spec.low)
    assert float(spec.from_unit(torch.tensor(1.0))) == pytest.approx(spec.high)


def test_uniform_mode_draws_what_the_solver_draws_bit_for_bit():
    params = specs([0.5, 1.5], 2.0, [1e-3, 1e-1, "log"])
    sampler = ParameterSampler(params, "uniform")
    for seed in range(20):
        g1, g2 = gen(seed), gen(seed)
        mine = sampler.draw(g1)
        theirs = {name: spec.sample(1, g2) for name, spec in params.items()}
        assert all(torch.equal(mine[k], theirs[k]) for k in params)
        assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))  # same consumption
    assert sampler.drawn.sum() == 20


def test_adaptive_without_estimates_is_the_uniform_distribution_and_consumes_the_same_numbers():
    params = specs([0.5, 1.5], [1e-3, 1e-1, "log"])
    adaptive, uniform = ParameterSampler(params, "adaptive", bins=5), ParameterSampler(params, "uniform")
    for seed in range(20):
        g1, g2 = gen(seed), gen(seed)
        a, u = adaptive.draw(g1), uniform.draw(g2)
        for k in params:
            torch.testing.assert_close(a[k], u[k], rtol=1e-12, atol=0)
        assert torch.equal(torch.rand(2, generator=g1), torch.rand(2, generator=g2))


def test_draws_follow_the_cell_probabilities_and_are_uniform_within_a_cell():
    sampler = ParameterSampler(specs([0.0, 4.0]), "adaptive", bins=4)
    sampler.probs = torch.tensor([0.1, 0.6, 0.2, 0.1], dtype=torch.float64)
    values = torch.cat([sampler.draw(gen(i))["nu"] for i in range(4000)])
    counts = torch.histc(values, bins=4, min=0, max=4)
    expected = 4000 * sampler.probs
    assert torch.all((counts - expected).abs() < 4 * expected.sqrt() + 1)  # 4 sigma
    inside = values[(values >= 1) & (values < 2)] - 1  # cell 1, mapped to [0, 1)
    assert abs(float(inside.mean()) - 0.5) < 0.02 and abs(float(inside.var()) - 1 / 12) < 0.01
    torch.testing.assert_close(sampler.drawn, counts.double())


def test_two_parameters_use_the_joint_distribution():
    sampler = ParameterSampler(specs([0.0, 1.0], [0.0, 1.0]), "adaptive", bins=2)
    sampler.probs = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # all mass in cell (1, 1)
    sampler.probs = 0.9 * sampler.probs + 0.1 / 4
    draws = [sampler.draw(gen(i)) for i in range(2000)]
    both_high = sum(float(d["nu"]) >= 0.5 and float(d["a"]) >= 0.5 for d in draws) / len(draws)
    assert abs(both_high - 0.925) < 0.03
    assert sampler.cells_of({"nu": torch.tensor([0.2, 0.7]), "a": torch.tensor([0.9, 0.1])}).tolist() == [
        1,
        2,
    ]


def test_mass_moves_to_an_injected_high_loss_region_and_the_rest_stays_covered():
    sampler = ParameterSampler(specs([0.5, 1.5]), "adaptive", bins=8, mix=0.2, temperature=1.0)
    nu = torch.linspace(0.5, 1.5, 256, dtype=torch.float64)
    loss = torch.where(nu < 0.625, 10.0, 1.0)  # the first cell is hard
    sampler.record({"nu": nu}, loss, torch.ones_like(loss))
    sampler.update()
    probs = sampler.probs
    assert float(probs.sum()) == pytest.approx(1.0)
    weight = torch.tensor([10.0] + [1.0] * 7) / 17
    torch.testing.assert_close(probs, 0.8 * weight.double() + 0.2 / 8)
    assert float(probs[0]) > 0.45 and float(probs.min()) >= 0.2 / 8
    draws = torch.cat([sampler.draw(gen(i))["nu"] for i in range(3000)])
    assert abs(float((draws < 0.625).double().mean()) - float(probs[0])) < 0.03
    assert torch.histc(draws, bins=8, min=0.5, max=1.5).min() > 0


@pytest.mark.parametrize("signal", ["relative", "loss"])
def test_the_relative_signal_discounts_a_region_whose_targets_are_larger(signal):
    """Cell 0's losses are 10x the rest, but so is its targets' mean square: in relative terms every cell
    is equally hard, and only the loss signal moves mass there."""
    sampler = ParameterSampler(specs([0.0, 1.0]), "adaptive", bins=2, mix=0.2, signal=signal)
    nu = torch.tensor([0.1, 0.2, 0.6, 0.9])
    scale = torch.tensor([10.0, 10.0, 1.0, 1.0])
    sampler.record({"nu": nu}, 0.03 * scale, scale)
    sampler.update()
    expected = [0.5, 0.5] if signal == "relative" else [0.8 * 10 / 11 + 0.1, 0.8 / 11 + 0.1]
    torch.testing.assert_close(sampler.probs, torch.tensor(expected, dtype=torch.float64))


def test_cells_without_an_estimate_are_explored_first_and_estimates_are_averaged():
    sampler = ParameterSampler(specs([0.0, 1.0]), "adaptive", bins=2, mix=0.5, memory=0.5)
    sampler.record({"nu": torch.tensor([0.1])}, torch.tensor([2.0]), torch.ones(1))
    sampler.update()
    assert torch.equal(sampler.loss[0], torch.tensor(2.0, dtype=torch.float64)) and sampler.loss[1].isnan()
    torch.testing.assert_close(sampler.probs, torch.tensor([0.5, 0.5], dtype=torch.float64))
    sampler.record({"nu": torch.tensor([0.2, 0.3, 0.9])}, torch.tensor([4.0, 6.0, 1.0]), torch.ones(3))
    sampler.update()
    torch.testing.assert_close(sampler.loss, torch.tensor([0.5 * 2 + 0.5 * 5, 1.0], dtype=torch.float64))


def test_state_dict_resumes_the_same_draws():
    params = specs([0.5, 1.5])
    first = ParameterSampler(params, "adaptive", bins=4)
    first.record({"nu": torch.tensor([0.6, 1.4])}, torch.tensor([3.0, 1.0]), torch.ones(2))
    first.update()
    first.record({"nu": torch.tensor([1.0])}, torch.tensor([5.0]), torch.ones(1))  # pending at the checkpoint
    resumed = ParameterSampler(params, "adaptive", bins=4)
    resumed.load_state_dict(first.state_dict())
    for sampler in (first, resumed):
        sampler.update()
    assert torch.equal(first.probs, resumed.probs)
    assert all(torch.equal(first.draw(gen(i))["nu"], resumed.draw(gen(i))["nu"]) for i in range(10))
    with pytest.raises(ConfigError, match="bins"):
        ParameterSampler(params, "adaptive", bins=8).load_state_dict(first.state_dict())
    with pytest.raises(ConfigError, match=r"signal='relative'\).*signal='loss'\)"):
        ParameterSampler(params, "adaptive", bins=4, signal="loss").load_state_dict(first.state_dict())


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"data\.sampling='greedy'.*uniform, adaptive"):
        ParameterSampler(specs([0.5, 1.5]), "greedy")
    with pytest.raises(ConfigError, match="needs a PDE parameter given as a range"):
        ParameterSampler(specs(1.0), "adaptive")
    for key, value in (("bins", 0), ("mix", 0.0), ("temperature", -1.0), ("memory", 1.0), ("signal", "mse")):
        with pytest.raises(ConfigError, match=f"data.adaptive.{key}"):
            ParameterSampler(specs([0.5, 1.5]), "adaptive", **{key: value})


def _ddp_worker(rank, path, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    sampler = ParameterSampler(specs([0.0, 1.0]), "adaptive", bins=2, memory=0.0)
    nu = torch.tensor([0.25, 0.75]) if rank == 0 else torch.tensor([0.25, 0.25])
    sampler.record(
        {"nu": nu}, torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([7.0, 9.0]), torch.ones(2)
    )
    sampler.update()
    torch.save(sampler.probs, f"{out}{rank}.pt")
    dist.destroy_process_group()


def test_ddp_ranks_merge_their_losses_into_one_distribution(tmp_path):
    mp.start_processes(
        _ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "p")), nprocs=2, start_method="spawn"
    )
    p0, p1 = (torch.load(tmp_path / f"p{r}.pt") for r in (0, 1))
    assert torch.equal(p0, p1)
    single = ParameterSampler(specs([0.0, 1.0]), "adaptive", bins=2, memory=0.0)
    single.record(
        {"nu": torch.tensor([0.25, 0.75, 0.25, 0.25])}, torch.tensor([1.0, 2.0, 7.0, 9.0]), torch.ones(4)
    )
    single.update()
    torch.testing.assert_close(p0, single.probs)
    assert math.isclose(float(single.loss[0]), 17 / 3)
