"""The online stream: window spacing, seeds, shard disjointness, resume, divergence handling."""

import itertools
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

import data.stream as stream_module
from data import OnlineDataModule
from data.stream import STREAM_KEY, TrajectoryStream, cut_windows, start_rounds
from data.timegrid import TimeGrid
from data.trajectories import generate, trajectory_seed
from solvers.errors import ConfigError
from solvers.ks import KuramotoSivashinsky
from tests.data.conftest import Heat

ROOT = Path(__file__).resolve().parents[2]
BUFFER = {"policy": "firo", "capacity": 512, "max_reuse": 1, "watermark": 64}


def make_stream(solver, **overrides):
    kwargs = dict(
        seed=7,
        time_history=3,
        target_frames=2,
        frames=8,
        solver_batch=4,
        batch_size=16,
        buffer=BUFFER,
        max_divergence_fraction=0.0,
    )
    kwargs.update(overrides)
    return TrajectoryStream(solver, **kwargs)


def take(stream, n):
    return list(itertools.islice(iter(stream), n))


def test_windows_are_dt_out_apart_in_exact_solution(heat1d):
    batch = take(make_stream(heat1d), 1)[0]
    frames = torch.cat([batch["x"], batch["y"]], dim=1).double()  # [B, 5, 1, X]
    for k in range(frames.shape[1] - 1):
        advanced = heat1d.exact(frames[:, k], 0.2, batch["params"]["nu"].double())
        torch.testing.assert_close(advanced, frames[:, k + 1], atol=1e-5, rtol=1e-5)
    assert torch.all(batch["dt"] == torch.tensor(0.2))
    assert batch["x"].shape == (16, 3, 1, 16) and batch["y"].shape == (16, 2, 1, 16)


def test_trajectory_is_a_pure_function_of_seed_split_index(heat2d):
    times = TimeGrid(0.1, 0.1, 4).times()
    together = generate(heat2d, 3, "train", [5, 9, 11], times)
    alone = generate(heat2d, 3, "train", [9], times)
    torch.testing.assert_close(together.u[1], alone.u[0], atol=0, rtol=0)
    assert together.params["nu"][1] == alone.params["nu"][0]
    exact = heat2d.exact(together.u[:, 0].double(), 0.3, together.params["nu"])
    torch.testing.assert_close(together.u[:, 3].double(), exact, atol=1e-5, rtol=1e-5)
    seeds = {
        trajectory_seed(s, split, i) for s in (0, 1) for split in ("train", "val", "test") for i in range(50)
    }
    assert len(seeds) == 300


def test_stream_is_deterministic_for_a_fixed_seed(heat1d):
    a, b = take(make_stream(heat1d), 5), take(make_stream(heat1d), 5)
    c = take(make_stream(heat1d, seed=8), 5)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["x"], y["x"]) and torch.equal(x[STREAM_KEY]["index"], y[STREAM_KEY]["index"])
    assert not torch.equal(a[0]["x"], c[0]["x"])


def test_cut_windows_slices_consecutive_frames():
    u = torch.arange(2 * 6 * 1 * 3).reshape(2, 6, 1, 3)
    w = cut_windows(u, 4)
    assert w.shape == (6, 4, 1, 3)
    assert torch.equal(w[4], u[1, 1:5])


