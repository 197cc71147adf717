"""PDEBench's one-file HDF5 layout (Takamoto et al., NeurIPS 2022 Datasets and Benchmarks).

As PDEBench's ``data_gen_NLE/Data_Merge.py`` writes its 1D sets (``1D_Burgers_Sols_Nu0.1.hdf5``) and
``pdebench/models/fno/utils.py`` ``FNODatasetSingle`` reads them:

=================  =================  =======================================================================
``tensor``         ``[N, T, X(, Y)]``  float32, the field at ``t = k · dt``, ``k = 0 … T-1``
``x-coordinate``   ``[X]``             float32, cell centres ``(i + ½) · dx``
``y-coordinate``   ``[Y]``             2D only
``t-coordinate``   ``[T + 1]``         float32, ``k · dt`` for ``k = 0 … T`` (one more than the frames)
attribute ``Nu``   scalar              the viscosity (Burgers' ν; PDEBench also puts it in the file name)
=================  =================  =======================================================================

Rows: ``FNODatasetSingle`` tests on the first ``int(0.1 · N)`` rows and trains on the rest; PDEBench has no
validation split (its training script validates on the test rows), so ``val`` takes the test rows too.
Also read: the incompressible Navier-Stokes files (``ns_incom_inhom_2d_512-*.h5``: ``velocity``
``[N, T, X, Y, 2]`` and ``t`` ``[N, T]``) as two channels ``vx, vy``; not read: the per-sample group files
(``2D_diff-react_NA_NA.h5``). pdestream adds ``config`` (YAML) and a vector ``[N]`` per PDE parameter.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from data.layouts import Loaded, hdf5_config, is_hdf5_with, open_hdf5, source_split, write_hdf5
from solvers.base import TIME_SCALE, Solver
from solvers.errors import ConfigError, require

ONE_FILE = True
"""One file holds every split's rows: read once for all of them."""
TEST_RATIO = 0.1
"""``FNODatasetSingle``'s ``test_ratio``: the first ``int(0.1 · N)`` rows test."""
ATTRIBUTES = {"Nu": "nu"}
"""PDEBench's root attributes → pdestream's parameter names."""
COORDINATES = ("x-coordinate", "y-coordinate")
RESERVED = ("tensor", "velocity", "particles", "force", "t", "t-coordinate", *COORDINATES)
"""The datasets that are not per-row PDE parameters."""


def detect(path: Path) -> bool:
    """An HDF5 file with a root ``tensor`` (or the Navier-Stokes files' ``velocity`` and ``particles``)."""
    return is_hdf5_with(path, lambda f: "tensor" in f or {"velocity", "particles"} <= set(f))


def target(path: Path, split: str) -> Path:
    """One file holds every row: ``path`` itself."""
    return path


def check_request(path: Path, solver: Solver, frames: int, split: str) -> None:
    require(
        path.suffix == ".hdf5",
        f"path={str(path)!r} is not allowed with format=pdebench: give a .hdf5 file (FNODatasetSingle reads "
        "names ending in h5 as per-sample files)",
    )
    require(
        len(solver.channels) == 1,
        f"format=pdebench holds one field in 'tensor'; this pde has {len(solver.channels)}",
    )
    varying = [k for k in (TIME_SCALE, "length") if k in solver.params]
    require(
        not varying,
        f"format=pdebench has one x- and t-coordinate for all rows; this pde draws {', '.join(varying)} per trajectory",
    )


def stored_config(path: Path) -> str:
    return hdf5_config(path)


def default_rows(split: str, count: int) -> list[int | None]:
    test = int(count * TEST_RATIO)
    return [test, None] if split == "train" else [0, test]


def read(path: Path, split: str) -> Loaded:
    """Every row (one file holds all splits): ``tensor`` as one channel, or ``velocity`` as ``vx, vy``."""
    with open_hdf5(path) as file:
        if "tensor" in file:
            raw = file["tensor"]
            if raw.ndim not in (3, 4):
                raise ConfigError(f"{str(path)!r}: 'tensor' has shape {list(raw.shape)}, not [N, T, X(, Y)]")
            u, key, channels = raw[()][:, :, None], "tensor", None
            times = np.asarray(file["t-coordinate"][()], dtype=np.float64) if "t-coordinate" in file else None
        else:
            u, key, channels = np.moveaxis(file["velocity"][()], -1, 2), "velocity", ("vx", "vy")
            times = np.asarray(file["t"][()], dtype=np.float64) if "t" in file else None
        count = u.shape[0]
        params = {ATTRIBUTES[k]: np.full(count, float(v)) for k, v in file.attrs.items() if k in ATTRIBUTES}
        params.update(
            {
                k: file[k][()]
                for k in file
                if isinstance(file[k], h5py.Dataset) and file[k].shape == (count,) and k not in RESERVED
            }
        )
        length = None
        if "x-coordinate" in file and len(file["x-coordinate"]) > 1:
            x = np.asarray(file["x-coordinate"][()], dtype=np.float64)
            length = float(x[1] - x[0]) * len(x)
    dt = None
    if times is not None and times.shape[-1] > 1:
        dt = times[..., 1] - times[..., 0]
        dt = float(dt) if np.ndim(dt) == 0 else dt
    return Loaded(u, key, params, dt, length, channels)


def export(source: str | Path, split: str, target: str | Path, config_yaml: str = "") -> Path:
    """Write ``split`` of the pdestream file ``source`` as one PDEBench file ``target`` (atomically)."""
    data = source_split(source, split)
    u, n, dt = data["u"][:, :, 0], data["n"], float(data["steps"][0])
    dx = float(data["lengths"][0]) / n
    centres = ((np.arange(n) + 0.5) * dx).astype(np.float32)

    def fill(file: h5py.File) -> None:
        file.create_dataset("tensor", data=u, chunks=(1, *u.shape[1:]))
        for axis in COORDINATES[: data["ndim"]]:
            file[axis] = centres
        file["t-coordinate"] = (np.arange(u.shape[1] + 1) * dt).astype(np.float32)
        for name, values in data["params"].items():
            file[name] = values
            if name in ATTRIBUTES.values() and np.all(values == values[0]):
                file.attrs[next(k for k, v in ATTRIBUTES.items() if v == name)] = float(values[0])
        file.attrs["config"] = config_yaml or data["config"]

    return write_hdf5(Path(target), fill, source, len(u))
