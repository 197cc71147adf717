"""HDF5 trajectory files: resumable writing, validation, lazy window reading, xarray access.

Layout of one split group (``train``, ``val``, ``test``)::

    u           [trajectory, t, channel, x(, y)]  float32, one chunk per trajectory
    trajectory  [trajectory]  int64   index of the trajectory in its seed stream (dimension scale)
    t, x, y     coordinates   float64 (dimension scales)
    channel     [channel]     str     channel names (dimension scale)
    <param>     [trajectory]  float64 one dataset per PDE parameter

Group attributes: ``config`` (composed config, YAML), ``pdestream_version``, ``solver_class``,
``solver`` (JSON of the solver settings), ``seed``, ``dt_out``, ``num_trajectories`` (target),
``num_written``, ``next_index``, ``attempted``, ``diverged`` and ``complete`` (1 only once all
``num_trajectories`` rows are written). Rows are written in chunks; the counters are updated after the
rows and flushed, so an interrupted write resumes at ``num_written`` and is never read as complete.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import xarray as xr
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from data.progress import Progress
from data.timegrid import TimeGrid
from data.trajectories import DivergenceCounter, Trajectories, describe_solver, generate
from solvers.base import ConfigError, Solver, check_int

RESERVED = ("u", "trajectory", "t", "channel", "x", "y")
SPATIAL = ("x", "y")


def pdestream_version() -> str:
    try:
        return version("pdestream")
    except PackageNotFoundError:
        return "unknown"


def _open(path: str | Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file; a missing, truncated or corrupt file gives one :class:`ConfigError`."""
    if mode == "r" and not Path(path).is_file():
        raise ConfigError(f"data file {str(path)!r} does not exist")
    try:
        return h5py.File(path, mode)
    except OSError as error:
        remedy = (
            "regenerate it with python -m data.generate"
            if mode == "r"
            else "delete it or choose another path"
        )
        raise ConfigError(
            f"{str(path)!r} is not a readable HDF5 file (corrupt or truncated?): {error}; {remedy}"
        ) from None


@dataclass(frozen=True)
class SplitInfo:
    """What a complete split group holds."""

    path: str
    split: str
    num_trajectories: int
    grid: TimeGrid
    channels: tuple[str, ...]
    spatial: tuple[int, ...]
    param_names: tuple[str, ...]
    solver: dict[str, Any]


def inspect_split(path: str | Path, split: str, solver: Solver | None = None) -> SplitInfo:
    """Validate a split group and describe it.

    Raises :class:`ConfigError` if the file is unreadable, the split is missing or incomplete, the
    arrays are inconsistent, or (with ``solver``) it holds another PDE or resolution.
    """
    with _open(path) as file:
        if split not in file:
            raise ConfigError(
                f"{str(path)!r} has no split {split!r}; it has: {', '.join(sorted(file)) or 'none'}"
            )
        group = file[split]
        try:
            attrs = dict(group.attrs)
            written, target = int(attrs["num_written"]), int(attrs["num_trajectories"])
            complete = bool(attrs["complete"])
            info_solver = json.loads(attrs["solver"])
            u = group["u"]
            times = group["t"][:]
            grid = TimeGrid(float(info_solver["dt"]), float(attrs["dt_out"]), len(times))
            channels = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in group["channel"][:])
            params = tuple(info_solver["params"])
            shapes_ok = (
                u.shape[0] == target
                and u.shape[1] == len(times)
                and u.shape[2] == len(channels)
                and all(group[name].shape == (target,) for name in params)
                and np.allclose(times, grid.times().numpy())
            )
        except (KeyError, ValueError, OSError) as error:
            raise ConfigError(
                f"{str(path)!r} group {split!r} is not a pdestream trajectory file or is corrupt ({error})"
            ) from None
        if not complete or written != target:
            raise ConfigError(
                f"{str(path)!r} split {split!r} is incomplete: {written} of {target} trajectories written; "
                "resume it by rerunning python -m data.generate with the same path and settings"
            )
        if not shapes_ok:
            raise ConfigError(
                f"{str(path)!r} split {split!r} is corrupt: its arrays have inconsistent shapes"
            )
        info = SplitInfo(str(path), split, target, grid, channels, tuple(u.shape[3:]), params, info_solver)
    if solver is not None:
        check_matches(info, solver)
    return info


def check_matches(info: SplitInfo, solver: Solver) -> None:
    """Refuse a file made by another PDE (class, channels, parameters) or at another resolution."""
    expected = describe_solver(solver)
    for key in ("class", "ndim", "channels", "n", "length"):
        have, want = info.solver.get(key), expected.get(key)
        if have != want:
            raise ConfigError(
                f"{info.path!r} split {info.split!r} does not match the pde config: file has {key}={have!r}, "
                f"config has {key}={want!r}"
            )
    if set(info.param_names) != set(expected["params"]):
        raise ConfigError(
            f"{info.path!r} has parameters {sorted(info.param_names)}; the pde config has {sorted(expected['params'])}"
        )