def test_cut_windows_with_a_stride_start_at_every_frame():
    u = torch.arange(10.0).reshape(1, 10, 1, 1)
    w = cut_windows(u, 3, stride=4)  # spans 9 frames: starts 0 and 1
    assert w.flatten(1).tolist() == [[0.0, 4.0, 8.0], [1.0, 5.0, 9.0]]
    assert cut_windows(u, 2, stride=4).flatten(1)[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # every phase


def test_strided_windows_carry_their_trajectorys_own_time_step():
    """KS with per-trajectory L and time scale, the model stepping 4 frames: each window is frames ``p`` and
    ``p + 4`` of its trajectory, for starts ``p`` of every phase, and its ``dt`` is ``4 · s_b · dt_out``."""
    solver = KuramotoSivashinsky(n=32, length=[14.4, 17.6], time_scale=[0.9, 1.1], dt_out=0.25, burn_in=0.0)
    stream = make_stream(solver, time_history=1, target_frames=1, frames=9, frame_stride=4, solver_batch=2)
    assert stream.windows_per_trajectory == 5
    batch = take(stream, 1)[0]
    starts = set()
    for i, index in enumerate(batch[STREAM_KEY]["index"].tolist()):
        made = generate(solver, 7, "train", [index], stream.times)
        u = made.u[0]
        found = [
            p
            for p in range(5)
            if torch.equal(u[p], batch["x"][i, 0]) and torch.equal(u[p + 4], batch["y"][i, 0])
        ]
        assert len(found) == 1
        starts.add(found[0])
        expected = torch.tensor(4 * 0.25 * float(made.params["time_scale"][0]), dtype=torch.float32)
        assert batch["dt"][i] == expected and 0.9 <= float(batch["dt"][i]) <= 1.1
        assert batch["params"]["length"][i] == made.params["length"][0].float()
    assert len(starts) >= 3 and "time_scale" not in batch["params"]  # carried by dt, not a cond entry


def test_a_strided_window_longer_than_the_trajectory_is_refused(heat1d):
    with pytest.raises(
        ConfigError, match=r"frames=8 is shorter than a window of .* = 5 frames 2 apart \(9 frames\)"
    ):
        make_stream(heat1d, frame_stride=2)


def test_stream_refuses_a_solver_without_dt_out():
    with pytest.raises(ConfigError, match=r"pde\.dt_out is missing for Heat: .* multiple of pde\.dt=0\.1"):
        make_stream(Heat(dt_out=None))


def test_too_small_buffer_is_refused(heat1d):
    allowed = "batch_size=16 and 16 windows per solver call; allowed: an int >= 31$"  # 16 + 16 - 1
    with pytest.raises(
        ConfigError, match=r"^buffer\.capacity=20 is not allowed with policy firo, " + allowed
    ):
        make_stream(heat1d, buffer={"policy": "firo", "capacity": 20, "watermark": 10})
    make_stream(heat1d, buffer={"policy": "firo", "capacity": 31, "watermark": 10})


def shard_indices(stream, monkeypatch, rank, world, worker, workers, batches=6):
    stream.rank, stream.world_size = rank, world
    info = SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(stream_module, "get_worker_info", lambda: info)
    batches = take(stream, batches)
    served = torch.cat([b[STREAM_KEY]["index"] for b in batches])
    return set(served.tolist()), batches[-1][STREAM_KEY]


def test_ranks_and_workers_draw_disjoint_trajectories(heat1d, monkeypatch):
    stream = make_stream(heat1d)
    seen = {}
    for rank, worker in itertools.product(range(2), range(3)):
        seen[rank, worker], info = shard_indices(stream, monkeypatch, rank, 2, worker, 3)
        assert info["shard"] == rank * 3 + worker and info["num_shards"] == 6
        assert all(i % 6 == info["shard"] for i in seen[rank, worker])
    for a, b in itertools.combinations(seen, 2):
        assert not seen[a] & seen[b], (a, b)


def test_dataloader_workers_are_disjoint(heat1d):
    loader = DataLoader(make_stream(heat1d), batch_size=None, num_workers=2)
    by_shard = {0: set(), 1: set()}
    for batch in itertools.islice(loader, 8):
        by_shard[batch[STREAM_KEY]["shard"]] |= set(batch[STREAM_KEY]["index"].tolist())
    assert by_shard[0] and by_shard[1] and not by_shard[0] & by_shard[1]


def test_resume_with_other_shard_count_repeats_no_trajectory(heat1d, monkeypatch):
    first, info = shard_indices(make_stream(heat1d), monkeypatch, 0, 1, 1, 2)
    generated = {k * 2 + 1 for k in range(info["next"])}  # every trajectory shard 1 of 2 made
    assert first <= generated
    resumed = make_stream(heat1d)
    resumed.resume_state = {"num_shards": 2, "shards": {1: {"next": info["next"]}}}
    again = set()
    for worker in range(3):
        served, _ = shard_indices(resumed, monkeypatch, 0, 1, worker, 3)
        again |= served
    assert again and not again & generated
    assert start_rounds({"num_shards": 2, "shards": {1: {"next": 5}}}, 3) == {
        0: 4,
        1: 4,
        2: 4,
    }  # 4·3 ≥ 5·2 + 1


def default_online(tmp_path, solver, policy, **overrides):
    """An OnlineDataModule with conf/data/online.yaml's settings (buffer sizes, batch, trajectory sizes)."""
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "online.yaml"))
    for key in ("_target_", "pde", "cache_dir"):
        config.pop(key)
    config["buffer"]["policy"] = policy
    config.update(overrides)
    return OnlineDataModule(solver, cache_dir=str(tmp_path), **config)


