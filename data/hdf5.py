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
``num_trajectories`` rows are written). Rows are written in chunks, each flushed to the disk (``fsync``)
and read back before the counters are updated and flushed in turn, so the counters count only rows known to
be on the disk: an interrupted or failed write (a full disk) resumes at ``num_written`` and is never read as
complete. Reading refuses trajectories that hold NaN or inf.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import re
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
from data.trajectories import DivergenceCounter, Trajectories, describe_solver, generate, generate_bytes
from solvers.base import Solver
from solvers.errors import ConfigError, check_int

RESERVED = ("u", "trajectory", "t", "channel", "x", "y")
SPATIAL = ("x", "y")
COORDINATE_UNITS = {"t": "time units", "x": "length units", "y": "length units"}
"""``units`` of the coordinates a pdestream file stores (see :data:`UNITS_NOTE`)."""
UNITS_NOTE = (
    "nondimensional: 'length units' and 'time units' are the PDE's own units of length and time, in which its "
    "preset gives the domain length and dt"
)
"""The ``units_note`` attribute of a split written by one of pdestream's solvers."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a write that more free space (or quota) would let through."""
RESERVE_SLACK = 2**18
"""Bytes reserved beyond a write's rows for what HDF5 adds with them (chunk index nodes, attributes: a few kB)."""


def pdestream_version() -> str:
    try:
        return version("pdestream")
    except PackageNotFoundError:
        return "unknown"