# ----------------------------------------------------------------------------- writing
class _Chunks(Dataset):
    """Chunk ``k`` of a generation job: the trajectories ``start + k·size … start + (k+1)·size - 1``."""

    def __init__(
        self,
        solver: Solver,
        seed: int,
        split: str,
        grid: TimeGrid,
        start: int,
        size: int,
        device: str,
        dtype: torch.dtype,
    ) -> None:
        self.solver, self.seed, self.split, self.times = solver, seed, split, grid.times()
        self.start, self.size, self.device, self.dtype = start, size, device, dtype

    def __len__(self) -> int:
        return 2**62 // self.size  # unbounded: the writer stops reading once the split is full

    def __getitem__(self, k: int) -> Trajectories:
        first = self.start + k * self.size
        indices = range(first, first + self.size)
        return generate(self.solver, self.seed, self.split, indices, self.times, self.device, self.dtype)


def _create_split(
    file: h5py.File, split: str, solver: Solver, grid: TimeGrid, num_trajectories: int, attrs: dict[str, Any]
) -> h5py.Group:
    group = file.create_group(split)
    times = grid.times()
    frame = (len(solver.channels), *([solver.n] * solver.ndim))
    u = group.create_dataset(
        "u", shape=(num_trajectories, len(times), *frame), dtype="f4", chunks=(1, len(times), *frame)
    )
    scales = {
        "trajectory": np.full(num_trajectories, -1, dtype=np.int64),
        "t": times.numpy(),
        "channel": np.array(solver.channels, dtype=h5py.string_dtype()),
    }
    for axis, coords in zip(SPATIAL, solver.grid, strict=False):
        scales[axis] = coords.numpy()
    for axis, (name, values) in enumerate(scales.items()):
        group.create_dataset(name, data=values).make_scale(name)
        u.dims[axis].attach_scale(group[name])
    for name in solver.params:
        if name in RESERVED:
            raise ConfigError(f"parameter name {name!r} collides with a file variable; reserved: {RESERVED}")
        group.create_dataset(name, shape=(num_trajectories,), dtype="f8").dims[0].attach_scale(
            group["trajectory"]
        )
    group.attrs.update(attrs)
    group.attrs.update(num_written=0, next_index=0, attempted=0, diverged=0, complete=0)
    return group


