"""The online stream: solvers produce trajectories while the model trains, served through a replay buffer.

Each training process (each DDP rank, each DataLoader worker) generates its own data, as in
Melissa (Meyer et al., ICML 2023) but co-located with training. Shard ``s`` of ``n`` shards
(``s = rank · workers + worker``) generates the trajectories ``k · n + s`` for ``k = 0, 1, …``, so
shards never overlap and a trajectory is the same whichever shard made it.

With a finite pool (``pool_size = N``) the stream is the same, but trajectory ``g`` of that sequence is
trajectory ``g mod N``: the shards cycle over the pool ``0 … N-1`` and share each cycle disjointly
(each global index ``g`` of a cycle belongs to one shard), and pool trajectory ``k`` is online trajectory
``k``. A pool trajectory is solved again each time it comes round rather than cached: trajectories are
pure functions of ``(seed, split, index)``, so this is exact and deterministic, costs no memory beyond the
replay buffer (N 2D trajectories of 100 frames may not fit it) and keeps one code path for generation,
statistics and the resume refill.

Every yielded batch carries the shard's position and buffer statistics under :data:`STREAM_KEY`;
the DataModule removes them before the batch reaches the model and keeps them as resumable state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from data.buffer import ReplayBuffer
from data.normalize import CondLayout
from data.progress import Progress
from data.sampling import ADAPTIVE_KEYS, ParameterSampler
from data.timegrid import TimeGrid
from data.trajectories import DivergenceCounter, Trajectories, generate, generate_bytes
from solvers.base import Solver
from solvers.errors import ConfigError, check_int

log = logging.getLogger("pdestream")

STREAM_KEY = "stream"
"""Batch key of the stream's bookkeeping (shard position and statistics); not a model input."""
STREAM_ERROR = "stream_error"
"""Key of the batch the DataModule hands on in place of a failed stream's last item: the sentence to stop with."""


def cut_windows(u: Tensor, length: int, stride: int = 1) -> Tensor:
    """All windows of ``length`` frames ``stride`` frames apart, at every start (so at every phase of the
    stride): ``[B, T, C, *S] -> [B · W, length, C, *S]`` with ``W = T - (length - 1) · stride``."""
    windows = u.unfold(1, (length - 1) * stride + 1, 1)[..., ::stride]  # [B, W, C, *S, length]
    return windows.movedim(-1, 2).flatten(0, 1)


def start_rounds(state: Mapping[str, Any] | None, num_shards: int) -> dict[int, int]:
    """Per-shard start counters that continue a saved stream without repeating a trajectory.

    ``state`` holds ``num_shards`` and ``shards`` (``{shard: {"next": counter, ...}}``). With the same
    shard count each shard resumes where it stopped; with a different one every shard starts past the
    largest trajectory index generated so far.
    """
    shards = (state or {}).get("shards") or {}
    if not shards:
        return {}
    saved = {int(k): int(v["next"]) for k, v in shards.items()}
    old = int(state["num_shards"])
    if old == num_shards:
        return saved
    bound = max(k * old + s for s, k in saved.items())  # first index no shard has reached
    first = math.ceil(bound / num_shards)
    return dict.fromkeys(range(num_shards), first)


