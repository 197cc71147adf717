"""Replay-buffer guarantees: FIFO order, FIRO reuse bound, reservoir watermark and replacement."""

import pytest
import torch

from data.buffer import POLICIES, ReplayBuffer
from solvers.errors import ConfigError


def chunk(start: int, n: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(start, start + n)
    return {"id": ids, "value": ids.float()[:, None] * 2}


def drive(buffer: ReplayBuffer, steps: int, batch: int, per_put: int) -> list[torch.Tensor]:
    """Put ``per_put`` new samples whenever the buffer asks, then sample; returns the served ids."""
    served, next_id = [], 0
    for _ in range(steps):
        while buffer.needs_data(batch):
            buffer.put(chunk(next_id, per_put))
            next_id += per_put
        out = buffer.sample(batch)
        assert torch.equal(out["value"][:, 0], out["id"].float() * 2)  # fields stay aligned
        assert len(out["id"].unique()) == batch  # distinct within a batch
        served.append(out["id"])
    return served


def test_fifo_serves_in_arrival_order_exactly_once():
    buffer = ReplayBuffer("fifo", capacity=64)
    served = torch.cat(drive(buffer, steps=20, batch=8, per_put=12))
    assert torch.equal(served, torch.arange(len(served)))
    assert buffer.stats()["max_seen"] == 1


@pytest.mark.parametrize("max_reuse", [1, 3])
def test_firo_never_serves_a_sample_more_than_max_reuse_times(max_reuse):
    buffer = ReplayBuffer("firo", capacity=100, max_reuse=max_reuse, watermark=40, seed=1)
    served = torch.cat(drive(buffer, steps=300, batch=16, per_put=10))
    counts = torch.bincount(served)
    assert counts.max().item() == max_reuse  # reached, never exceeded
    assert buffer.stats()["max_seen"] == max_reuse
    assert buffer.seen_histogram()[max_reuse + 1 :].sum() == 0
    assert buffer.stats()["served"] == len(served)
    # random out: arrival order is not the serving order
    assert not torch.equal(served[:100], served[:100].sort().values)


def test_firo_keeps_watermark_before_sampling():
    buffer = ReplayBuffer("firo", capacity=100, max_reuse=2, watermark=50)
    buffer.put(chunk(0, 30))
    assert buffer.needs_data(8)
    buffer.put(chunk(30, 30))
    assert not buffer.needs_data(8)


def test_reservoir_waits_for_watermark_then_replaces_seen_samples_only():
    buffer = ReplayBuffer("reservoir", capacity=50, max_reuse=2, watermark=40, seed=0)
    buffer.put(chunk(0, 30))
    assert buffer.needs_data(8)
    with pytest.raises(RuntimeError, match="needs data"):
        buffer.sample(8)
    buffer.put(chunk(30, 20))  # 50 >= watermark: warm and full
    assert not buffer.needs_data(8)
    seen = torch.cat([buffer.sample(10)["id"] for _ in range(3)]).unique()
    unseen_before = set(range(50)) - set(seen.tolist())
    buffer.put(chunk(50, len(seen) // 2))  # fewer new samples than seen ones: only seen ones go
    held = set(buffer.fields["id"][buffer.count >= 0].tolist())
    assert unseen_before <= held
    assert buffer.stats()["evicted_unseen"] == 0
    assert len(buffer) == 50


def test_reservoir_mean_reuse_follows_max_reuse():
    buffer = ReplayBuffer("reservoir", capacity=200, max_reuse=4, watermark=100, seed=3)
    served = torch.cat(drive(buffer, steps=400, batch=16, per_put=20))
    stats = buffer.stats()
    assert stats["served"] == len(served)
    assert 3.0 <= stats["mean_seen"] <= 4.5
    assert stats["max_seen"] > 4  # uniform sampling: reuse is not capped


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"policy": "lifo", "capacity": 10}, "buffer.policy"),
        ({"policy": "firo", "capacity": 0}, "buffer.capacity"),
        ({"policy": "firo", "capacity": 10, "max_reuse": 0}, "buffer.max_reuse"),
        ({"policy": "reservoir", "capacity": 10, "watermark": 11}, "buffer.watermark"),
    ],
)
def test_bad_buffer_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ReplayBuffer(**kwargs)


def test_overflowing_firo_put_is_refused():
    buffer = ReplayBuffer("firo", capacity=10, watermark=5)
    buffer.put(chunk(0, 8))
    with pytest.raises(ConfigError, match="too small"):
        buffer.put(chunk(8, 5))


@pytest.mark.parametrize(
    ("policy", "least"),
    [("fifo", 8 + 15 - 1), ("firo", 30 + 15 - 1), ("reservoir", 15)],  # batch 8, watermark 30, 15 per put
)
def test_each_policy_runs_at_its_least_capacity_and_names_it(policy, least):
    """With one use per sample the sizes before a put run through every remainder, the worst one included."""
    assert POLICIES[policy](capacity=100, max_reuse=1, watermark=30).min_capacity(8, 15) == least
    buffer = ReplayBuffer(policy, capacity=least, max_reuse=1, watermark=min(30, least), seed=0)
    assert len(drive(buffer, steps=50, batch=8, per_put=15)) == 50  # never overflows
    if policy != "reservoir":  # one slot less: a put no longer fits
        small = ReplayBuffer(policy, capacity=least - 1, max_reuse=1, watermark=30, seed=0)
        with pytest.raises(ConfigError, match=f"buffer.capacity={least - 1} is too small for {policy}"):
            drive(small, steps=50, batch=8, per_put=15)