def write_split(
    path: str | Path,
    split: str,
    solver: Solver,
    grid: TimeGrid,
    num_trajectories: int,
    seed: int,
    config_yaml: str = "",
    chunk: int = 64,
    device: str = "cpu",
    workers: int = 0,
    max_divergence_fraction: float = 0.05,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> SplitInfo:
    """Generate ``num_trajectories`` trajectories of ``split`` at the times of ``grid`` into ``path``,
    resuming a partial write.

    Trajectories ``0, 1, 2, …`` of the ``(seed, split)`` stream are solved ``chunk`` at a time (in
    ``workers`` DataLoader processes on the CPU, or in this process on ``device``); diverged ones are
    skipped (their indices are absent from the ``trajectory`` coordinate) and counted. An existing
    split with different settings is refused.
    """
    check_int("num_trajectories", num_trajectories, 1)
    check_int("chunk", chunk, 1)
    if device != "cpu" and workers:
        raise ConfigError(f"device={device!r} generates in this process: set workers=0 (got {workers})")
    identity = {
        "solver": json.dumps(describe_solver(solver), sort_keys=True),
        "solver_class": describe_solver(solver)["class"],
        "seed": int(seed),
        "num_trajectories": num_trajectories,
        "dt_out": grid.dt_out,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "a") as file:
        if split in file:
            group = file[split]
            _check_resumable(path, split, group, identity, grid)
        else:
            attrs = {**identity, "config": config_yaml, "pdestream_version": pdestream_version()}
            group = _create_split(file, split, solver, grid, num_trajectories, attrs)
        written = int(group.attrs["num_written"])
        counter = DivergenceCounter(
            max_divergence_fraction, int(group.attrs["attempted"]), int(group.attrs["diverged"])
        )
        bar = Progress(
            num_trajectories,
            f"generating {split} split of {Path(path).name}",
            "trajectories",
            progress,
            done=written,
        )
        start = int(group.attrs["next_index"])
        chunks = _Chunks(solver, seed, split, grid, start, chunk, device, dtype)
        for k, made in enumerate(_run_chunks(chunks, workers) if written < num_trajectories else ()):
            counter.update(made, solver)
            take = min(len(made.index), num_trajectories - written)
            rows = slice(written, written + take)
            group["u"][rows] = made.u[:take].float().cpu().numpy()
            group["trajectory"][rows] = made.index[:take].numpy()
            for name, values in made.params.items():
                group[name][rows] = values[:take].numpy()
            file.flush()
            written += take
            complete = take < len(made.index) or written == num_trajectories
            next_index = int(made.index[take - 1]) + 1 if complete and take else start + (k + 1) * chunk
            group.attrs.update(
                num_written=written,
                next_index=next_index,
                attempted=counter.attempted,
                diverged=counter.diverged,
            )
            file.flush()
            bar.update_to(written)
            if written == num_trajectories:
                group.attrs["complete"] = 1
                file.flush()
                break
        bar.close()
    return inspect_split(path, split)


def _run_chunks(chunks: _Chunks, workers: int) -> Iterator[Trajectories]:
    """Chunks in order: in this process, or from ``workers`` CPU processes."""
    if workers == 0:
        for k in itertools.count():
            yield chunks[k]
    else:
        yield from DataLoader(chunks, batch_size=None, num_workers=workers, prefetch_factor=2)


def _check_resumable(path: str | Path, split: str, group: h5py.Group, identity: dict, grid: TimeGrid) -> None:
    if "num_written" not in group.attrs:  # killed between creating the group and writing its metadata
        raise ConfigError(
            f"{str(path)!r} holds a split {split!r} without metadata, left by a write interrupted while "
            "creating it: delete the file (or that split) and generate again"
        )
    for key, want in identity.items():
        have = group.attrs.get(key)
        have = have.item() if isinstance(have, np.generic) else have
        same = math.isclose(have, want) if isinstance(want, float) and have is not None else have == want
        if not same:
            raise ConfigError(
                f"{str(path)!r} already holds split {split!r} made with {key}={have!r}, not {want!r}: "
                "choose another path or delete the file"
            )
    if "t" not in group or not np.allclose(group["t"][:], grid.times().numpy()):
        raise ConfigError(f"{str(path)!r} split {split!r} has other output times: choose another path")


# ----------------------------------------------------------------------------- reading
def read_trajectories(
    path: str | Path, split: str, solver: Solver | None = None, limit: int | None = None
) -> dict[str, Any]:
    """A split (its first ``limit`` trajectories) in memory.

    Returns ``u`` ``[N, T, C, *S]`` (float32), ``params`` ``{name: [N]}``, the :class:`~data.timegrid.TimeGrid`
    ``grid`` and ``index`` ``[N]`` (each trajectory's index in its seed stream).
    """
    info = inspect_split(path, split, solver)
    rows = slice(0, limit)
    with _open(path) as file:
        group = file[split]
        return {
            "u": torch.from_numpy(group["u"][rows]),
            "params": {name: torch.from_numpy(group[name][rows]) for name in info.param_names},
            "grid": info.grid,
            "index": torch.from_numpy(group["trajectory"][rows]),
        }


def open_dataset(path: str | Path, split: str) -> xr.Dataset:
    """The split as a labelled, lazily loaded ``xarray.Dataset`` (dims ``trajectory, t, channel, x(, y)``)."""
    inspect_split(path, split)
    return xr.open_dataset(path, group=split, engine="h5netcdf")


class HDF5Windows(Dataset):
    """Training windows read lazily from a split: sample ``i`` is window ``i % W`` of trajectory ``i // W``.

    A window is ``time_history + target_frames`` frames ``stride`` file frames apart (so the model's
    interval is ``stride · dt_file``). The file is opened on first access in each process (never
    shared across a fork). Items are ``{"x", "y", "params": {name: scalar}, "dt": scalar}`` (float32).
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        time_history: int,
        target_frames: int,
        stride: int = 1,
        solver: Solver | None = None,
        cache_bytes: int = 64 * 2**20,
    ) -> None:
        self.info = inspect_split(path, split, solver)
        self.path, self.split, self.cache_bytes = str(path), split, cache_bytes
        self.time_history, self.stride = time_history, stride
        self.span = (time_history + target_frames - 1) * stride + 1
        frames = self.info.grid.frames
        if self.span > frames:
            raise ConfigError(
                f"{self.path!r} has {frames} frames per trajectory; a window of time_history + target_frames = "
                f"{time_history + target_frames} frames at stride {stride} needs {self.span}"
            )
        self.windows = frames - self.span + 1
        self._file: h5py.File | None = None
        self._pid = -1
        self._params: dict[str, Tensor] = {}
        self._dt = torch.empty(0)  # each trajectory's model step (time scale × stride × file interval)

    def __len__(self) -> int:
        return self.info.num_trajectories * self.windows

    def _group(self) -> h5py.Group:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r", rdcc_nbytes=self.cache_bytes)
            self._pid = os.getpid()
            group = self._file[self.split]
            params = {k: torch.from_numpy(group[k][:]) for k in self.info.param_names}
            self._dt = (self.stride * self.info.grid.spacing(params, self.info.num_trajectories)).float()
            self._params = {k: v.float() for k, v in params.items()}
        return self._file[self.split]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range [0, {len(self)})")
        trajectory, start = divmod(i, self.windows)
        frames = self._group()["u"][trajectory, start : start + self.span : self.stride]
        window = torch.from_numpy(frames)
        return {
            "x": window[: self.time_history],
            "y": window[self.time_history :],
            "params": {k: v[trajectory] for k, v in self._params.items()},
            "dt": self._dt[trajectory],
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}