def consume(datamodule, count):
    """``count`` training batches as the training loop receives them (bookkeeping recorded)."""
    datamodule.setup("fit")
    batches = itertools.islice(iter(datamodule.train_dataloader()), count)
    return [datamodule.on_before_batch_transfer(b, 0) for b in batches]


@pytest.mark.parametrize(
    ("policy", "stop", "total", "workers"),
    [("reservoir", 400, 800, 0), ("firo", 400, 600, 0), ("fifo", 150, 300, 0), ("fifo", 201, 401, 2)],
)
def test_resume_continues_bit_for_bit_with_default_buffers(tmp_path, heat1d, policy, stop, total, workers):
    """Default sizes (a 16384-window buffer, 32 trajectories of 100 frames per call): the resumed stream
    serves exactly the uninterrupted stream's batches, including the data solved after the resume; with
    two generation workers, stopped after an odd batch, the workers also take their turns as before."""
    generation = {"generation": "cpu", "num_workers": workers} if workers else {}
    straight = consume(default_online(tmp_path, heat1d, policy, **generation), total)
    first = default_online(tmp_path, heat1d, policy, **generation)
    consume(first, stop)
    saved = tmp_path / "state.pt"
    torch.save(first.state_dict(), saved)  # the round trip of a checkpoint, loaded as data only
    second = default_online(tmp_path, heat1d, policy, **generation)
    second.load_state_dict(torch.load(saved, weights_only=True))
    resumed = consume(second, total - stop)
    # new data after resuming
    assert second.stream_stats()["windows_inserted"] > first.stream_stats()["windows_inserted"]
    for a, b in zip(straight[stop:], resumed, strict=True):
        for key in ("x", "y", "dt"):
            assert torch.equal(a[key], b[key]), key
        assert torch.equal(a["params"]["nu"], b["params"]["nu"])


def test_diverged_trajectories_are_dropped_and_counted():
    solver = Heat(n=16, nu=[-1.0, 1.0], blowup=20.0)
    stream = make_stream(solver, max_divergence_fraction=0.9, frames=12)
    batches = take(stream, 10)
    stats = batches[-1][STREAM_KEY]["stats"]
    assert 0 < stats["diverged"] < stats["attempted"]
    for batch in batches:
        assert torch.isfinite(batch["x"]).all() and torch.isfinite(batch["y"]).all()
        assert (batch["params"]["nu"] > -0.3).all()  # strongly anti-diffusive ones never reach training


@pytest.mark.parametrize("workers", [0, 1])
def test_unstable_config_ends_the_stream_with_one_sentence(workers):
    """In the training process or a DataLoader worker, the failure arrives as the stream's last item."""
    solver = Heat(n=16, nu=[-1.0, 1.0], blowup=20.0)
    stream = make_stream(solver, max_divergence_fraction=0.05, frames=12)
    items = list(itertools.islice(DataLoader(stream, batch_size=None, num_workers=workers), 20))
    assert len(items) < 20 and all("error" not in item[STREAM_KEY] for item in items[:-1])
    assert re.fullmatch(
        r"\d+ of \d+ trajectories diverged .*max_divergence_fraction=0.05.*Heat\(n=16.*nu=\[-1.0, 1.0\].*",
        items[-1][STREAM_KEY]["error"],
    )


def test_generation_on_device_refuses_workers(heat1d, monkeypatch):
    stream = make_stream(heat1d)
    stream.device = torch.device("meta")
    monkeypatch.setattr(stream_module, "get_worker_info", lambda: SimpleNamespace(id=0, num_workers=2))
    assert "set num_workers=0" in take(stream, 1)[0][STREAM_KEY]["error"]
    assert math.isclose(stream.grid.dt_out, 0.2)