def open_hdf5(path: str | Path, mode: str = "r", **options: Any) -> h5py.File:
    """Open an HDF5 file (``options`` go to ``h5py.File``); a missing, truncated or corrupt file gives one
    :class:`ConfigError`. The ``OSError`` of a new file that cannot be created is left to the writer."""
    if not Path(path).is_file():
        if mode == "r":
            raise ConfigError(f"data file {str(path)!r} does not exist")
        return h5py.File(path, mode, **options)
    try:
        return h5py.File(path, mode, **options)
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
    with open_hdf5(path) as file:
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
        if not np.issubdtype(u.dtype, np.floating):
            raise ConfigError(
                f"{str(path)!r} split {split!r}: 'u' holds {u.dtype} values; allowed: floating point (float16, "
                "float32, float64)"
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
        if name in COORDINATE_UNITS and solver.can_solve:  # data another program made: its units are its own
            group[name].attrs["units"] = COORDINATE_UNITS[name]
    if solver.channel_units:
        units = [f"{c}: {solver.channel_units.get(c, 'no stated units')}" for c in solver.channels]
        u.attrs["units"] = (
            solver.channel_units.get(solver.channels[0], "") if len(units) == 1 else "; ".join(units)
        )
    for name in solver.params:
        if name in RESERVED:
            raise ConfigError(f"parameter name {name!r} collides with a file variable; reserved: {RESERVED}")
        zeros = np.zeros(num_trajectories)  # allocated now, in the space reserved for the new split
        group.create_dataset(name, data=zeros).dims[0].attach_scale(group["trajectory"])
        meaning, param_units = solver.param_meanings.get(name, (name, ""))
        group[name].attrs.update(long_name=meaning, units=param_units)
    if solver.can_solve:
        group.attrs["units_note"] = UNITS_NOTE
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

    Each chunk's disk space is reserved before HDF5 writes it (:func:`_reserve`), and the chunk is flushed to
    the disk and read back before the counters count it. A failed write (a full disk, an I/O error) raises
    :class:`ConfigError` saying how many trajectories are safely written, and rerunning resumes after them; a
    split this call created without writing a row is removed again (the whole file if this call created it).
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed, created, safe = path.exists(), False, 0  # safe: rows whose counters are on the disk
    bar: Progress | None = None
    try:
        with _writing(path) as file:
            if split in file:
                group = file[split]
                _check_resumable(path, split, group, identity, grid)
            else:
                created = True
                _reserve(file, 8 * num_trajectories * (1 + len(solver.params)) + 8 * len(grid.times()))
                attrs = {**identity, "config": config_yaml, "pdestream_version": pdestream_version()}
                group = _create_split(file, split, solver, grid, num_trajectories, attrs)
                _sync(file)
            safe = written = int(group.attrs["num_written"])
            counter = DivergenceCounter(
                max_divergence_fraction, int(group.attrs["attempted"]), int(group.attrs["diverged"])
            )
            bar = Progress(
                num_trajectories,
                f"generating {split} split of {path.name}",
                "trajectories",
                progress,
                done=written,
            )
            start = int(group.attrs["next_index"])
            chunks = _Chunks(solver, seed, split, grid, start, chunk, device, dtype)
            columns = [group[name] for name in ("u", "trajectory", *solver.params)]
            for k, made in enumerate(_run_chunks(chunks, workers) if written < num_trajectories else ()):
                counter.update(made, solver)
                take = min(len(made.index), num_trajectories - written)
                values = [made.u[:take].float().cpu().numpy(), made.index[:take].numpy()]
                values += [made.params[name][:take].numpy() for name in solver.params]
                _write_verified(file, columns, slice(written, written + take), values)
                written += take
                complete = take < len(made.index) or written == num_trajectories
                next_index = int(made.index[take - 1]) + 1 if complete and take else start + (k + 1) * chunk
                group.attrs.update(
                    num_written=written,
                    next_index=next_index,
                    attempted=counter.attempted,
                    diverged=counter.diverged,
                    complete=int(written == num_trajectories),
                )
                _sync(file)
                safe = written
                bar.update_to(written)
                if written == num_trajectories:
                    break
    except OSError as error:  # reserving, writing, flushing, reading back or closing failed
        if created and safe == 0:
            _discard(path, split, whole_file=not existed)
        kept = f"{safe} of {num_trajectories} trajectories of split {split!r} are safely written"
        raise write_failure(path, error, kept) from None
    finally:
        if bar is not None:
            bar.close()
    return inspect_split(path, split)


def write_bytes(
    solver: Solver, frames: int, chunk: int, workers: int = 0, dtype: torch.dtype = torch.float32
) -> int:
    """About the peak memory (bytes) of :func:`write_split`: ``max(workers, 1)`` processes each solving a
    chunk (:func:`~data.trajectories.generate_bytes`), the chunks a DataLoader prefetches (two per worker),
    and the chunk being written and read back."""
    rows = chunk * frames * len(solver.channels) * solver.n**solver.ndim * 4
    return max(workers, 1) * generate_bytes(solver, chunk, frames, dtype) + (2 * workers + 2) * rows


def write_failure(path: str | Path, error: OSError, kept: str) -> ConfigError:
    """The sentence for a write of ``path`` that failed with ``error``: the cause, what is kept (``kept``)
    and what to do."""
    if error.errno in DISK_FULL:
        return ConfigError(
            f"disk full while writing {str(path)!r}: {kept}; free space and rerun the same command to resume"
        )
    reason = (error.strerror or str(error)).split(" (", 1)[0]
    return ConfigError(
        f"could not write {str(path)!r} ({reason}): {kept}; fix that and rerun the same command to resume"
    )


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[h5py.File]:
    """``path`` opened for writing without a chunk cache (so a failed write raises where it happens, not when
    the cache is evicted); closing it after a failure does not mask that failure."""
    file = open_hdf5(path, "a", rdcc_nbytes=0)
    try:
        yield file
    except BaseException:
        with contextlib.suppress(OSError, RuntimeError):
            file.close()
        raise
    try:
        file.close()
    except RuntimeError as error:
        raise _os_error(error) from None


def _reserve(file: h5py.File, nbytes: int) -> None:
    """Allocate disk space for ``nbytes`` (and :data:`RESERVE_SLACK`) past the end of ``file`` before HDF5
    writes there.

    A full disk then fails here, with HDF5's state intact: HDF5 that meets it itself, while flushing its
    metadata, can neither flush nor close the file again and crashes the process at exit. :func:`_sync`
    gives back what was not used. Where the system or file system cannot reserve space (macOS, some network
    file systems) nothing is reserved.
    """
    try:
        os.posix_fallocate(file.id.get_vfd_handle(), file.id.get_filesize(), nbytes + RESERVE_SLACK)
    except AttributeError:
        pass
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _sync(file: h5py.File) -> None:
    """Flush ``file`` to the operating system, cut what :func:`_reserve` left unused and flush it to the disk,
    so that a write error surfaces here."""
    try:
        file.flush()
    except RuntimeError as error:
        raise _os_error(error) from None
    handle, size = file.id.get_vfd_handle(), file.id.get_filesize()
    if os.fstat(handle).st_size > size:
        os.ftruncate(handle, size)
    os.fsync(handle)


def _os_error(error: RuntimeError) -> OSError:
    """The ``OSError`` behind h5py's ``RuntimeError`` for a failed flush or close (its errno is in HDF5's
    message; ``EIO`` where it is not)."""
    found = re.search(r"errno = (\d+)", str(error))
    return OSError(int(found.group(1)) if found else errno.EIO, str(error))


def _write_verified(
    file: h5py.File, datasets: list[h5py.Dataset], rows: slice, values: list[np.ndarray]
) -> None:
    """Write ``values`` into ``rows`` of ``datasets`` (in space reserved for them), flush them to the disk
    and read them back.

    Raises:
        OSError: the reservation, a write or the flush failed, or the rows read back differ from ``values``
            (``EIO``).
    """
    _reserve(file, sum(value.nbytes for value in values))
    for dataset, value in zip(datasets, values, strict=True):
        dataset[rows] = value
    _sync(file)
    for dataset, value in zip(datasets, values, strict=True):
        if not np.array_equal(dataset[rows], value, equal_nan=True):
            raise OSError(
                errno.EIO,
                f"rows {rows.start} to {rows.stop - 1} of {dataset.name} read back differ from those written",
            )


def _discard(path: Path, split: str, whole_file: bool) -> None:
    """Remove a split that failed before its first row was written (the whole file if it was new), so that a
    rerun creates it afresh; a removal that fails too leaves it for the rerun to report."""
    with contextlib.suppress(OSError):
        if whole_file:
            path.unlink(missing_ok=True)
        else:
            with h5py.File(path, "a") as file:
                if split in file:
                    del file[split]


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
    ``grid`` and ``index`` ``[N]`` (each trajectory's index in its seed stream); trajectories that hold NaN or
    inf are refused (:func:`check_finite`).
    """
    info = inspect_split(path, split, solver)
    rows = slice(0, limit)
    with open_hdf5(path) as file:
        group = file[split]
        u = torch.from_numpy(group["u"][rows])
        check_finite(u, path, split)
        return {
            "u": u,
            "params": {name: torch.from_numpy(group[name][rows]) for name in info.param_names},
            "grid": info.grid,
            "index": torch.from_numpy(group["trajectory"][rows]),
        }


def check_finite(u: Tensor, path: str | Path, split: str, first: int = 0) -> None:
    """Refuse trajectories ``u`` ``[N, ...]``, rows ``first … first + N - 1`` of ``split`` in ``path``, that hold
    NaN or inf, naming the first such row."""
    finite = torch.isfinite(u.reshape(len(u), -1)).all(dim=1)
    if not bool(finite.all()):
        row = first + int((~finite).nonzero()[0])
        raise ConfigError(
            f"{str(path)!r} split {split!r} holds non-finite values (NaN or inf), first in trajectory {row}: "
            "regenerate the file (a cache file: delete it) or give another"
        )


def open_dataset(path: str | Path, split: str) -> xr.Dataset:
    """The split as a labelled, lazily loaded ``xarray.Dataset`` (dims ``trajectory, t, channel, x(, y)``)."""
    inspect_split(path, split)
    return xr.open_dataset(path, group=split, engine="h5netcdf")


def window_span(
    frames: int, time_history: int, target_frames: int, stride: int, where: str
) -> tuple[int, int]:
    """File frames a window of ``time_history + target_frames`` frames ``stride`` apart spans, and the windows
    of a ``frames``-frame trajectory; one that does not fit is refused, naming ``where``."""
    span = (time_history + target_frames - 1) * stride + 1
    if span > frames:
        raise ConfigError(
            f"{where} has {frames} frames per trajectory; a window of time_history + target_frames = "
            f"{time_history + target_frames} frames at stride {stride} needs {span}"
        )
    return span, frames - span + 1


class HDF5Windows(Dataset):
    """Training windows read lazily from a split: sample ``i`` is window ``i % W`` of trajectory ``i // W``
    (a window holding NaN or inf is refused, naming its trajectory).

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
        self.span, self.windows = window_span(
            self.info.grid.frames, time_history, target_frames, stride, repr(self.path)
        )
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
        check_finite(window[None], self.path, self.split, trajectory)
        return {
            "x": window[: self.time_history],
            "y": window[self.time_history :],
            "params": {k: v[trajectory] for k, v in self._params.items()},
            "dt": self._dt[trajectory],
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}