class TrajectoryStream(IterableDataset):
    """An infinite stream of training batches cut from freshly solved trajectories.

    A batch is ``{"x": [B, time_history, C, *S], "y": [B, target_frames, C, *S], "params": {name: [B]},
    "dt": [B]}`` (float32, not normalised) plus :data:`STREAM_KEY`; ``dt`` is each window's model step,
    ``frame_stride`` frames of its trajectory (``frame_stride · s_b · dt_out`` with a per-trajectory time
    scale ``s_b``, :meth:`~data.timegrid.TimeGrid.spacing`).

    Args:
        solver: the PDE solver; its ``dt_out`` is the interval between frames.
        seed: base seed of the ``"train"`` split.
        time_history, target_frames: input and target frames per window.
        frames: frames per generated trajectory, ``dt_out`` apart; each gives
            ``frames - (window - 1) · frame_stride`` windows.
        frame_stride: the model steps this many frames: a window takes every ``frame_stride``-th frame,
            starting at any frame (all phases, as PDEArena's random start among the first ``frame_stride``).
        solver_batch: trajectories per solver call.
        batch_size: samples per yielded batch.
        buffer: ``policy``, ``capacity``, ``max_reuse``, ``watermark`` of the :class:`ReplayBuffer`.
        max_divergence_fraction: stop when a larger fraction of trajectories diverged.
        pool_size: ``None``: an unbounded stream of new trajectories; ``N``: cycle over trajectories ``0 … N-1``.
        sampling: how new trajectories' PDE parameters are drawn: ``"uniform"`` (the solver's ranges) or
            ``"adaptive"`` (toward high training loss; :class:`~data.sampling.ParameterSampler`).
        adaptive: settings of the adaptive sampler (:data:`data.sampling.ADAPTIVE_KEYS`).
        device: where the solver runs (``"cpu"`` in DataLoader workers, or the training device with
            no workers).
    """

    def __init__(
        self,
        solver: Solver,
        seed: int,
        time_history: int,
        target_frames: int,
        frames: int,
        solver_batch: int,
        batch_size: int,
        buffer: Mapping[str, Any],
        max_divergence_fraction: float = 0.05,
        pool_size: int | None = None,
        sampling: str = "uniform",
        adaptive: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        frame_stride: int = 1,
    ) -> None:
        super().__init__()
        for key, value in (
            ("time_history", time_history),
            ("target_frames", target_frames),
            ("solver_batch", solver_batch),
            ("batch_size", batch_size),
            ("frame_stride", frame_stride),
        ):
            check_int(key, value, 1)
        self.solver, self.seed = solver, int(seed)
        self.time_history, self.target_frames, self.frame_stride = time_history, target_frames, frame_stride
        self.grid = TimeGrid.of_solver(solver, frames)
        self.times = self.grid.times()
        window = time_history + target_frames
        span = (window - 1) * frame_stride + 1
        if frames < span:
            raise ConfigError(
                f"frames={frames} is shorter than a window of time_history + target_frames = {window} frames "
                f"{frame_stride} apart ({span} frames)"
            )
        self.windows_per_trajectory = frames - span + 1
        self.solver_batch, self.batch_size = solver_batch, batch_size
        self.buffer_config = dict(buffer)
        unknown = set(self.buffer_config) - {"policy", "capacity", "max_reuse", "watermark"}
        if unknown:
            raise ConfigError(
                f"unknown buffer key(s) {sorted(unknown)}; allowed: policy, capacity, max_reuse, watermark"
            )
        probe = self._make_buffer(0)  # validates the buffer config here, not in a worker
        incoming = solver_batch * self.windows_per_trajectory
        least = probe.min_capacity(batch_size, incoming)
        if probe.capacity < least:
            raise ConfigError(
                f"buffer.capacity={probe.capacity} is not allowed with policy {probe.policy.name}, "
                f"batch_size={batch_size} and {incoming} windows per solver call; allowed: an int >= {least}"
            )
        DivergenceCounter(max_divergence_fraction)  # validates
        self.max_divergence_fraction = max_divergence_fraction
        self.pool_size = None if pool_size is None else check_int("pool_size", pool_size, 1)
        settings = dict(adaptive or {})
        unknown = sorted(set(settings) - set(ADAPTIVE_KEYS))
        if unknown:
            raise ConfigError(f"unknown data.adaptive key(s) {unknown}; allowed: {', '.join(ADAPTIVE_KEYS)}")
        self.sampler = ParameterSampler(solver.params, sampling, **settings)
        if sampling == "adaptive" and pool_size is not None:
            raise ConfigError(
                f"data.sampling=adaptive draws the parameters of new trajectories, but data.pool_size={pool_size} "
                "fixes them; allowed: sampling=uniform with a pool, or pool_size=null with adaptive sampling"
            )
        self.device = torch.device(device)
        self.rank, self.world_size = 0, 1
        self.resume_state: dict[str, Any] = {}

    def _make_buffer(self, seed: int) -> ReplayBuffer:
        config = {"policy": "reservoir", "capacity": 16384, "max_reuse": 4, "watermark": 4096}
        config.update(self.buffer_config)
        return ReplayBuffer(seed=seed, **config)

    def memory_bytes(self) -> int:
        """About the peak memory (bytes) of one shard: its replay buffer's windows, a solver call
        (:func:`~data.trajectories.generate_bytes`) and the windows cut from it."""
        frame = len(self.solver.channels) * self.solver.n**self.solver.ndim
        windows = self._make_buffer(0).capacity + self.solver_batch * self.windows_per_trajectory
        window_bytes = 4 * frame * (self.time_history + self.target_frames)
        return window_bytes * windows + generate_bytes(self.solver, self.solver_batch, self.grid.frames)

    @property
    def layout(self) -> dict[str, Any]:
        """What a saved buffer must share with this stream to be refilled from its trajectories."""
        return {
            **self._make_buffer(0).state_config(),
            "solver_batch": self.solver_batch,
            "frames": self.grid.frames,
            "window": self.time_history + self.target_frames,
            "frame_stride": self.frame_stride,
            "pool_size": self.pool_size,
        }

    def shard(self) -> tuple[int, int]:
        """``(shard, num_shards)`` of the calling process: ``rank · workers + worker`` of ``world · workers``.

        Workers take their rank's shards in turn; a resumed stream starts with the shard whose turn was
        next when the checkpoint was written, so batches arrive in the uninterrupted order.
        """
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None and self.device.type != "cpu":
            raise ConfigError(
                f"generation on {self.device} runs in the training process: set num_workers=0 "
                "(or generation=cpu to generate in DataLoader workers)"
            )
        num_shards = self.world_size * workers
        saved = self.resume_state.get("shards") or {}
        turn = 0
        if self.resume_state.get("num_shards") == num_shards:
            mine = range(self.rank * workers, (self.rank + 1) * workers)
            turn = sum(int(saved[s]["batches"]) for s in mine if s in saved) % workers
        return self.rank * workers + (worker + turn) % workers, num_shards

    def _solve(
        self, counter: int, shard: int, num_shards: int, drawn: Tensor | None = None
    ) -> tuple[Trajectories, dict[str, Tensor], Tensor]:
        """Solve the ``solver_batch`` trajectories of one call from round ``counter`` and cut them into
        buffer fields; ``origin`` records ``(counter, row)`` so that a saved buffer can be refilled.

        The parameters are drawn by the stream's sampler, or replayed from ``drawn`` (``[solver_batch, P]``,
        float64, the solver's parameter order) when a saved buffer is refilled; they are returned so that
        the refill can replay them (an adaptive draw depends on the sampler's state when it was made).
        """
        indices = [(counter + j) * num_shards + shard for j in range(self.solver_batch)]
        if self.pool_size is not None:
            indices = [i % self.pool_size for i in indices]
        rows: list[dict[str, Tensor]] = []
        names = list(self.solver.params)

        def draw(generator: torch.Generator, row: int) -> dict[str, Tensor]:
            if drawn is None:
                rows.append(self.sampler.draw(generator))
            else:
                self.sampler.skip(generator)
                rows.append({name: drawn[row, i : i + 1] for i, name in enumerate(names)})
            return rows[-1]

        made = generate(self.solver, self.seed, "train", indices, self.times, self.device, draw_params=draw)
        windows = cut_windows(made.u, self.time_history + self.target_frames, self.frame_stride)
        repeat = self.windows_per_trajectory
        step = self.frame_stride * self.grid.spacing(made.params, len(made.index))
        fields = {
            "window": windows,
            "dt": step.to(self.device, torch.float32).repeat_interleave(repeat),
            "index": made.index.repeat_interleave(repeat).to(self.device),
            "origin": torch.stack(
                [torch.full((len(windows),), counter), torch.arange(len(windows))], dim=1
            ).to(self.device),
        }
        layout = CondLayout.of(self.solver).params
        if layout:
            params = torch.stack([made.params[k] for k in layout], dim=-1)
            fields["params"] = params.to(self.device, torch.float32).repeat_interleave(repeat, dim=0)
        draws = (
            torch.stack([torch.cat([r[k] for k in names]) for r in rows])
            if names
            else torch.zeros(len(rows), 0)
        )
        return made, fields, draws.double()

    def _restore(
        self, buffer: ReplayBuffer, snapshot: Mapping[str, Any], shard: int, num_shards: int
    ) -> None:
        """Refill ``buffer`` as it was at ``snapshot``: its samples are re-solved, one call per round still
        present (a trajectory is a pure function of its index, and each call is solved as it was)."""
        occupied = snapshot["buffer"]["count"] >= 0
        origin = snapshot["origin"]
        fields: dict[str, Tensor] = {}
        for counter in origin[occupied, 0].unique().tolist():
            slots = (occupied & (origin[:, 0] == counter)).nonzero().flatten()
            _, made, _ = self._solve(int(counter), shard, num_shards, snapshot["draws"][int(counter)])
            for key, value in made.items():
                if key not in fields:
                    fields[key] = value.new_zeros((buffer.capacity, *value.shape[1:]))
                fields[key][slots.to(value.device)] = value[origin[slots, 1].to(value.device)]
        buffer.load_state_dict(snapshot["buffer"], fields)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Batches until the stream fails; a failure (e.g. too many diverged trajectories) is yielded as a
        last item ``{STREAM_KEY: {"error": sentence}}``, so that it reaches the training process (and
        every DDP rank) as one sentence, also from a DataLoader worker."""
        try:
            yield from self._batches()
        except ConfigError as error:
            yield {STREAM_KEY: {"error": str(error)}}

    def _batches(self) -> Iterator[dict[str, Any]]:
        shard, num_shards = self.shard()
        counter_k = start_rounds(self.resume_state, num_shards).get(shard, 0)
        buffer = self._make_buffer(seed=self.seed * 1_000_003 + shard * 7919 + counter_k)
        divergence = DivergenceCounter(self.max_divergence_fraction)
        saved: Mapping[str, Any] = {}
        if self.resume_state.get("num_shards") == num_shards:
            saved = (self.resume_state.get("shards") or {}).get(shard, {})
        snapshot, samples, batches = (
            saved.get("snapshot"),
            int(saved.get("samples", 0)),
            int(saved.get("batches", 0)),
        )
        draws: dict[int, Tensor] = {}  # each buffered call's parameters, for a refill to replay
        self.sampler.drawn = torch.as_tensor(saved.get("drawn", torch.zeros_like(self.sampler.drawn))).clone()
        if snapshot is not None and snapshot["layout"] == self.layout:
            self._restore(buffer, snapshot, shard, num_shards)
            draws = dict(snapshot["draws"])
            counter_k = int(snapshot["next"])
            divergence.attempted, divergence.diverged = int(snapshot["attempted"]), int(snapshot["diverged"])
            for _ in range(samples):  # the batches served since the snapshot
                buffer.sample(self.batch_size)
        names = CondLayout.of(self.solver).params
        target = max(buffer.policy.watermark, self.batch_size)  # samples before the first batch
        if shard == 0 and target > self.batch_size:
            calls = math.ceil(target / (self.solver_batch * self.windows_per_trajectory))
            log.info(
                "before the first training step the stream fills its replay buffer: %d samples, about %d "
                "solver call(s) of %d trajectories",
                target,
                calls,
                self.solver_batch,
            )
        fill: Progress | None = Progress(
            target, "filling the replay buffer", "samples", enabled=shard == 0 and target > self.batch_size
        )
        while True:
            fresh = False
            while buffer.needs_data(self.batch_size):
                made, fields, draws[counter_k] = self._solve(counter_k, shard, num_shards)
                counter_k += self.solver_batch
                divergence.update(made, self.solver)
                if len(made.index):
                    buffer.put(fields)
                fresh = True
                if fill is not None:
                    fill.update_to(min(len(buffer), target))
            if fill is not None:
                fill.close()
                fill = None
            if fresh:  # the state to refill the buffer from, sent once with the next batch
                present = set(buffer.fields["origin"][:, 0].cpu()[buffer.count >= 0].tolist())
                draws = {k: v for k, v in draws.items() if k in present}
                snapshot = {
                    "layout": self.layout,
                    "next": counter_k,
                    "buffer": buffer.state_dict(),
                    "origin": buffer.fields["origin"].to("cpu", copy=True),
                    "draws": dict(draws),
                    "attempted": divergence.attempted,
                    "diverged": divergence.diverged,
                }
                samples = 0
            sample = buffer.sample(self.batch_size)
            samples += 1
            batches += 1
            stats = buffer.stats()  # running counters: no pass over the buffer
            stats.update(attempted=float(divergence.attempted), diverged=float(divergence.diverged))
            yield {
                "x": sample["window"][:, : self.time_history],
                "y": sample["window"][:, self.time_history :],
                "params": {k: sample["params"][:, i] for i, k in enumerate(names)},
                "dt": sample["dt"],
                STREAM_KEY: {
                    "shard": shard,
                    "num_shards": num_shards,
                    "next": counter_k,
                    "snapshot": snapshot if fresh else None,
                    "samples": samples,
                    "batches": batches,
                    "index": sample["index"],
                    "stats": stats,
                    "drawn": self.sampler.drawn.clone(),
                },
            }
