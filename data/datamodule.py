"""Lightning DataModules: ``data=online`` (solvers stream while training) and ``data=offline`` (HDF5 files).

Both serve the same training batches ``{"x": [B, T_in, C, *S], "y": [B, T_out, C, *S], "params":
{name: [B]}, "dt": [B]}`` (not normalised), the same fixed validation/test trajectories
``{"u": [B, T, C, *S], "params": {name: [B]}, "dt": [B]}`` for autoregressive rollouts, and a
:class:`~data.normalize.Normalizer` estimated once from solver output or from the training file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from data.hdf5 import HDF5Windows, inspect_split, read_trajectories, write_bytes, write_split
from data.layouts import LAYOUTS, SPLIT_NAMES, MemoryWindows, detect, fit, layout_module, row_slice
from data.normalize import Normalizer, channel_stats
from data.progress import duration
from data.sampling import ParameterSampler
from data.stream import STREAM_ERROR, STREAM_KEY, TrajectoryStream
from data.timegrid import TimeGrid, output_interval
from data.trajectories import DivergenceCounter, describe_solver, generate, generate_bytes
from solvers.base import Solver
from solvers.errors import ConfigError, check_choice, check_int
from solvers.memory import require_memory

GENERATION = ("cpu", "device")
NORMALIZATIONS = ("channel", "none")
"""``data.normalize``: per-channel mean and std of the training data, or none (the fields as they are, as the
FNO paper's 1D scripts train)."""

log = logging.getLogger("pdestream")


def as_solver(pde: Solver | Mapping[str, Any]) -> tuple[Solver, str]:
    """The solver and its config as YAML (``pde`` is a solver or a config with ``_target_``)."""
    if isinstance(pde, Solver):
        return pde, OmegaConf.to_yaml(OmegaConf.create(describe_solver(pde)))
    if isinstance(pde, Mapping) and "_target_" in pde:
        config = OmegaConf.create(
            OmegaConf.to_container(pde, resolve=True) if isinstance(pde, DictConfig) else pde
        )
        return instantiate(config), OmegaConf.to_yaml(config)
    raise ConfigError(
        f"pde={pde!r} is not allowed: give a Solver or a config with _target_ (conf/pde/*.yaml)"
    )


class TrajectorySet(Dataset):
    """Full trajectories for rollouts: item ``i`` is ``{"u": [T, C, *S], "params": {name: scalar}, "dt": scalar}``,
    ``dt`` ``[N]`` the interval between trajectory ``i``'s frames."""

    def __init__(self, u: Tensor, params: Mapping[str, Tensor], dt: Tensor) -> None:
        self.u, self.params = u.float(), {k: v.float() for k, v in params.items()}
        self.dt = dt.float()

    def __len__(self) -> int:
        return len(self.u)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"u": self.u[i], "params": {k: v[i] for k, v in self.params.items()}, "dt": self.dt[i]}


