"""The field's data layouts, read and written: pdestream's own HDF5 and four others.

=============  ===========================================================================================
``pdestream``  :mod:`data.hdf5`: one group per split, read lazily (the only layout not held in memory)
``fno``        :mod:`data.layouts.fno`: the FNO papers' MATLAB files (``a``, ``u``), v5 or v7.3
``pdebench``   :mod:`data.layouts.pdebench`: PDEBench's one-file HDF5 (``tensor``, ``x-coordinate`` …)
``pdearena``   :mod:`data.layouts.pdearena`: LPSDA / PDEArena's KS files (``train/pde_{nt}-{nx}`` …)
``the_well``   :mod:`data.layouts.the_well`: The Well's directories (``data/{train,valid,test}/*.hdf5``)
=============  ===========================================================================================

Each foreign layout module has ``detect(path)``, ``read(path, split)`` (a :class:`Loaded`: every row the
path holds for the split, as stored), ``default_rows(split, count)`` (the published split convention, as
``[start, stop]``) and ``export(source, split, target, config_yaml)`` (a pdestream split written in the
layout, atomically). :func:`fit` checks a :class:`Loaded` against the PDE config and returns the training
machinery's trajectories: every mismatch (grid, channels, time step, dtype, NaN) is one :class:`ConfigError`
naming the file's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from data.cli import write_atomically
from data.hdf5 import check_finite, inspect_split, open_hdf5, read_trajectories, window_span, write_failure
from data.timegrid import TimeGrid, output_interval
from solvers.base import TIME_SCALE, Solver, whole_multiple
from solvers.errors import ConfigError

LAYOUTS = ("pdestream", "fno", "pdebench", "pdearena", "the_well")
"""``data.format`` / ``format`` of ``python -m data.generate`` (``auto``: detected from the file)."""
SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}
"""pdestream's split names → the ``valid`` the other projects use."""


@dataclass
class Loaded:
    """What a foreign file holds for one split, as stored.

    ``u`` ``[N, T, C, *S]`` (any dtype: :func:`fit` refuses non-float ones), ``key`` the file's name for it;
    ``params`` ``{pdestream name: [N]}``; ``dt`` the interval between frames (one number, per-trajectory
    ``[N]``, or None where the file does not record it); ``length`` the domain length the file's coordinates
    imply (None: not recorded); ``channels`` the field names (None: not recorded).
    """

    u: np.ndarray
    key: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    dt: float | np.ndarray | None = None
    length: float | np.ndarray | None = None
    channels: tuple[str, ...] | None = None


def split_path(paths: str | Mapping[str, str], split: str) -> str:
    """The file of ``split`` in a data config's ``paths`` (one path for every split, or one per split)."""
    return str(paths) if isinstance(paths, str | Path) else str(paths.get(split, "(none)"))


def hdf5_config(path: Path) -> str:
    """The YAML a pdestream export stored in an HDF5 file's root attribute ``config`` ("" if none)."""
    with open_hdf5(path) as file:
        return str(file.attrs.get("config", ""))


def layout_module(name: str) -> Any:
    """The module of a foreign layout."""
    from data.layouts import fno, pdearena, pdebench, the_well

    return {"fno": fno, "pdebench": pdebench, "pdearena": pdearena, "the_well": the_well}[name]


def detect(path: str | Path) -> str:
    """The layout of ``path`` (a file, or The Well's dataset directory); :class:`ConfigError` if none fits."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"data file {str(path)!r} does not exist; write it with python -m data.generate (see docs/data.md)"
        )
    for name in LAYOUTS[1:]:
        if layout_module(name).detect(path):
            return name
    if path.is_file() and h5py.is_hdf5(path):
        return "pdestream"
    raise ConfigError(
        f"{str(path)!r} is in none of the layouts {', '.join(LAYOUTS)}: give a file python -m data.generate "
        "wrote, or one of those projects' files"
    )


def row_slice(rows: Sequence[int | None] | None, split: str, count: int, layout: str) -> slice:
    """The rows ``[start, stop]`` (Python slice bounds, ``None`` open) of ``split``, or the layout's own split;
    bounds outside the file's ``count`` rows, or an empty selection, are refused."""
    given = rows is not None
    if not given:
        rows = layout_module(layout).default_rows(split, count)
    if not (
        isinstance(rows, Sequence)
        and len(rows) == 2
        and all(r is None or (isinstance(r, int) and not isinstance(r, bool)) for r in rows)
    ):
        raise ConfigError(
            f"data.rows.{split}={rows!r} is not allowed: give [start, stop], Python slice bounds (null: open)"
        )
    part = slice(*rows)
    if any(r is not None and abs(r) > count for r in rows) or len(range(count)[part]) == 0:
        whose = "" if given else f" (the {layout} layout's own split)"
        raise ConfigError(
            f"data.rows.{split}={list(rows)}{whose} does not fit the {count} rows the file holds; give "
            f"data.rows.{split}=[start, stop] within 0..{count}"
        )
    return part


