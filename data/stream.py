"""The online stream: solvers produce trajectories while the model trains, served through a replay buffer.

Each training process (each DDP rank, each DataLoader worker) generates its own data, as in
Melissa (Meyer et al., ICML 2023) but co-located with training. Shard ``s`` of ``n`` shards
(``s = rank · workers + worker``) generates the trajectories ``k · n + s`` for ``k = 0, 1, …``, so
shards never overlap and a trajectory is the same whichever shard made it.

Every yielded batch carries the shard's position and buffer statistics under :data:`STREAM_KEY`;
the DataModule removes them before the batch reaches the model and keeps them as resumable state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from data.buffer import ReplayBuffer
from data.progress import Progress
from data.trajectories import DivergenceCounter, generate, output_times, resolve_dt_out
from solvers.base import ConfigError, Solver

STREAM_KEY = "stream"
"""Batch key of the stream's bookkeeping (shard position and statistics); not a model input."""


def cut_windows(u: Tensor, length: int) -> Tensor:
    """All windows of ``length`` consecutive frames: ``[B, T, C, *S] -> [B · (T - length + 1), length, C, *S]``."""
    windows = u.unfold(1, length, 1)  # [B, W, C, *S, length]
    return windows.movedim(-1, 2).flatten(0, 1)


def start_rounds(state: Mapping[str, Any] | None, num_shards: int) -> dict[int, int]:
    """Per-shard start counters that continue a saved stream without repeating a trajectory.

    ``state`` holds ``num_shards`` and ``next`` (``{shard: next counter}``). With the same shard
    count each shard resumes where it stopped; with a different one every shard starts past the
    largest trajectory index generated so far.
    """
    if not state or not state.get("next"):
        return {}
    saved = {int(k): int(v) for k, v in state["next"].items()}
    old = int(state["num_shards"])
    if old == num_shards:
        return saved
    bound = max(k * old + s for s, k in saved.items())  # first index no shard has reached
    first = math.ceil(bound / num_shards)
    return dict.fromkeys(range(num_shards), first)