class PDEDataModule(pl.LightningDataModule):
    """What online and offline data share: windows, batch size, workers, normalisation, rollout sets.

    Args:
        pde: the solver, or its config (``_target_`` + constructor keys, as in ``conf/pde``); its ``dt_out``
            is the model's time step.
        time_history, target_frames: input and target frames of a training window (``target_frames``
            covers every unrolled network call: ``conf/train.yaml`` derives it from the model and module).
        batch_size: training samples (and validation trajectories) per batch.
        num_workers: DataLoader worker processes of the training loader (the in-memory validation and test
            sets need none).
        stats_trajectories: trajectories used to estimate the normalisation statistics.
        normalize: one of :data:`NORMALIZATIONS`.
    """

    def __init__(
        self,
        pde: Solver | Mapping[str, Any],
        time_history: int = 4,
        target_frames: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        stats_trajectories: int = 16,
        normalize: str = "channel",
    ) -> None:
        super().__init__()
        check_choice("data.normalize", normalize, NORMALIZATIONS)
        self.normalize = normalize
        self.solver, self.pde_yaml = as_solver(pde)
        output_interval(self.solver)  # refused here when the preset lacks it
        for key, value, low in (
            ("time_history", time_history, 1),
            ("target_frames", target_frames, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("stats_trajectories", stats_trajectories, 1),
        ):
            check_int(f"data.{key}", value, low)
        self.time_history, self.target_frames = time_history, target_frames
        self.batch_size, self.num_workers, self.stats_trajectories = (
            batch_size,
            num_workers,
            stats_trajectories,
        )
        self._normalizer: Normalizer | None = None
        self._rollouts: dict[str, dict[str, Any]] = {}

    @property
    def time_grid(self) -> TimeGrid:
        """The grid of the training data: the model's step ``dt_out`` (stored in the run's checkpoint)."""
        raise NotImplementedError

    # -------------------------------------------------------------- shared API
    def trajectories(self, split: str) -> dict[str, Any]:
        """Fixed ``val``/``test`` trajectories: ``u`` ``[N, T, C, *S]``, ``params`` ``{name: [N]}``, their
        :class:`~data.timegrid.TimeGrid` ``grid`` and ``index`` ``[N]``."""
        check_choice("split", split, ("val", "test"))
        if split not in self._rollouts:
            self._rollouts[split] = self._load_trajectories(split)
        return self._rollouts[split]

    @property
    def normalizer(self) -> Normalizer:
        """Per-channel statistics and conditioning scales (estimated on first use; deterministic)."""
        if self._normalizer is None:
            if self.normalize == "none":
                channels = len(self.solver.channels)
                mean, std = (
                    torch.zeros(channels, dtype=torch.float64),
                    torch.ones(channels, dtype=torch.float64),
                )
            else:
                mean, std = channel_stats(*self._stats_sample())
            self._normalizer = Normalizer.from_solver(self.solver, mean, std, self.time_grid.dt_out)
        return self._normalizer

    def val_dataloader(self) -> DataLoader:
        return self._rollout_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._rollout_loader("test")

    def _rollout_loader(self, split: str) -> DataLoader:
        data = self.trajectories(split)
        return DataLoader(
            TrajectorySet(data["u"], data["params"], data["grid"].spacing(data["params"], len(data["u"]))),
            batch_size=self.batch_size,
            shuffle=False,
        )

    def _load_trajectories(self, split: str) -> dict[str, Any]:
        raise NotImplementedError

    def _stats_sample(self) -> tuple[Tensor, str]:
        """Trajectories ``[N, T, C, *S]`` to estimate the statistics from, and words naming them."""
        raise NotImplementedError


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
"""Signals that stop a run: the training process saves ``last.ckpt`` and ends its DataLoader workers itself."""


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoaders: a worker ignores :data:`STOP_SIGNALS`.

    A scheduler stops a job by signalling every process of it (SLURM's ``scancel``, a preemption, ``kill``
    of the process group). A worker killed by that signal makes the training process fail with "DataLoader
    worker ... is killed by signal: Terminated" (a traceback, no checkpoint) before it can stop cleanly at the
    end of its step; ignoring the signal leaves the worker to be shut down by the training process as it exits.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _rows(index: Tensor) -> str:
    """The file rows ``index`` names, as ``[start, stop)`` when they are consecutive."""
    first, last = int(index.min()), int(index.max())
    return (
        f"[{first}, {last + 1})"
        if len(index) == last - first + 1
        else f"{len(index)} rows from {first} to {last}"
    )


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` while a cache file is checked, written or read.

    Runs started together (a sweep, two trainings, parallel evaluations) need the same validation/test
    file: the first generates it, the others wait and then read it, instead of failing on HDF5's own
    lock or writing it twice.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is writing %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OnlineDataModule(PDEDataModule):
    """Training batches from a :class:`~data.stream.TrajectoryStream`; validation/test sets cached as HDF5.

    Args (besides those of :class:`PDEDataModule`):
        frames: frames per generated training trajectory, ``pde.dt_out`` apart.
        frame_stride: the model steps this many frames (``frame_stride · pde.dt_out``); training windows start
            at every frame (:class:`~data.stream.TrajectoryStream`), validation/test trajectories hold every
            ``frame_stride``-th frame.
        rollout_frames: frames per validation/test trajectory, one model step apart; ``None``: those of a
            training trajectory (``ceil(frames / frame_stride)``).
        solver_batch: trajectories per solver call.
        buffer: replay buffer ``policy`` (fifo · firo · reservoir), ``capacity``, ``max_reuse``, ``watermark``.
        seed: base seed; train, val, test and statistics use disjoint streams of it.
        generation: ``"device"`` — solve on the training device in the training process (the train
            loader then has no workers and ``num_workers`` is unused); ``"cpu"`` — solve in the
            ``num_workers`` DataLoader processes (at least one).
        max_divergence_fraction: stop with an error naming the pde config if more trajectories diverge.
        pool_size: ``None``: every training trajectory is new (an unbounded online stream); ``N``: the
            stream cycles over a fixed pool of the training trajectories ``0 … N-1`` (see
            :mod:`data.stream`).
        sampling: ``"uniform"`` (the solver's parameter ranges) or ``"adaptive"`` (new trajectories' parameters
            follow the training loss over the parameter space; :mod:`data.sampling`).
        adaptive: the adaptive sampler's settings (:data:`data.sampling.ADAPTIVE_KEYS`).
        num_val_trajectories, num_test_trajectories: sizes of the fixed rollout sets.
        cache_dir: where the rollout sets are cached, one file per configuration.
    """

    def __init__(
        self,
        pde: Solver | Mapping[str, Any],
        time_history: int = 4,
        target_frames: int = 1,
        batch_size: int = 32,
        num_workers: int = 1,
        stats_trajectories: int = 16,
        normalize: str = "channel",
        frames: int = 100,
        frame_stride: int = 1,
        rollout_frames: int | None = None,
        solver_batch: int = 32,
        buffer: Mapping[str, Any] | None = None,
        seed: int = 0,
        generation: str = "device",
        max_divergence_fraction: float = 0.05,
        pool_size: int | None = None,
        sampling: str = "uniform",
        adaptive: Mapping[str, Any] | None = None,
        num_val_trajectories: int = 32,
        num_test_trajectories: int = 32,
        cache_dir: str = ".cache/pdestream",
    ) -> None:
        super().__init__(
            pde,
            time_history=time_history,
            target_frames=target_frames,
            batch_size=batch_size,
            num_workers=num_workers,
            stats_trajectories=stats_trajectories,
            normalize=normalize,
        )
        if not self.solver.can_solve:
            raise self.solver.refusal("stream trajectories (data=online)")
        check_choice("data.generation", generation, GENERATION)
        check_int("data.num_val_trajectories", num_val_trajectories, 1)
        check_int("data.num_test_trajectories", num_test_trajectories, 1)
        self.generation, self.seed, self.cache_dir = generation, int(seed), Path(cache_dir)
        self.max_divergence_fraction = max_divergence_fraction
        self.num_rollouts = {"val": num_val_trajectories, "test": num_test_trajectories}
        self.stream = TrajectoryStream(
            self.solver,
            seed=self.seed,
            time_history=time_history,
            target_frames=target_frames,
            frames=frames,
            solver_batch=solver_batch,
            batch_size=batch_size,
            buffer=dict(buffer or {}),
            max_divergence_fraction=max_divergence_fraction,
            pool_size=pool_size,
            sampling=sampling,
            adaptive=adaptive,
            frame_stride=frame_stride,
        )
        grid = self.stream.grid.every(frame_stride)
        if rollout_frames is not None:
            check_int("data.rollout_frames", rollout_frames, 2)
            grid = TimeGrid(grid.dt, grid.dt_out, rollout_frames)
        self.rollout_grid = grid
        self.stream_state: dict[str, Any] = {"num_shards": 1, "shards": {}}
        self.shard_stats: dict[int, dict[str, float]] = {}
        self.stream.resume_state = self.stream_state

    @property
    def time_grid(self) -> TimeGrid:
        """The validation/test trajectories' grid: ``rollout_frames`` frames one model step apart."""
        return self.rollout_grid

    # -------------------------------------------------------------- rollout sets
    @property
    def cache_path(self) -> Path:
        """``cache_dir/<Solver>-<hash>.h5``, the hash covering everything that shapes the rollout sets."""
        key = {
            "solver": describe_solver(self.solver),
            "seed": self.seed,
            "time_grid": self.time_grid.to_dict(),
            "num": self.num_rollouts,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"{type(self.solver).__name__}-{digest}.h5"

    def prepare_data(self) -> None:
        """Generate the validation set once per configuration (rank 0 of each node).

        The test set is generated when it is first asked for (``evaluate.py``), so training never waits for it.
        """
        self._prepare("val")

    def _prepare(self, split: str) -> None:
        with cache_lock(self.cache_path):
            self._write_once(split)

    def _write_once(self, split: str) -> None:
        try:
            inspect_split(self.cache_path, split, self.solver)
        except ConfigError:
            count, frames = self.num_rollouts[split], self.time_grid.frames
            chunk = min(count, 16)  # a progress line per chunk; the data do not depend on it
            held = count * frames * len(self.solver.channels) * self.solver.n**self.solver.ndim * 4
            require_memory(
                f"generating the {split} set ({count} trajectories of {frames} frames, {chunk} at a time)",
                max(write_bytes(self.solver, frames, chunk), held),
                f"pde.n_solve, pde.n, data.rollout_frames or data.num_{split}_trajectories",
            )
            log.info(
                "making the %s set: %d trajectories of %d frames, once per configuration (cached in %s)",
                split,
                count,
                frames,
                self.cache_path,
            )
            write_split(
                self.cache_path,
                split,
                self.solver,
                self.time_grid,
                count,
                self.seed,
                config_yaml=self.pde_yaml,
                chunk=chunk,
                max_divergence_fraction=self.max_divergence_fraction,
            )

    def _load_trajectories(self, split: str) -> dict[str, Any]:
        with cache_lock(self.cache_path):  # runs started together share one cache file
            self._write_once(split)
            return read_trajectories(self.cache_path, split, self.solver)

    def _stats_sample(self) -> tuple[Tensor, str]:
        count, frames = self.stats_trajectories, self.time_grid.frames
        require_memory(
            f"solving the {count} statistics trajectories of {frames} frames",
            generate_bytes(self.solver, count, frames),
            "pde.n_solve, pde.n, data.rollout_frames or data.stats_trajectories",
        )
        log.info(
            "solving %d trajectories of %d frames for the normalisation statistics (per-channel mean and std)",
            count,
            frames,
        )
        start = time.monotonic()
        made = generate(self.solver, self.seed, "stats", range(count), self.time_grid.times())
        DivergenceCounter(self.max_divergence_fraction).update(made, self.solver)
        log.info(
            "normalisation statistics: done, %d trajectories in %s", count, duration(time.monotonic() - start)
        )
        return made.u, f"the {count} statistics trajectories of the pde config ({made.diverged} diverged)"

    # -------------------------------------------------------------- training stream
    def setup(self, stage: str | None = None) -> None:
        """Place the training stream (rank, device) and refuse it, before anything is solved, if its shards'
        replay buffers and solver calls do not fit in memory."""
        trainer = self.trainer
        if trainer is not None:
            self.stream.rank, self.stream.world_size = trainer.global_rank, trainer.world_size
        device = torch.device("cpu")
        if self.generation == "device":
            if trainer is not None:
                device = trainer.strategy.root_device
            elif torch.cuda.is_available():
                device = torch.device("cuda")
        self.stream.device = device
        if stage in (None, "fit"):
            shards = 1 if self.generation == "device" else max(self.num_workers, 1)
            if trainer is not None and device.type == "cpu":  # the ranks on this node share its memory
                shards *= max(trainer.world_size // trainer.num_nodes, 1)
            require_memory(
                f"the training stream ({shards} shard(s), each with a replay buffer of "
                f"{self.stream.layout['capacity']} windows and solver calls of {self.stream.solver_batch} "
                f"trajectories of {self.stream.grid.frames} frames)",
                shards * self.stream.memory_bytes(),
                "data.buffer.capacity, data.solver_batch, data.frames, pde.n_solve or pde.n",
                device,
            )

    def train_dataloader(self) -> DataLoader:
        workers = 0 if self.generation == "device" else max(self.num_workers, 1)
        return DataLoader(
            self.stream,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=workers > 0 and torch.cuda.is_available(),
            worker_init_fn=leave_stop_signals_to_the_trainer,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the stream's bookkeeping out of a training batch and keep it as resumable state.

        A stream failure (its last item) raises :class:`ConfigError` with its sentence; under DDP it is
        handed on as ``{STREAM_ERROR: sentence}`` in place of a batch, for the training loop to stop every
        rank with it at the same step (:class:`training.stopping.StopGuard`).
        """
        if isinstance(batch, dict) and STREAM_KEY in batch:
            batch = dict(batch)
            info = batch.pop(STREAM_KEY)
            if "error" in info:
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    return {STREAM_ERROR: info["error"]}
                raise ConfigError(info["error"])
            self.record(info)
        return batch

    def record(self, info: Mapping[str, Any]) -> None:
        """Note a consumed batch's shard position, buffer snapshot (resume point) and statistics."""
        shard, num_shards = int(info["shard"]), int(info["num_shards"])
        if num_shards != self.stream_state["num_shards"]:
            self.stream_state["num_shards"], self.stream_state["shards"] = num_shards, {}
        entry = self.stream_state["shards"].setdefault(shard, {"snapshot": None})
        entry.update(next=int(info["next"]), samples=int(info["samples"]), batches=int(info["batches"]))
        if info["snapshot"] is not None:
            entry["snapshot"] = info["snapshot"]
        self.shard_stats[shard] = {k: float(v) for k, v in info["stats"].items()}
        entry["drawn"] = info["drawn"]

    @property
    def sampler(self) -> ParameterSampler:
        """Where new training trajectories' parameters come from (the training loop feeds it losses)."""
        return self.stream.sampler

    def drawn(self) -> Tensor:
        """Training trajectories drawn per parameter cell by this rank's shards (its DataLoader workers)."""
        counts = [entry["drawn"] for entry in self.stream_state["shards"].values() if "drawn" in entry]
        return torch.stack(counts).sum(0) if counts else torch.zeros_like(self.sampler.drawn)

    def stream_stats(self) -> dict[str, float]:
        """This rank's stream statistics, summed over its shards (its DataLoader workers, whose counters
        arrive with their batches); empty before the first batch.

        ``buffer_fill`` (samples held / capacity), ``windows_inserted``, ``samples_served``, ``reuse_mean``
        (samples served per window inserted), ``reuse_max`` (most uses of one window), ``evicted_unseen``,
        ``trajectories`` (generated, diverged ones included), ``diverged`` and ``diverged_fraction``.
        """
        if not self.shard_stats:
            return {}
        shards = self.shard_stats.values()
        keys = ("size", "capacity", "inserted", "served", "evicted_unseen", "attempted", "diverged")
        total = {k: sum(s[k] for s in shards) for k in keys}
        return {
            "buffer_fill": total["size"] / total["capacity"],
            "windows_inserted": total["inserted"],
            "samples_served": total["served"],
            "reuse_mean": total["served"] / max(total["inserted"], 1.0),
            "reuse_max": max(s["max_seen"] for s in shards),
            "evicted_unseen": total["evicted_unseen"],
            "trajectories": total["attempted"],
            "diverged": total["diverged"],
            "diverged_fraction": total["diverged"] / max(total["attempted"], 1.0),
        }

    def state_dict(self) -> dict[str, Any]:
        """Every shard's resume point — this rank's and, under DDP, every other rank's (gathered, so the
        checkpoint rank 0 writes resumes all of them): position, buffer snapshot, batches since it."""
        shards = dict(self.stream_state["shards"])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, shards)
            shards = {k: v for part in gathered for k, v in part.items()}
        return {
            "stream": {"num_shards": self.stream_state["num_shards"], "shards": shards},
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["stream"]
        self.stream_state["num_shards"] = int(saved["num_shards"])
        self.stream_state["shards"] = {int(k): dict(v) for k, v in saved["shards"].items()}
        self.sampler.load_state_dict(state_dict["sampler"])


class OfflineDataModule(PDEDataModule):
    """Training windows and validation/test trajectories from files in any layout of :mod:`data.layouts`.

    Args (besides those of :class:`PDEDataModule`):
        paths: ``{"train": file, "val": file, "test": file}``, or one file (or The Well's dataset directory)
            for every split.
        format: ``auto`` (detected from the training file) or one of :data:`~data.layouts.LAYOUTS`.
        rows: ``{split: [start, stop]}``: the rows of each split's file that serve it (Python slice bounds,
            null open); a split not given takes its layout's published convention (``fno``: the first 1000
            train, the last 100 test; ``pdebench``: the first 10 % test and validate, the rest train; the
            others: every row of the split's own file or group).

    A pdestream file must match ``pde`` (class, resolution, parameters) and is read lazily; ``pde.dt_out``
    must be a multiple of each file's output interval (a finer file is read every k-th frame). A foreign file
    is held in memory, read every ``file_n / pde.n``-th point and every ``dt_out / dt_file``-th frame
    (:func:`data.layouts.fit`).
    """

    def __init__(
        self,
        pde: Solver | Mapping[str, Any],
        paths: str | Mapping[str, str],
        format: str = "auto",
        rows: Mapping[str, Any] | None = None,
        time_history: int = 4,
        target_frames: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        stats_trajectories: int = 16,
        normalize: str = "channel",
        pde_preset: str | None = None,
    ) -> None:
        super().__init__(
            pde,
            time_history=time_history,
            target_frames=target_frames,
            batch_size=batch_size,
            num_workers=num_workers,
            stats_trajectories=stats_trajectories,
            normalize=normalize,
        )
        self.pde_preset = pde_preset
        if isinstance(paths, str | Path):
            paths = dict.fromkeys(SPLIT_NAMES, str(paths))
        missing = set(SPLIT_NAMES) - set(paths or {})
        if missing:
            raise ConfigError(
                f"data.paths is missing {sorted(missing)}; give a file for each of train, val, test (or one for all)"
            )
        self.paths = {k: str(v) for k, v in paths.items()}
        unknown = set(rows or {}) - set(SPLIT_NAMES)
        if unknown:
            raise ConfigError(f"data.rows has {sorted(unknown)}; allowed: {', '.join(SPLIT_NAMES)}")
        self.rows = dict(rows or {})
        self.format = format
        if format not in ("auto", *LAYOUTS):
            raise ConfigError(f"data.format={format!r} is not allowed; allowed: auto, {', '.join(LAYOUTS)}")
        self.train_set: Dataset | None = None
        self._memory: dict[str, dict[str, Any]] = {}
        self._files: dict[Any, Any] = {}

    def _check_files(self) -> None:
        """A pdestream file that does not exist is refused with the ``python -m data.generate`` command that
        makes it (the run's pde preset, each missing split, the path)."""
        missing = {split: self.paths[split] for split in SPLIT_NAMES if not Path(self.paths[split]).exists()}
        if not missing:
            return
        pde = f"pde={self.pde_preset} " if self.pde_preset else ""
        splits, paths = list(missing), sorted(set(missing.values()))
        if len(paths) == 1:
            command = f"python -m data.generate {pde}split={splits[0]} path={paths[0]}"
            if len(splits) > 1:
                command += ", then the same with " + " and ".join(f"split={s}" for s in splits[1:])
            where = f"data file {paths[0]!r} does not exist ({', '.join(f'data.paths.{s}' for s in splits)})"
        else:
            command = "; ".join(
                f"python -m data.generate {pde}split={s} path={p}" for s, p in missing.items()
            )
            where = (
                "data files "
                + ", ".join(f"data.paths.{s}={p!r}" for s, p in missing.items())
                + " do not exist"
            )
        raise ConfigError(f"{where}; make it with: {command} (with this run's pde.* overrides, if any)")

    @property
    def layout(self) -> str:
        """The training file's layout (``data.format``, or detected)."""
        if self.format in ("auto", "pdestream"):
            self._check_files()
        if self.format == "auto":
            self.format = detect(self.paths["train"])
        given = {k: v for k, v in self.rows.items() if v is not None}
        if self.format == "pdestream" and given:
            split, value = next(iter(given.items()))
            raise ConfigError(
                f"data.rows.{split}={list(value)} is not allowed with a pdestream file (a group per split): give null"
            )
        return self.format

    def _in_memory(self, split: str) -> dict[str, Any]:
        """A foreign file's rows for ``split`` (:func:`data.layouts.fit`); a one-file layout's file is read once
        for all its splits, and the splits that share a file must not share rows (PDEBench's validation on its
        test rows excepted, its own protocol)."""
        if split not in self._memory:
            path, module = self.paths[split], layout_module(self.layout)
            key = path if module.ONE_FILE else (path, split)
            if key not in self._files:
                self._files[key] = module.read(Path(path), split)
            loaded = self._files[key]
            part = row_slice(self.rows.get(split), split, loaded.u.shape[0], self.layout)
            self._memory[split] = fit(loaded, self.solver, path, self.layout, split, part)
            self._check_disjoint(split)
        return self._memory[split]

    def _check_disjoint(self, split: str) -> None:
        if not layout_module(self.layout).ONE_FILE:  # each split's own file or folder
            return
        rows = set(self._memory[split]["index"].tolist())
        published = self.layout == "pdebench" and self.rows.get("val") is None  # val = test, PDEBench's own
        for other, data in self._memory.items():
            if other == split or self.paths[other] != self.paths[split]:
                continue
            if published and {split, other} == {"val", "test"}:
                continue
            shared = rows & set(data["index"].tolist())
            if shared:
                raise ConfigError(
                    f"data.rows: the {split} and {other} rows of {self.paths[split]!r} overlap (e.g. row "
                    f"{min(shared)}); give data.rows.{split} and data.rows.{other} disjoint [start, stop]"
                )

    def _stride(self, split: str) -> tuple[int, TimeGrid]:
        """File frames per model step in ``split``'s pdestream file, and the file's grid."""
        grid = inspect_split(self.paths[split], split, self.solver).grid
        dt_out = output_interval(self.solver)
        stride = grid.frames_per(dt_out)
        if stride < 1:
            raise ConfigError(
                f"pde.dt_out={dt_out:g} is not a multiple of the interval {grid.dt_out:g} of "
                f"{self.paths[split]!r}; allowed: {grid.dt_out:g}, {2 * grid.dt_out:g}, ... "
                "(or generate the file with this pde.dt_out)"
            )
        return stride, grid

    @property
    def time_grid(self) -> TimeGrid:
        """The training file's grid, every k-th frame: frames ``pde.dt_out`` apart."""
        if self.layout != "pdestream":
            return self._in_memory("train")["grid"]
        stride, grid = self._stride("train")
        return grid.every(stride)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None or stage not in (None, "fit"):
            return
        if self.layout == "pdestream":
            self.train_set = HDF5Windows(
                self.paths["train"],
                "train",
                self.time_history,
                self.target_frames,
                stride=self._stride("train")[0],
                solver=self.solver,
            )
            info = self.train_set.info
            log.info(
                "data: training on %s, group train: %d trajectories of %d frames (%d windows)",
                self.paths["train"],
                info.num_trajectories,
                info.grid.frames,
                len(self.train_set),
            )
            return
        data = self._in_memory("train")
        log.info(
            "data: training on %s (%s layout): rows %s, %d trajectories of %d frames",
            self.paths["train"],
            self.layout,
            _rows(data["index"]),
            len(data["u"]),
            data["u"].shape[1],
        )
        self.train_set = MemoryWindows(
            data["u"],
            data["params"],
            data["grid"].spacing(data["params"], len(data["u"])),
            self.time_history,
            self.target_frames,
            repr(self.paths["train"]),
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=self.layout
            == "pdestream",  # a foreign file trains in epochs of every row, as its scripts
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=leave_stop_signals_to_the_trainer,
        )

    def trajectories(self, split: str) -> dict[str, Any]:
        """As :meth:`PDEDataModule.trajectories`, and ``"train"``: the training rows as trajectories."""
        return self._load_trajectories("train") if split == "train" else super().trajectories(split)

    def _load_trajectories(self, split: str) -> dict[str, Any]:
        if self.layout != "pdestream":
            data = self._in_memory(split)
            log.info(
                "data: %s set from %s (%s layout): rows %s, %d trajectories",
                split,
                self.paths[split],
                self.layout,
                _rows(data["index"]),
                len(data["u"]),
            )
            return data
        stride, file_grid = self._stride(split)
        data = read_trajectories(self.paths[split], split, self.solver)
        log.info(
            "data: %s set from %s, group %s: %d trajectories", split, self.paths[split], split, len(data["u"])
        )
        grid = file_grid.every(stride)
        if stride > 1:  # legitimate, but it shortens the rollouts: say so
            log.info(
                "data: %s holds %s frames every %g; pde.dt_out=%g keeps every %d-th: %d frames per trajectory",
                self.paths[split],
                split,
                file_grid.dt_out,
                grid.dt_out,
                stride,
                grid.frames,
            )
        return {**data, "u": data["u"][:, ::stride], "grid": grid}

    def _stats_sample(self) -> tuple[Tensor, str]:
        path, count = self.paths["train"], self.stats_trajectories
        if self.layout != "pdestream":
            sample = self._in_memory("train")["u"][:count]
            return sample, f"the first {len(sample)} training rows of {path!r}"
        sample = read_trajectories(path, "train", self.solver, limit=count)["u"]
        return sample, f"the first {len(sample)} trajectories of {path!r} split 'train'"
