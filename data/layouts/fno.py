"""The FNO papers' MATLAB layout: ``a`` (the inputs) and ``u`` (the solutions), one row per sample.

The Burgers benchmark of Li et al. (ICLR 2021, Section 5.1) ships as ``burgers_data_R10.mat``: ``a`` = the
initial conditions ``u(·, 0)`` and ``u`` = the solutions ``u(·, 1)``, each ``[2048, 8192]``; the reference
script ``fourier_1d.py`` subsamples every ``8192 / s``-th point, trains on the first 1000 rows and tests on
the last 100. A file with more output frames holds ``u`` as ``[N, *S, T]`` (time last, as the FNO
Navier-Stokes files do; read here as the trajectory ``a, u_1 … u_T``, whereas the reference's 2D time script
takes its inputs from ``u`` itself).

:func:`export` writes a pdestream split in this layout (MATLAB 5, readable by ``scipy.io.loadmat``, by
the reference code's ``MatReader`` and by MATLAB), with the composed config and each sample's PDE
parameters as extra variables; :func:`read_fno` reads it back, and reads MATLAB 7.3 files (HDF5, axes
reversed) through h5py; :func:`read` gives the rows to ``data=offline`` (split as :func:`default_rows`).
The published Navier-Stokes sets split the same way with other counts: ``ns_V1e-3_N5000_T50.mat``
(``fourier_2d_time.py``) trains on the first 1000 and tests on the last 200 (``data.rows.test=[-200,null]``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np
import scipy.io

from data.hdf5 import read_trajectories
from data.layouts import Loaded, write_file
from solvers.base import TIME_SCALE, Solver
from solvers.errors import ConfigError, require

ONE_FILE = True
"""One file holds every split's rows: read once for all of them."""
FNO_KEYS = ("a", "u")
"""The variables every file of the layout holds."""
RESERVED = (*FNO_KEYS, "t", "config")
"""The variables that are not PDE parameters."""


def detect(path: Path) -> bool:
    """Whether ``path`` names a file of this layout: a MATLAB ``.mat`` file (pdestream's own are ``.h5``)."""
    return path.is_file() and path.suffix.lower() == ".mat"


def target(path: Path, split: str) -> Path:
    """The file ``python -m data.generate format=fno path=…`` writes: ``path`` itself (one split per file)."""
    return path


def check_request(path: Path, solver: Solver, frames: int, split: str) -> None:
    """Refuse, before solving, what this layout cannot hold."""
    require(
        path.suffix.lower() == ".mat", f"path={str(path)!r} is not allowed with format=fno: give a .mat file"
    )
    require(
        frames >= 2 and len(solver.channels) == 1,
        f"format=fno holds one field (this pde has {len(solver.channels)}) and frames >= 2 (got {frames}): "
        "an input a and at least one solution u",
    )
    varying = [k for k in (TIME_SCALE, "length") if k in solver.params]
    require(
        not varying,
        f"format=fno has one time axis t for all rows; this pde draws {', '.join(varying)} per trajectory",
    )


def stored_config(path: Path) -> str:
    """The YAML the file was generated with ("" for a file pdestream did not write), read alone."""
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as file:
            return _matlab_value(file["config"]) if "config" in file else ""
    found = scipy.io.loadmat(path, variable_names=["config"])
    return str(np.asarray(found.get("config", [""])).ravel()[0])


def default_rows(split: str, count: int) -> list[int | None]:
    """``fourier_1d.py``'s split: the first 1000 rows train, the last 100 test; the 100 after the training
    rows validate (unused by the reference)."""
    return {"train": [0, 1000], "val": [1000, 1100], "test": [-100, None]}[split]


def export(source: str | Path, split: str, target: str | Path, config_yaml: str = "") -> Path:
    """Write ``split`` of the pdestream file ``source`` (one channel) to ``target`` in the FNO layout.

    ``a`` ``[N, *S]`` is frame 0, ``u`` the later frames (``[N, *S]`` for one, ``[N, *S, T]`` for more), float32;
    ``t`` holds their times, ``config`` the YAML it was made with, and every PDE parameter is a vector ``[N]``.
    Written to a temporary file beside ``target``, flushed to the disk and renamed, so ``target`` exists only
    once it is complete; a failed write (a full disk) raises :class:`ConfigError` and leaves ``source`` as it is.
    """
    data = read_trajectories(source, split)
    u = data["u"]
    if u.shape[2] != 1:
        raise ConfigError(f"format=fno holds one field per file; {source} has {u.shape[2]} channels")
    fields = u[:, :, 0].numpy().astype(np.float32)
    later = np.moveaxis(fields[:, 1:], 1, -1)
    variables = {
        "a": fields[:, 0],
        "u": later[..., 0] if later.shape[-1] == 1 else later,
        "t": data["grid"].times()[1:].numpy(),
        "config": config_yaml,
        **{name: values.numpy() for name, values in data["params"].items()},
    }
    large = any(np.asarray(v).nbytes >= V5_LIMIT for v in variables.values())
    write = partial(_write_v73, variables=variables) if large else partial(_write_v5, variables=variables)
    return write_file(Path(target), write, source, len(fields))