FIFO = {"policy": "fifo", "capacity": 64}


def pool_sequence(batches, windows_per_trajectory=4):
    """The trajectories a fifo stream served, in order (each trajectory's windows arrive together)."""
    served = torch.cat([b[STREAM_KEY]["index"] for b in batches])
    return served[::windows_per_trajectory].tolist()


def test_pool_cycles_over_exactly_its_trajectories(heat1d):
    """One shard, a pool of 10 trajectories solved 4 per call (calls straddle the cycle ends)."""
    trajectories = pool_sequence(take(make_stream(heat1d, buffer=FIFO, pool_size=10), 8))  # 32 trajectories
    assert trajectories == [k % 10 for k in range(32)]


def test_pool_cycles_are_shared_disjointly_by_ranks_and_workers(heat1d, monkeypatch):
    stream = make_stream(heat1d, buffer=FIFO, pool_size=10)
    pool_of = {}  # global index k · 4 + shard -> pool trajectory
    for rank, worker in itertools.product(range(2), range(2)):
        stream.rank, stream.world_size = rank, 2
        info = SimpleNamespace(id=worker, num_workers=2)
        monkeypatch.setattr(stream_module, "get_worker_info", lambda info=info: info)
        shard = rank * 2 + worker
        for k, trajectory in enumerate(pool_sequence(take(stream, 2))):  # 8 trajectories per shard
            pool_of[k * 4 + shard] = trajectory
    for cycle in range(3):  # global indices 0 … 29 all made: every pool trajectory once per cycle
        assert sorted(pool_of[g] for g in range(cycle * 10, cycle * 10 + 10)) == list(range(10))


