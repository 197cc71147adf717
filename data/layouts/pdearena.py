"""LPSDA's Kuramoto-Sivashinsky layout, as PDEArena and PDE-Refiner read it.

LPSDA (Brandstetter et al., ICML 2022) ``generate/generate_data.py`` writes one file per split,
``KS_train_….h5``, ``KS_valid_….h5``, ``KS_test_….h5``, each with one group named after its split:

=================  ============  ==========================================================================
``pde_{nt}-{nx}``  ``[N, nt, nx]``  float64, the field
``x``              ``[N, nx]``      float64, ``i · dx``
``t``              ``[N, nt]``      float64, the frames' times
``dx``, ``dt``     ``[N]``          float64, each trajectory's grid spacing and frame interval
``v``              ``[N]``          float64, the viscosity where it varies (the conditional set)
=================  ============  ==========================================================================

PDEArena's ``pdearena/data/oned/datapipes/kuramotosivashinsky1d.py`` keeps the files whose path holds
``_train_`` / ``_valid_`` / ``_test_``, reads the first key starting with ``pde_`` and ``dt``, ``dx`` (and
``v``); LPSDA's ``common/utils.py`` ``HDF5Dataset`` wants the key ``pde_{nt}-{nx}`` exactly and takes the
spacings from ``x`` and ``t``. Each trajectory's ``dx · nx`` is its domain length and ``dt / pde.dt_out`` its
time scale (``conf/pde/ks_lpsda.yaml`` draws both). pdestream adds the root attribute ``config``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from data.layouts import SPLIT_NAMES, Loaded, hdf5_config, is_hdf5_with, open_hdf5, source_split, write_hdf5
from solvers.base import Solver
from solvers.errors import ConfigError, require

ONE_FILE = False
"""Each split is read from its own file (or folder)."""
PREFIX = "pde_"
EXTRA = ("x", "t", "dx", "dt", "v")
"""The datasets besides the field (``v``: the viscosity)."""


def _field_key(group: h5py.Group) -> str | None:
    return next((k for k in group if k.startswith(PREFIX)), None)


def detect(path: Path) -> bool:
    """An HDF5 file with a ``train``/``valid``/``test`` group holding a ``pde_…`` dataset."""
    return is_hdf5_with(path, lambda f: any(g in f and _field_key(f[g]) for g in SPLIT_NAMES.values()))


def target(path: Path, split: str) -> Path:
    """One file per split: ``path`` itself."""
    return path


def check_request(path: Path, solver: Solver, frames: int, split: str) -> None:
    name = f"_{SPLIT_NAMES[split]}_"
    require(
        solver.ndim == 1 and len(solver.channels) == 1,
        f"format=pdearena holds one 1D field; this pde is {solver.ndim}D with {len(solver.channels)} field(s)",
    )
    require(
        name in path.name,
        f"path={str(path)!r} is not allowed with format=pdearena split={split}: PDEArena reads the {split} "
        f"files by the {name} in their name (e.g. KS{name}fixed_viscosity.h5)",
    )


def stored_config(path: Path) -> str:
    return hdf5_config(path)


def default_rows(split: str, count: int) -> list[int | None]:
    """Every row of the split's group."""
    return [0, None]


def read(path: Path, split: str) -> Loaded:
    """The group of ``split`` (``valid`` for ``val``)."""
    name = SPLIT_NAMES[split]
    with open_hdf5(path) as file:
        if name not in file or _field_key(file[name]) is None:
            raise ConfigError(
                f"{str(path)!r} has no group {name!r} with a pde_… dataset; it has {sorted(file)}: give the "
                f"file of split {split!r}"
            )
        group = file[name]
        key = _field_key(group)
        u = group[key][()]
        if u.ndim != 3:
            raise ConfigError(f"{str(path)!r}: {name}/{key} has shape {list(u.shape)}, not [N, nt, nx]")
        spacing = {}
        for step, axis in (("dt", "t"), ("dx", "x")):  # LPSDA's reader takes them from t and x
            if step in group:
                spacing[step] = group[step][()]
            elif axis in group and group[axis].shape[-1] > 1:
                spacing[step] = group[axis][..., 1] - group[axis][..., 0]
            else:
                raise ConfigError(f"{str(path)!r} group {name!r} has neither {step!r} nor {axis!r}")
        dt, dx = spacing["dt"], spacing["dx"]
        params = {"nu": group["v"][()]} if "v" in group else {}
        params.update(
            {k: group[k][()] for k in group if k != key and k not in EXTRA and group[k].shape == (len(u),)}
        )
    return Loaded(u[:, :, None], f"{name}/{key}", params, dt, np.asarray(dx) * u.shape[-1])


def export(source: str | Path, split: str, target: str | Path, config_yaml: str = "") -> Path:
    """Write ``split`` of the pdestream file ``source`` as the LPSDA file ``target`` (atomically)."""
    data = source_split(source, split)
    u = data["u"][:, :, 0].astype(np.float64)
    count, nt, nx = u.shape
    dx, dt = data["lengths"] / nx, data["steps"]

    def fill(file: h5py.File) -> None:
        group = file.create_group(SPLIT_NAMES[split])
        group.create_dataset(f"{PREFIX}{nt}-{nx}", data=u, chunks=(1, nt, nx))
        group["x"] = dx[:, None] * np.arange(nx)
        group["t"] = dt[:, None] * np.arange(nt)
        group["dx"], group["dt"] = dx, dt
        for name, values in data["params"].items():
            if name == "nu":
                if not np.all(values == values[0]):  # the conditional set
                    group["v"] = values
            elif name not in ("length", "time_scale"):
                group[name] = values
        file.attrs["config"] = config_yaml or data["config"]

    return write_hdf5(Path(target), fill, source, count)