V5_LIMIT = 2**31
"""Bytes of one variable from which MATLAB 5 files cannot hold it: larger sets are written as MATLAB 7.3 (HDF5),
as the published ``ns_V1e-3_N5000_T50.mat`` is."""
V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: pdestream HDF5 schema 1.00 ."
"""The text of a MATLAB 7.3 file's 512-byte user block (its first 116 bytes; then version 0x0200 and "IM")."""


def _write_v5(handle: BinaryIO, variables: dict[str, Any]) -> None:
    scipy.io.savemat(handle, variables, do_compression=False)


def _write_v73(handle: BinaryIO, variables: dict[str, Any]) -> None:
    """MATLAB 7.3: HDF5 after a 512-byte header, every array at least 2-D (a vector is N × 1) and stored with its
    axes reversed (MATLAB's column order), ``MATLAB_class`` naming its type; text as a row of ``uint16``."""
    with h5py.File(handle, "w", userblock_size=512) as file:
        for name, value in variables.items():
            if isinstance(value, str):
                array, kind = np.frombuffer(value.encode("utf-16-le"), dtype=np.uint16)[None, :], "char"
            else:
                array = np.asarray(value)
                array = array if array.dtype == np.float32 else array.astype(np.float64)
                array, kind = (array[:, None] if array.ndim == 1 else array), str(array.dtype)
                kind = {"float32": "single", "float64": "double"}[kind]
            stored = file.create_dataset(name, data=np.ascontiguousarray(array.T))
            stored.attrs["MATLAB_class"] = np.bytes_(kind)
            if kind == "char":
                stored.attrs["MATLAB_int_decode"] = np.int32(2)
    handle.seek(0)
    handle.write(V73_HEADER.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    handle.seek(0, 2)


def _matlab_value(stored: h5py.Dataset) -> np.ndarray | str:
    """A MATLAB 7.3 variable: its array with the axes reversed back, or its text."""
    if stored.attrs.get("MATLAB_class", b"") in (b"char", "char"):
        return np.transpose(stored[()]).astype(np.uint16).tobytes().decode("utf-16-le")
    return np.transpose(stored[()])


def read_fno(path: str | Path) -> dict[str, np.ndarray]:
    """The variables of an FNO-layout file: MATLAB 5 (``scipy.io.loadmat``) or 7.3 (HDF5, axes reversed back).

    Raises :class:`ConfigError` for a missing or unreadable file, or one without ``a`` and ``u``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"data file {str(path)!r} does not exist; write it with python -m data.generate format=fno "
            "(see docs/data.md) or give the published file's path"
        )
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as file:
                found = {k: _matlab_value(file[k]) for k in file if isinstance(file[k], h5py.Dataset)}
        else:
            found = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise ConfigError(
            f"{str(path)!r} is not a readable MATLAB file (corrupt or truncated?): {error}"
        ) from None
    missing = [k for k in FNO_KEYS if k not in found]
    if missing:
        raise ConfigError(
            f"{str(path)!r} is not an FNO-layout file: it lacks {missing}; it has "
            f"{sorted(k for k in found if not k.startswith('__'))}"
        )
    return {k: v for k, v in found.items() if not k.startswith("__")}


def read(path: Path, split: str) -> Loaded:
    """Every row as a trajectory ``a, u_1 … u_T`` ``[N, 1 + T, 1, *S]`` (the rows of all splits: one file)."""
    found = read_fno(path)
    a, u = found["a"], found["u"]
    if u.shape[: a.ndim] != a.shape or u.ndim not in (a.ndim, a.ndim + 1):
        raise ConfigError(
            f"{str(path)!r}: a {list(a.shape)} and u {list(u.shape)} are not [N, *S] and [N, *S(, T)]"
        )
    later = u if u.ndim == a.ndim + 1 else u[..., None]
    frames = np.moveaxis(np.concatenate([a[..., None], later], axis=-1), -1, 1)[:, :, None]  # [N, 1+T, 1, *S]
    dt = None
    if "t" in found:  # a file that records its output times: t_k = k · dt
        times = np.asarray(found["t"], dtype=np.float64).reshape(-1)
        dt = float(times[0])
        if times.shape != (later.shape[-1],) or not np.allclose(times, dt * np.arange(1, len(times) + 1)):
            raise ConfigError(
                f"{str(path)!r}: 't' = {times.tolist()} are not the {later.shape[-1]} equally spaced times of 'u'"
            )
    params = {
        k: np.asarray(v, dtype=np.float64).reshape(-1)
        for k, v in found.items()
        if k not in RESERVED
        and isinstance(v, np.ndarray)
        and np.issubdtype(v.dtype, np.number)
        and v.size == len(a)
    }
    return Loaded(frames, "u", params, dt)