def test_pool_serves_the_online_streams_first_trajectories(tmp_path, heat1d):
    """Pool trajectory k is online trajectory k: the first cycle's batches and the normalisation equal
    the online stream's; the second cycle repeats the pool where the online stream moves on."""
    settings = dict(time_history=2, target_frames=1, frames=6, solver_batch=4, batch_size=8)
    settings.update(buffer=FIFO, num_workers=0, seed=3, cache_dir=str(tmp_path))
    online = OnlineDataModule(heat1d, **settings)
    pool = OnlineDataModule(heat1d, pool_size=8, **settings)
    fresh, cycled = consume(online, 8), consume(pool, 8)  # 4 windows per trajectory: 2 cycles of 8
    for a, b in zip(fresh[:4], cycled[:4], strict=True):
        for key in ("x", "y", "dt"):
            assert torch.equal(a[key], b[key]), key
        assert torch.equal(a["params"]["nu"], b["params"]["nu"])
    for a, b in zip(cycled[:4], cycled[4:], strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert not torch.equal(fresh[4]["x"], cycled[4]["x"])
    assert torch.equal(online.normalizer.mean, pool.normalizer.mean)
    assert torch.equal(online.normalizer.std, pool.normalizer.std)
    assert pool.stream_stats()["trajectories"] == online.stream_stats()["trajectories"] == 16


def test_pool_is_in_the_checkpoint_and_resumes_bit_for_bit(tmp_path, heat1d):
    """Default sizes with a pool of 40 trajectories (32 per solver call: calls straddle the cycle ends)."""
    straight = consume(default_online(tmp_path, heat1d, "firo", pool_size=40), 600)
    first = default_online(tmp_path, heat1d, "firo", pool_size=40)
    consume(first, 400)
    saved = tmp_path / "state.pt"
    torch.save(first.state_dict(), saved)
    state = torch.load(saved, weights_only=True)
    assert state["stream"]["shards"][0]["snapshot"]["layout"]["pool_size"] == 40
    second = default_online(tmp_path, heat1d, "firo", pool_size=40)
    second.load_state_dict(state)
    resumed = consume(second, 200)
    assert second.stream_stats()["trajectories"] > first.stream_stats()["trajectories"] > 40  # cycled
    for a, b in zip(straight[400:], resumed, strict=True):
        for key in ("x", "y", "dt"):
            assert torch.equal(a[key], b[key]), key


def test_pool_size_must_be_a_positive_int(heat1d):
    with pytest.raises(ConfigError, match=r"^pool_size=0 is not allowed; allowed: an int >= 1$"):
        make_stream(heat1d, pool_size=0)


def consume_adaptive(datamodule, count):
    """``count`` batches, each fed back as if the loss grew with ν (the sampler learns after every batch)."""
    datamodule.setup("fit")
    out = []
    for batch in itertools.islice(iter(datamodule.train_dataloader()), count):
        batch = datamodule.on_before_batch_transfer(batch, 0)
        loss = batch["params"]["nu"].double() ** 4
        datamodule.sampler.record(batch["params"], loss, torch.ones_like(loss))
        datamodule.sampler.update()
        out.append(batch)
    return out


def test_adaptive_stream_draws_toward_high_loss_and_resumes_bit_for_bit(tmp_path, heat1d):
    """The sampler's state changes between the draws; a resumed stream refills its buffer with the
    parameters the calls drew then (not redrawn from the later state) and continues as the straight run."""
    adaptive = {"bins": 4, "mix": 0.2, "temperature": 0.25, "memory": 0.5}
    settings = dict(sampling="adaptive", adaptive=adaptive, frames=12, solver_batch=8)
    straight_dm = default_online(tmp_path, heat1d, "reservoir", **settings)
    straight = consume_adaptive(straight_dm, 300)
    first = default_online(tmp_path, heat1d, "reservoir", **settings)
    consume_adaptive(first, 200)
    saved = tmp_path / "state.pt"
    torch.save(first.state_dict(), saved)
    state = torch.load(saved, weights_only=True)
    assert state["sampler"]["mode"] == "adaptive" and not state["sampler"]["loss"].isnan().any()
    second = default_online(tmp_path, heat1d, "reservoir", **settings)
    second.load_state_dict(state)
    resumed = consume_adaptive(second, 100)
    for a, b in zip(straight[200:], resumed, strict=True):
        for key in ("x", "y", "dt"):
            assert torch.equal(a[key], b[key]), key
        assert torch.equal(a["params"]["nu"], b["params"]["nu"])
    assert torch.equal(straight_dm.drawn(), second.drawn())
    # ν ∈ [0.01, 0.1] in 4 cells: the loss ν^4 puts most of the mass, and of the draws, in the last cell
    probs, drawn = straight_dm.sampler.probs, straight_dm.drawn()
    assert probs[-1] > 0.6 and probs.min() >= 0.2 / 4 - 1e-12
    assert (
        drawn[-1] > drawn[0] and drawn.min() > 0 and drawn.sum() == straight_dm.stream_stats()["trajectories"]
    )


def test_uniform_stream_draws_as_before_and_counts_its_draws(tmp_path, heat1d):
    """The sampler in uniform mode is the solver's draw: the same batches as trajectories seeded alone."""
    dm = default_online(tmp_path, heat1d, "fifo", frames=12, solver_batch=8)
    batch = consume(dm, 1)[0]
    index = batch[STREAM_KEY]["index"] if STREAM_KEY in batch else None
    assert index is None  # the bookkeeping is taken out before the model sees the batch
    made = generate(heat1d, 0, "train", range(8), dm.time_grid.times())
    assert set(batch["params"]["nu"].tolist()) <= set(made.params["nu"].float().tolist())
    assert dm.drawn().sum() == dm.stream_stats()["trajectories"] > 0


def test_adaptive_sampling_refuses_a_fixed_pool_and_a_fixed_pde(heat1d):
    with pytest.raises(ConfigError, match=r"data\.sampling=adaptive .* data\.pool_size=8"):
        make_stream(heat1d, sampling="adaptive", pool_size=8)
    with pytest.raises(ConfigError, match="needs a PDE parameter given as a range"):
        make_stream(Heat(n=16, nu=0.05), sampling="adaptive")
    with pytest.raises(ConfigError, match=r"unknown data\.adaptive key\(s\) \['bin'\]; allowed: bins, mix"):
        make_stream(heat1d, sampling="adaptive", adaptive={"bin": 4})