def fit(loaded: Loaded, solver: Solver, path: str, layout: str, split: str, part: slice) -> dict[str, Any]:
    """The rows ``part`` of ``loaded`` (read from ``path`` in ``layout``) as trajectories of ``solver``'s
    config: ``u`` ``[N, T, C, *S]`` (float32, every ``file_n / n``-th point, every ``dt_out / dt_file``-th
    frame), ``params``, ``grid`` and ``index`` (each row's number in the file)."""
    u, key, where = loaded.u, loaded.key, f"{path!r} ({layout} layout, split {split!r})"
    if not np.issubdtype(u.dtype, np.floating):
        raise ConfigError(
            f"{where}: {key!r} holds {u.dtype} values; allowed: floating point (float16, float32, float64)"
        )
    ndim, channels = solver.ndim, len(solver.channels)
    if len(u.shape) != 3 + ndim:
        raise ConfigError(
            f"{where}: {key!r} has shape {list(u.shape)} and the pde config is {ndim}D: allowed "
            f"[trajectory, time, channel] and {ndim} space axes"
        )
    if u.shape[2] != channels or (loaded.channels and tuple(loaded.channels) != tuple(solver.channels)):
        names = f" ({', '.join(loaded.channels)})" if loaded.channels else ""
        raise ConfigError(
            f"{where}: {key!r} holds {u.shape[2]} field(s){names}; the pde config has {channels} "
            f"({', '.join(solver.channels)}): give pde.channels in the file's order"
        )
    n_file, n = u.shape[3], solver.n
    if any(size != n_file for size in u.shape[3:]):
        raise ConfigError(
            f"{where}: {key!r} holds a {' × '.join(map(str, u.shape[3:]))} grid; pdestream reads square grids only"
        )
    if n_file % n:
        allowed = [str(n_file // d) for d in range(1, max(n_file // 8, 1) + 1) if n_file % d == 0]
        raise ConfigError(
            f"{where}: {key!r} holds {list(u.shape[3:])} points; pde.n={n} must divide {n_file} (allowed: "
            f"{', '.join(allowed)})"
        )
    dt_out, stride = output_interval(solver), 1
    steps = None if loaded.dt is None else np.asarray(loaded.dt, dtype=np.float64).reshape(-1)
    if steps is not None and not (np.isfinite(steps).all() and (steps > 0).all()):
        raise ConfigError(
            f"{where}: its frame times are not increasing (time steps {steps.min():g} … {steps.max():g})"
        )
    if steps is not None:
        nominal = float(steps[0])
        if TIME_SCALE not in solver.params and not np.allclose(steps, nominal, rtol=1e-6):
            raise ConfigError(
                f"{where}: its trajectories have different time steps ({steps.min():g} … {steps.max():g}) but "
                "the pde config has no time_scale range to hold them"
            )
        stride = whole_multiple(dt_out, nominal) if TIME_SCALE not in solver.params else 1
        if stride < 1:
            raise ConfigError(
                f"{where}: frames are {nominal:g} apart; pde.dt_out={dt_out:g} must be a multiple of it "
                f"(allowed: {nominal:g}, {2 * nominal:g}, …)"
            )
    rows = range(u.shape[0])[part]
    sub = (slice(None), slice(None, None, stride), slice(None), *([slice(None, None, n_file // n)] * ndim))
    data = u[part]
    trajectories = torch.from_numpy(np.ascontiguousarray(data[sub])).float()
    check_finite(trajectories, path, split, rows.start)
    frames = trajectories.shape[1]
    if frames < 2:
        raise ConfigError(f"{where}: {key!r} holds {frames} frame(s) per trajectory at pde.dt_out={dt_out:g}")
    params = _params(loaded, solver, where, u.shape[0], steps, dt_out)
    _check_length(loaded, solver, where)
    return {
        "u": trajectories,
        "params": {k: v[part] for k, v in params.items()},
        "grid": TimeGrid(solver.dt, dt_out, frames),
        "index": torch.arange(u.shape[0])[part],
    }


def _params(
    loaded: Loaded, solver: Solver, where: str, count: int, steps: np.ndarray | None, dt_out: float
) -> dict[str, Tensor]:
    """Each row's PDE parameters: the file's where it has them (a time scale from per-trajectory steps),
    else the config's fixed values; a ranged parameter the file lacks is refused."""
    found = dict(loaded.params)
    if TIME_SCALE in solver.params and steps is not None:
        found[TIME_SCALE] = np.broadcast_to(steps / dt_out, (count,))
    if "length" in solver.params and loaded.length is not None:
        found["length"] = np.broadcast_to(np.asarray(loaded.length, dtype=np.float64), (count,))
    params = {}
    for name, spec in solver.params.items():
        if name in found:
            values = np.array(found[name], dtype=np.float64).reshape(count)
            slack = 1e-6 * max(abs(spec.low), abs(spec.high))
            if not spec.fixed and not ((values >= spec.low - slack) & (values <= spec.high + slack)).all():
                raise ConfigError(
                    f"{where} holds {name} = {values.min():g} … {values.max():g}, outside pde.{name}="
                    f"[{spec.low:g}, {spec.high:g}]: give the range the file was made with"
                )
            params[name] = torch.from_numpy(values)
        elif spec.fixed:
            params[name] = torch.full((count,), spec.low, dtype=torch.float64)
        else:
            raise ConfigError(
                f"{where} records no {name!r} and pde.{name} is a range: give the value the file was made with"
            )
    return params


def _check_length(loaded: Loaded, solver: Solver, where: str) -> None:
    """Refuse a file whose coordinates span another domain than the config's fixed ``length``."""
    if loaded.length is None or "length" in solver.params:
        return
    lengths = np.asarray(loaded.length, dtype=np.float64).reshape(-1)
    if not np.allclose(lengths, solver.length, rtol=1e-4):
        raise ConfigError(
            f"{where}: its coordinates span a domain of length {lengths[0]:g}; the pde config has "
            f"pde.length={solver.length:g}"
        )


def source_split(source: str | Path, split: str) -> dict[str, Any]:
    """A pdestream split to export, as numpy: ``u`` ``[N, T, C, *S]`` float32, ``params``, the nominal ``times``
    ``[T]``, each trajectory's frame interval ``steps`` ``[N]`` and domain ``lengths`` ``[N]``, ``channels``,
    ``ndim``, ``n`` and ``config`` (the YAML it was generated with)."""
    info = inspect_split(source, split)
    data = read_trajectories(source, split)
    count = len(data["u"])
    params = {k: v.numpy() for k, v in data["params"].items()}
    length = params.get("length", info.solver["length"])
    with h5py.File(source, "r") as file:
        config = str(file[split].attrs.get("config", ""))
    return {
        "u": data["u"].numpy().astype(np.float32),
        "params": params,
        "times": data["grid"].times().numpy(),
        "steps": data["grid"].spacing(data["params"], count).numpy(),
        "lengths": np.broadcast_to(np.asarray(length, dtype=np.float64), (count,)).copy(),
        "channels": info.channels,
        "ndim": len(info.spatial),
        "n": info.spatial[0],
        "config": config,
    }


def write_file(target: Path, write: Any, source: str | Path, count: int) -> Path:
    """``write(handle)`` fills ``target`` atomically (:func:`~data.cli.write_atomically`, parent folders made);
    a failed write raises the :class:`ConfigError` of :func:`~data.hdf5.write_failure` and leaves ``source``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, write)
    except OSError as error:
        raise write_failure(target, error, f"the {count} trajectories stay in {str(source)!r}") from None
    return target


def write_hdf5(target: Path, fill: Any, source: str | Path, count: int) -> Path:
    """An HDF5 file ``fill(h5py.File)`` writes, made atomically as :func:`write_file` does."""

    def write(handle: Any) -> None:
        with h5py.File(handle, "w") as file:
            fill(file)

    return write_file(target, write, source, count)


def is_hdf5_with(path: Path, test: Any) -> bool:
    """Whether ``path`` is a readable HDF5 file for which ``test(file)`` holds (layout detection)."""
    if not (path.is_file() and h5py.is_hdf5(path)):
        return False
    try:
        with h5py.File(path, "r") as file:
            return bool(test(file))
    except OSError:
        return False


class MemoryWindows(Dataset):
    """Training windows of trajectories held in memory: sample ``i`` is window ``i % W`` of trajectory
    ``i // W``, ``time_history + target_frames`` consecutive frames (items as :class:`~data.hdf5.HDF5Windows`)."""

    def __init__(
        self,
        u: Tensor,
        params: Mapping[str, Tensor],
        dt: Tensor,
        time_history: int,
        target_frames: int,
        where: str,
    ) -> None:
        self.span, self.windows = window_span(u.shape[1], time_history, target_frames, 1, where)
        self.u, self.time_history = u, time_history
        self.params, self.dt = {k: v.float() for k, v in params.items()}, dt.float()

    def __len__(self) -> int:
        return len(self.u) * self.windows

    def __getitem__(self, i: int) -> dict[str, Any]:
        trajectory, start = divmod(i, self.windows)
        window = self.u[trajectory, start : start + self.span]
        return {
            "x": window[: self.time_history],
            "y": window[self.time_history :],
            "params": {k: v[trajectory] for k, v in self.params.items()},
            "dt": self.dt[trajectory],
        }
