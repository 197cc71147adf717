"""Replay buffers between the solvers and the training loop, with Melissa's three policies.

Meyer et al., "Training Deep Surrogate Models with Large Scale Online Learning" (ICML 2023)
compare buffers that decouple data production from consumption:

* ``fifo`` — first in, first out: samples are served in arrival order, each exactly once.
* ``firo`` — first in, random out: batches are drawn uniformly from the buffer content (kept at or
  above ``watermark`` samples); a sample is evicted after ``max_reuse`` uses, so no sample is seen
  more than ``max_reuse`` times.
* ``reservoir`` — batches are drawn uniformly from the buffer; no batch is served before the buffer
  holds ``watermark`` samples; once full, new samples overwrite samples that were already seen
  (chosen at random). Production is co-located here, so new data is requested whenever the samples
  served reach ``max_reuse`` times the samples inserted (``max_reuse`` is the mean reuse).

A policy is a small :class:`BufferPolicy` class (when to ask for data, which slots to serve, which to
evict, the least capacity it works with) registered by name in :data:`POLICIES`; a new policy is one
more class there. The :class:`ReplayBuffer` holds the samples and the bookkeeping every policy shares.

Every slot counts how often its sample was served; :meth:`ReplayBuffer.stats` reports the totals
(kept as running counters, so reading them costs no pass over the buffer).
:meth:`ReplayBuffer.state_dict` holds everything but the samples themselves (slot counters, arrival
order, sampling generator), so a resumed run can refill the samples and continue bit for bit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from solvers.errors import ConfigError, check_choice, check_int

HISTOGRAM_BINS = 64
"""Reuse counts at or above this value share the last bin of the seen-count histogram."""


class BufferPolicy:
    """How a :class:`ReplayBuffer` fills, serves and evicts; stateless beyond its settings (the state
    a checkpoint needs — slot counters, the generator — lives in the buffer).

    Args:
        capacity: samples the buffer holds at most.
        max_reuse: the policy's reuse setting (see the module docstring).
        watermark: samples required before the first batch.
    """

    name: ClassVar[str]

    def __init__(self, capacity: int, max_reuse: int, watermark: int) -> None:
        self.max_reuse = check_int("buffer.max_reuse", max_reuse, 1)
        self.watermark = check_int("buffer.watermark", watermark, 0, capacity)

    def min_capacity(self, batch_size: int, incoming: int) -> int:
        """Least capacity that serves ``batch_size`` samples per batch with ``incoming`` samples per put."""
        return max(self.watermark, batch_size) + incoming - 1

    def needs_data(self, buffer: ReplayBuffer, batch_size: int) -> bool:
        """Whether new samples must be put before the next ``sample(batch_size)``."""
        return len(buffer) < max(self.watermark, batch_size)

    def make_room(self, buffer: ReplayBuffer, free: Tensor, n: int) -> Tensor:
        """Slots for ``n`` new samples when only the empty slots ``free`` (fewer than ``n``) are left."""
        raise ConfigError(
            f"buffer.capacity={buffer.capacity} is too small for {self.name}: {n} new samples do not fit; "
            f"give at least {self.min_capacity(0, n) + len(buffer) - len(free)}"
        )

    def choose(self, buffer: ReplayBuffer, occupied: Tensor, batch_size: int) -> Tensor:
        """``batch_size`` distinct slots out of ``occupied`` (ascending) to serve."""
        return occupied[torch.randperm(len(occupied), generator=buffer.generator)[:batch_size]]

    def served_out(self, buffer: ReplayBuffer, slots: Tensor) -> Tensor:
        """Slots just served that leave the buffer now."""
        return slots[buffer.count[slots] >= self.max_reuse]


class Fifo(BufferPolicy):
    """First in, first out: arrival order, each sample served once, no watermark."""

    name = "fifo"

    def __init__(self, capacity: int, max_reuse: int, watermark: int) -> None:
        check_int("buffer.max_reuse", max_reuse, 1)
        super().__init__(capacity, max_reuse=1, watermark=0)

    def choose(self, buffer: ReplayBuffer, occupied: Tensor, batch_size: int) -> Tensor:
        return occupied[buffer.arrival[occupied].argsort()[:batch_size]]


class Firo(BufferPolicy):
    """First in, random out: uniform draws above the watermark, eviction after ``max_reuse`` uses."""

    name = "firo"


class Reservoir(BufferPolicy):
    """Uniform draws; new data once ``max_reuse`` uses per inserted sample were served; a full buffer
    overwrites seen samples (at random) first."""

    name = "reservoir"

    def min_capacity(self, batch_size: int, incoming: int) -> int:
        return max(batch_size, incoming)

    def needs_data(self, buffer: ReplayBuffer, batch_size: int) -> bool:
        if not buffer.warm:
            return len(buffer) < max(self.watermark, batch_size)
        return buffer.served >= self.max_reuse * buffer.inserted

    def make_room(self, buffer: ReplayBuffer, free: Tensor, n: int) -> Tensor:
        """Random seen samples first, then the oldest unseen ones."""
        seen = (buffer.count > 0).nonzero().flatten()
        seen = seen[torch.randperm(len(seen), generator=buffer.generator)]
        unseen = (buffer.count == 0).nonzero().flatten()
        unseen = unseen[buffer.arrival[unseen].argsort()]
        return torch.cat([free, seen, unseen])[:n]

    def served_out(self, buffer: ReplayBuffer, slots: Tensor) -> Tensor:
        return slots[:0]


POLICIES: dict[str, type[BufferPolicy]] = {policy.name: policy for policy in (Fifo, Firo, Reservoir)}
"""The buffer policies by name (``data.buffer.policy``)."""


class ReplayBuffer:
    """A fixed-capacity store of samples (a dict of tensors with a common first dimension).

    Args:
        policy: a name in :data:`POLICIES` (``"fifo"``, ``"firo"``, ``"reservoir"``).
        capacity: samples held at most.
        max_reuse: ``firo``: uses before eviction (a hard bound); ``reservoir``: mean uses per sample
            before new data is requested; ignored by ``fifo`` (always 1).
        watermark: samples required before sampling (``firo``, ``reservoir``); ``None``: half the capacity.
        seed: seed of the sampling generator.
    """

    def __init__(
        self, policy: str, capacity: int, max_reuse: int = 1, watermark: int | None = None, seed: int = 0
    ) -> None:
        check_choice("buffer.policy", policy, list(POLICIES))
        self.capacity = check_int("buffer.capacity", capacity, 1)
        watermark = capacity // 2 if watermark is None else watermark
        self.policy = POLICIES[policy](capacity, max_reuse, watermark)
        self.generator = torch.Generator().manual_seed(seed)
        self.fields: dict[str, Tensor] = {}
        self.count = torch.full((capacity,), -1, dtype=torch.int64)  # uses per slot; -1: empty
        self.arrival = torch.zeros(capacity, dtype=torch.int64)
        self.histogram = torch.zeros(HISTOGRAM_BINS, dtype=torch.int64)  # uses of evicted samples
        self.inserted = self.served = self.evicted_unseen = self.max_seen = self.size = 0
        self.warm = self.policy.watermark == 0

    def state_config(self) -> dict[str, Any]:
        """The settings that define the buffer (after defaults): ``policy``, ``capacity``, ``max_reuse``,
        ``watermark``."""
        return {
            "policy": self.policy.name,
            "capacity": self.capacity,
            "max_reuse": self.policy.max_reuse,
            "watermark": self.policy.watermark,
        }

    def __len__(self) -> int:
        return self.size

    def min_capacity(self, batch_size: int, incoming: int) -> int:
        """The policy's least capacity for ``batch_size`` samples per batch and ``incoming`` per put."""
        return self.policy.min_capacity(batch_size, incoming)

    def needs_data(self, batch_size: int) -> bool:
        """Whether new samples must be put before the next ``sample(batch_size)``."""
        return self.policy.needs_data(self, batch_size)

    def put(self, fields: dict[str, Tensor]) -> None:
        """Insert samples (all tensors share the first dimension ``N``)."""
        n = next(iter(fields.values())).shape[0]
        if not self.fields:
            self.fields = {
                k: torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
                for k, v in fields.items()
            }
        free = (self.count < 0).nonzero().flatten()
        slots = free[:n] if len(free) >= n else self.policy.make_room(self, free, n)
        self._retire(slots)
        for key, value in fields.items():
            self.fields[key][slots.to(value.device)] = value
        self.count[slots] = 0
        self.arrival[slots] = torch.arange(self.inserted, self.inserted + n)
        self.inserted += n
        self.size += n
        if self.size >= self.policy.watermark:
            self.warm = True

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        """A batch drawn by the policy (distinct samples within a batch); updates the reuse counters."""
        occupied = self.occupied()
        if len(occupied) < batch_size or not self.warm:
            raise RuntimeError(f"{self.policy.name} buffer holds {len(occupied)} samples, needs data first")
        slots = self.policy.choose(self, occupied, batch_size)
        self.count[slots] += 1
        self.served += batch_size
        self.max_seen = max(self.max_seen, int(self.count[slots].max()))
        device = next(iter(self.fields.values())).device
        batch = {k: v[slots.to(device)] for k, v in self.fields.items()}
        done = self.policy.served_out(self, slots)
        self._retire(done)
        self.count[done] = -1
        return batch

    def _retire(self, slots: Tensor) -> None:
        """Count the samples in ``slots`` as evicted (empty slots are skipped); the caller refills or
        empties the slots."""
        counts = self.count[slots]
        counts = counts[counts >= 0]
        self.size -= len(counts)
        self.evicted_unseen += int((counts == 0).sum())
        self.histogram += torch.bincount(counts.clamp(max=HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)

    def state_dict(self) -> dict[str, Any]:
        """The buffer's state without its samples: counters per slot, totals and the sampling generator."""
        return {
            "count": self.count.clone(),
            "arrival": self.arrival.clone(),
            "histogram": self.histogram.clone(),
            "totals": [self.inserted, self.served, self.evicted_unseen, self.max_seen],
            "warm": self.warm,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], fields: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` with the samples ``fields`` (``[capacity, ...]`` each, any value in
        empty slots)."""
        self.count, self.arrival = state["count"].clone(), state["arrival"].clone()
        self.histogram = state["histogram"].clone()
        self.inserted, self.served, self.evicted_unseen, self.max_seen = (int(v) for v in state["totals"])
        self.size = int((self.count >= 0).sum())
        self.warm = bool(state["warm"])
        self.generator.set_state(state["generator"])
        self.fields = fields

    def occupied(self) -> Tensor:
        """Slots that hold a sample."""
        return (self.count >= 0).nonzero().flatten()

    def stats(self) -> dict[str, float]:
        """Counters for logging: samples inserted/served/held, mean and max uses per sample, unseen evictions.

        ``mean_seen`` is the uses per inserted sample (evicted or still held): ``served / inserted``.
        """
        return {
            "inserted": float(self.inserted),
            "served": float(self.served),
            "size": float(self.size),
            "capacity": float(self.capacity),
            "mean_seen": self.served / max(self.inserted, 1),
            "max_seen": float(self.max_seen),
            "evicted_unseen": float(self.evicted_unseen),
        }

    def seen_histogram(self) -> Tensor:
        """``h[k]``: samples (evicted or held) served exactly ``k`` times (last bin: ``>= 63``)."""
        held = self.count[self.count >= 0]
        return self.histogram + torch.bincount(held.clamp(max=HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
