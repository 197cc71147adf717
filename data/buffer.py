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

Every slot counts how often its sample was served; :meth:`ReplayBuffer.stats` reports the totals.
:meth:`ReplayBuffer.state_dict` holds everything but the samples themselves (slot counters, arrival
order, sampling generator), so a resumed run can refill the samples and continue bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from solvers.base import ConfigError

POLICIES = ("fifo", "firo", "reservoir")
HISTOGRAM_BINS = 64
"""Reuse counts at or above this value share the last bin of the seen-count histogram."""


class ReplayBuffer:
    """A fixed-capacity store of samples (a dict of tensors with a common first dimension).

    Args:
        policy: ``"fifo"``, ``"firo"`` or ``"reservoir"``.
        capacity: samples held at most.
        max_reuse: ``firo``: uses before eviction (a hard bound); ``reservoir``: mean uses per sample
            before new data is requested; ignored by ``fifo`` (always 1).
        watermark: samples required before sampling (``firo``, ``reservoir``); ``None``: half the capacity.
        seed: seed of the sampling generator.
    """

    def __init__(
        self, policy: str, capacity: int, max_reuse: int = 1, watermark: int | None = None, seed: int = 0
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"buffer.policy={policy!r} is not allowed; allowed: {', '.join(POLICIES)}")
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"buffer.capacity={capacity!r}: must be an int >= 1")
        if not isinstance(max_reuse, int) or max_reuse < 1:
            raise ConfigError(f"buffer.max_reuse={max_reuse!r}: must be an int >= 1")
        watermark = capacity // 2 if watermark is None else watermark
        if policy == "fifo":
            watermark, max_reuse = 0, 1
        if not isinstance(watermark, int) or not 0 <= watermark <= capacity:
            raise ConfigError(f"buffer.watermark={watermark!r}: must be an int in [0, capacity={capacity}]")
        self.policy, self.capacity, self.max_reuse, self.watermark = policy, capacity, max_reuse, watermark
        self.generator = torch.Generator().manual_seed(seed)
        self.fields: dict[str, Tensor] = {}
        self.count = torch.full((capacity,), -1, dtype=torch.int64)  # uses per slot; -1: empty
        self.arrival = torch.zeros(capacity, dtype=torch.int64)
        self.histogram = torch.zeros(HISTOGRAM_BINS, dtype=torch.int64)  # uses of evicted samples
        self.inserted = self.served = self.evicted_unseen = self.max_seen = 0
        self.warm = watermark == 0

    def state_config(self) -> dict[str, Any]:
        """The settings that define the buffer (after defaults): ``policy``, ``capacity``, ``max_reuse``,
        ``watermark``."""
        return {
            "policy": self.policy,
            "capacity": self.capacity,
            "max_reuse": self.max_reuse,
            "watermark": self.watermark,
        }

    def __len__(self) -> int:
        return int((self.count >= 0).sum())

    def room_needed(self, batch_size: int, incoming: int) -> int:
        """Smallest capacity with which ``put`` of ``incoming`` samples never overflows (``fifo``/``firo``)."""
        return max(self.watermark, batch_size) + incoming - 1

    def needs_data(self, batch_size: int) -> bool:
        """Whether new samples must be put before the next ``sample(batch_size)``."""
        size = len(self)
        if self.policy == "reservoir":
            if not self.warm:
                return size < max(self.watermark, batch_size)
            return self.served >= self.max_reuse * self.inserted
        return size < max(self.watermark, batch_size)

    def put(self, fields: dict[str, Tensor]) -> None:
        """Insert samples (all tensors share the first dimension ``N``)."""
        n = next(iter(fields.values())).shape[0]
        if not self.fields:
            self.fields = {
                k: torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
                for k, v in fields.items()
            }
        free = (self.count < 0).nonzero().flatten()
        if len(free) < n:
            if self.policy != "reservoir":
                raise ConfigError(
                    f"buffer.capacity={self.capacity} is too small for {self.policy}: {n} new samples do "
                    f"not fit; give at least {self.room_needed(0, n) + len(self) - len(free)}"
                )
            free = torch.cat([free, self._victims(n - len(free))])
        slots = free[:n]
        self._retire(slots)
        for key, value in fields.items():
            self.fields[key][slots.to(value.device)] = value
        self.count[slots] = 0
        self.arrival[slots] = torch.arange(self.inserted, self.inserted + n)
        self.inserted += n
        if len(self) >= self.watermark:
            self.warm = True

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        """A batch drawn by the policy (distinct samples within a batch); updates the reuse counters."""
        occupied = self.occupied()
        if len(occupied) < batch_size or not self.warm:
            raise RuntimeError(f"{self.policy} buffer holds {len(occupied)} samples, needs data first")
        if self.policy == "fifo":
            slots = occupied[self.arrival[occupied].argsort()[:batch_size]]
        else:
            slots = occupied[torch.randperm(len(occupied), generator=self.generator)[:batch_size]]
        self.count[slots] += 1
        self.served += batch_size
        self.max_seen = max(self.max_seen, int(self.count[slots].max()))
        device = next(iter(self.fields.values())).device
        batch = {k: v[slots.to(device)] for k, v in self.fields.items()}
        if self.policy != "reservoir":
            done = slots[self.count[slots] >= self.max_reuse]
            self._retire(done)
            self.count[done] = -1
        return batch

    def _victims(self, n: int) -> Tensor:
        """Reservoir slots to overwrite: random seen samples first, then the oldest unseen ones."""
        seen = (self.count > 0).nonzero().flatten()
        seen = seen[torch.randperm(len(seen), generator=self.generator)]
        unseen = (self.count == 0).nonzero().flatten()
        unseen = unseen[self.arrival[unseen].argsort()]
        return torch.cat([seen, unseen])[:n]

    def _retire(self, slots: Tensor) -> None:
        counts = self.count[slots]
        counts = counts[counts >= 0]
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
        self.warm = bool(state["warm"])
        self.generator.set_state(state["generator"])
        self.fields = fields

    def occupied(self) -> Tensor:
        """Slots that hold a sample."""
        return (self.count >= 0).nonzero().flatten()

    def stats(self) -> dict[str, float]:
        """Counters for logging: samples inserted/served/held, mean and max uses per sample, unseen evictions.

        ``mean_seen`` averages over evicted samples and the ones still held.
        """
        samples = int(self.seen_histogram().sum())
        return {
            "inserted": float(self.inserted),
            "served": float(self.served),
            "size": float(len(self)),
            "mean_seen": self.served / max(samples, 1),
            "max_seen": float(self.max_seen),
            "evicted_unseen": float(self.evicted_unseen),
        }

    def seen_histogram(self) -> Tensor:
        """``h[k]``: samples (evicted or held) served exactly ``k`` times (last bin: ``>= 63``)."""
        held = self.count[self.count >= 0]
        return self.histogram + torch.bincount(held.clamp(max=HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