class TrajectoryStream(IterableDataset):
    """An infinite stream of training batches cut from freshly solved trajectories.

    A batch is ``{"x": [B, time_history, C, *S], "y": [B, time_future, C, *S], "params": {name: [B]},
    "dt": [B]}`` (float32, not normalised) plus :data:`STREAM_KEY`.

    Args:
        solver: the PDE solver.
        seed: base seed of the ``"train"`` split.
        time_history, time_future: input and target frames per window.
        dt_out: output interval, a multiple of ``solver.dt`` (``None``: one step).
        rollout_steps: frames per generated trajectory; each gives ``rollout_steps - window + 1`` windows.
        solver_batch: trajectories per solver call.
        batch_size: samples per yielded batch.
        buffer: ``policy``, ``capacity``, ``max_reuse``, ``watermark`` of the :class:`ReplayBuffer`.
        max_divergence_fraction: stop when a larger fraction of trajectories diverged.
        device: where the solver runs (``"cpu"`` in DataLoader workers, or the training device with
            no workers).
    """

    def __init__(
        self,
        solver: Solver,
        seed: int,
        time_history: int,
        time_future: int,
        dt_out: float | None,
        rollout_steps: int,
        solver_batch: int,
        batch_size: int,
        buffer: Mapping[str, Any],
        max_divergence_fraction: float = 0.05,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        for key, value in (
            ("time_history", time_history),
            ("time_future", time_future),
            ("solver_batch", solver_batch),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r}: must be an int >= 1")
        self.solver, self.seed = solver, int(seed)
        self.time_history, self.time_future = time_history, time_future
        self.dt_out = resolve_dt_out(solver, dt_out)
        self.times = output_times(self.dt_out, rollout_steps)
        window = time_history + time_future
        if rollout_steps < window:
            raise ConfigError(
                f"rollout_steps={rollout_steps} is shorter than a window of time_history + time_future = {window}"
            )
        self.windows_per_trajectory = rollout_steps - window + 1
        self.solver_batch, self.batch_size = solver_batch, batch_size
        self.buffer_config = dict(buffer)
        unknown = set(self.buffer_config) - {"policy", "capacity", "max_reuse", "watermark"}
        if unknown:
            raise ConfigError(
                f"unknown buffer key(s) {sorted(unknown)}; allowed: policy, capacity, max_reuse, watermark"
            )
        probe = self._make_buffer(0)  # validates the buffer config here, not in a worker
        incoming = solver_batch * self.windows_per_trajectory
        if probe.policy != "reservoir" and probe.capacity < probe.room_needed(batch_size, incoming):
            raise ConfigError(
                f"buffer.capacity={probe.capacity} is too small for {probe.policy} with batch_size={batch_size} "
                f"and {incoming} windows per solver call; give at least {probe.room_needed(batch_size, incoming)}"
            )
        if probe.policy == "reservoir" and probe.capacity < max(batch_size, incoming):
            raise ConfigError(
                f"buffer.capacity={probe.capacity} must hold one batch ({batch_size}) and one solver call "
                f"({incoming} windows)"
            )
        DivergenceCounter(max_divergence_fraction)  # validates
        self.max_divergence_fraction = max_divergence_fraction
        self.device = torch.device(device)
        self.rank, self.world_size = 0, 1
        self.resume_state: dict[str, Any] = {}

    def _make_buffer(self, seed: int) -> ReplayBuffer:
        config = {"policy": "reservoir", "capacity": 4096, "max_reuse": 4, "watermark": None}
        config.update(self.buffer_config)
        return ReplayBuffer(seed=seed, **config)

    def shard(self) -> tuple[int, int]:
        """``(shard, num_shards)`` of the calling process: ``rank · workers + worker`` of ``world · workers``."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None and self.device.type != "cpu":
            raise ConfigError(
                f"generation on {self.device} runs in the training process: set num_workers=0 "
                "(or generation=cpu to generate in DataLoader workers)"
            )
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, num_shards = self.shard()
        counter_k = start_rounds(self.resume_state, num_shards).get(shard, 0)
        buffer = self._make_buffer(seed=self.seed * 1_000_003 + shard * 7919 + counter_k)
        divergence = DivergenceCounter(self.max_divergence_fraction)
        window = self.time_history + self.time_future
        dt = torch.full((self.batch_size,), self.dt_out, dtype=torch.float32, device=self.device)
        names = list(self.solver.params)
        target = max(buffer.watermark, self.batch_size)  # samples before the first batch
        fill: Progress | None = Progress(
            target, "filling the replay buffer", "samples", enabled=shard == 0 and target > self.batch_size
        )
        while True:
            while buffer.needs_data(self.batch_size):
                indices = [(counter_k + j) * num_shards + shard for j in range(self.solver_batch)]
                counter_k += self.solver_batch
                made = generate(self.solver, self.seed, "train", indices, self.times, self.device)
                divergence.update(made, self.solver)
                if len(made.index) == 0:
                    continue
                params = torch.stack([made.params[k] for k in names], dim=-1) if names else None
                fields = {"window": cut_windows(made.u, window)}
                repeat = self.windows_per_trajectory
                fields["index"] = made.index.repeat_interleave(repeat).to(self.device)
                if params is not None:
                    fields["params"] = params.to(self.device, torch.float32).repeat_interleave(repeat, dim=0)
                buffer.put(fields)
                if fill is not None:
                    fill.update_to(min(len(buffer), target))
            if fill is not None:
                fill.close()
                fill = None
            sample = buffer.sample(self.batch_size)
            stats = buffer.stats()
            stats.update(attempted=float(divergence.attempted), diverged=float(divergence.diverged))
            yield {
                "x": sample["window"][:, : self.time_history],
                "y": sample["window"][:, self.time_history :],
                "params": {k: sample["params"][:, i] for i, k in enumerate(names)},
                "dt": dt,
                STREAM_KEY: {
                    "shard": shard,
                    "num_shards": num_shards,
                    "next": counter_k,
                    "index": sample["index"],
                    "stats": stats,
                },
            }
