"""The Well's layout (Ohana et al., NeurIPS 2024 Datasets and Benchmarks; ``the_well`` 1.2, docs/data_format.md).

A data set is a directory ``<name>/data/{train,valid,test}/*.hdf5`` (the loader ``the_well.data.WellDataset``
takes ``path=<name>``, ``well_split_name=…``) with ``<name>/stats.yaml`` (per-field ``mean``, ``std``,
``mean_delta``, ``std_delta``, ``rms``, ``rms_delta`` of the training split, for its normalisation). Each file:

- root attributes ``dataset_name``, ``grid_type`` (``cartesian``), ``n_spatial_dims``, ``n_trajectories``,
  ``simulation_parameters`` (names, each also a root attribute);
- ``dimensions/``: attribute ``spatial_dims``; ``time`` ``[T]`` (``[N, T]`` with ``sample_varying``), one
  coordinate per spatial dimension ``[X]`` (``[N, X]`` with ``sample_varying``);
- ``boundary_conditions/<dim>_periodic``: ``bc_type`` ``PERIODIC``, ``associated_dims``, ``mask`` ``[X]`` true
  at both ends (an all-false mask reads as open);
- ``scalars/``: attribute ``field_names``; one dataset per PDE parameter, ``()`` or ``[N]`` (``sample_varying``);
- ``t0_fields/``, ``t1_fields/``, ``t2_fields/`` (all three present): attribute ``field_names``; a t0 field is
  ``[N, T, *S]``, a t1 field ``[N, T, *S, D]`` (read as D channels ``<name>_x``, ``<name>_y``), each with
  ``dim_varying``, ``sample_varying``, ``time_varying``.

Fields constant in time or over samples, and t2 fields, are not read (refused, naming them). pdestream adds
the root attribute ``config``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import yaml

from data.layouts import (
    SPLIT_NAMES,
    Loaded,
    hdf5_config,
    is_hdf5_with,
    open_hdf5,
    source_split,
    write_file,
    write_hdf5,
)
from solvers.base import Solver
from solvers.errors import ConfigError, require

ONE_FILE = False
"""Each split is read from its own file (or folder)."""
SUFFIXES = (".hdf5", ".h5")
DIMS = ("x", "y")


def _is_well_file(path: Path) -> bool:
    return is_hdf5_with(path, lambda f: "dataset_name" in f.attrs and "t0_fields" in f)


def _files(path: Path, split: str, check: bool = True) -> list[Path]:
    """The split's files: ``path`` is a data set directory, a split directory or one file; a split directory or
    a file in one that belongs to another split is refused (``check``)."""
    if (path / "data").is_dir():
        return sorted(p for p in (path / "data" / SPLIT_NAMES[split]).glob("*") if p.suffix in SUFFIXES)
    folder = path.parent if path.is_file() else path
    if check and folder.name in SPLIT_NAMES.values() and folder.name != SPLIT_NAMES[split]:
        raise ConfigError(
            f"{str(path)!r} holds The Well's {folder.name!r} split, not the {split!r} split: give "
            f"data.paths.{split} that split's folder, or the data set's folder (the one holding data/)"
        )
    return [path] if path.is_file() else sorted(p for p in folder.glob("*") if p.suffix in SUFFIXES)


def detect(path: Path) -> bool:
    """A Well data set directory (``data/<split>/*.hdf5``), split directory or file."""
    if path.is_dir():
        found = [p for split in SPLIT_NAMES for p in _files(path, split, check=False)]
        return bool(found) and _is_well_file(found[0])
    return _is_well_file(path)


def target(path: Path, split: str) -> Path:
    """``path`` names the data set directory: ``<path>/data/<split>/<name>_<split>.hdf5``."""
    name = SPLIT_NAMES[split]
    return path / "data" / name / f"{path.name}_{name}.hdf5"


def check_request(path: Path, solver: Solver, frames: int, split: str) -> None:
    require(
        path.suffix == "",
        f"path={str(path)!r} is not allowed with format=the_well: give the data set's directory (no suffix)",
    )


def stored_config(path: Path) -> str:
    return hdf5_config(path)


def default_rows(split: str, count: int) -> list[int | None]:
    """Every trajectory of the split's files."""
    return [0, None]


def _read_file(path: Path) -> Loaded:
    try:
        return _read_fields(path)
    except KeyError as error:
        raise ConfigError(
            f"{str(path)!r} lacks The Well's {error.args[0]!r} (see its docs/data_format.md): a corrupt or "
            "incomplete file"
        ) from None


def _read_fields(path: Path) -> Loaded:
    with open_hdf5(path) as file:
        dims = [
            d.decode() if isinstance(d, bytes) else str(d) for d in file["dimensions"].attrs["spatial_dims"]
        ]
        channels, fields = [], []
        for order in ("t0_fields", "t1_fields", "t2_fields"):
            group = file[order]
            for name in group.attrs.get("field_names", []):
                name = name.decode() if isinstance(name, bytes) else str(name)
                field = group[name]
                flags = [bool(field.attrs[k]) for k in ("sample_varying", "time_varying")]
                if order == "t2_fields" or not all(flags) or not all(field.attrs["dim_varying"]):
                    raise ConfigError(
                        f"{str(path)!r}: field {order}/{name} is not a scalar or vector field varying in "
                        "space, time and sample, which are all pdestream reads"
                    )
                values = field[()]
                if order == "t0_fields":
                    fields.append(values[:, :, None])
                    channels.append(name)
                else:
                    fields.append(np.moveaxis(values, -1, 2))
                    channels += [f"{name}_{d}" for d in dims]
        if not fields:
            raise ConfigError(f"{str(path)!r} holds no field in t0_fields or t1_fields")
        count = len(fields[0])
        time = np.asarray(file["dimensions/time"][()], dtype=np.float64)
        dt = time[..., 1] - time[..., 0] if time.shape[-1] > 1 else None
        x = np.asarray(file[f"dimensions/{dims[0]}"][()], dtype=np.float64)
        length = (x[..., 1] - x[..., 0]) * x.shape[-1]
        scalars = file["scalars"]
        params = {}
        for name in scalars.attrs.get("field_names", []):
            name = name.decode() if isinstance(name, bytes) else str(name)
            params[name] = np.broadcast_to(np.asarray(scalars[name][()], dtype=np.float64), (count,))
    return Loaded(np.concatenate(fields, axis=2), "t0_fields", params, dt, length, tuple(channels))


def read(path: Path, split: str) -> Loaded:
    """The split's trajectories, its files (sorted by name, as WellDataset) one after another."""
    files = _files(path, split)
    if not files:
        raise ConfigError(
            f"{str(path)!r} has no {' or '.join(SUFFIXES)} files for split {split!r} "
            f"(expected under data/{SPLIT_NAMES[split]}/)"
        )
    parts = [_read_file(p) for p in files]
    first = parts[0]
    if any(p.channels != first.channels or p.u.shape[1:] != first.u.shape[1:] for p in parts):
        raise ConfigError(f"{str(path)!r}: the files of split {split!r} hold different fields or shapes")

    def joined(values: list) -> np.ndarray | float | None:
        if any(v is None for v in values):
            return None
        return np.concatenate([np.broadcast_to(v, (len(p.u),)) for v, p in zip(values, parts, strict=True)])

    params = {
        k: np.concatenate([p.params[k] for p in parts])
        for k in first.params
        if all(k in p.params for p in parts)
    }
    return Loaded(
        np.concatenate([p.u for p in parts]),
        first.key,
        params,
        joined([p.dt for p in parts]),
        joined([p.length for p in parts]),
        first.channels,
    )


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=h5py.string_dtype())


def export(source: str | Path, split: str, target: str | Path, config_yaml: str = "") -> Path:
    """Write ``split`` of the pdestream file ``source`` as one Well file ``target`` (atomically); the training
    split also writes the data set's ``stats.yaml``."""
    data = source_split(source, split)
    target = Path(target)
    u, count, ndim, n = data["u"], len(data["u"]), data["ndim"], data["n"]
    dims = list(DIMS[:ndim])
    name = target.parents[2].name
    steps, lengths = data["steps"], data["lengths"]
    scalars = {k: v for k, v in data["params"].items() if k not in ("time_scale", "length")}

    def vary(values: np.ndarray) -> bool:
        return not np.all(values == values[0])

    def fill(file: h5py.File) -> None:
        file.attrs.update(
            dataset_name=name, grid_type="cartesian", n_spatial_dims=ndim, n_trajectories=count,
            simulation_parameters=_strings(list(scalars)), config=config_yaml or data["config"],
        )  # fmt: skip
        for key, values in scalars.items():
            file.attrs[key] = values.astype(np.float32) if vary(values) else float(values[0])
        group = file.create_group("dimensions")
        group.attrs["spatial_dims"] = _strings(dims)
        time = steps[:, None] * np.arange(u.shape[1])
        stored = group.create_dataset("time", data=(time if vary(steps) else time[0]).astype(np.float32))
        stored.attrs.update(sample_varying=vary(steps), time_varying=True)
        coords = lengths[:, None] / n * np.arange(n)
        bcs = file.create_group("boundary_conditions")
        for dim in dims:
            axis = group.create_dataset(dim, data=(coords if vary(lengths) else coords[0]).astype(np.float32))
            axis.attrs.update(sample_varying=vary(lengths), time_varying=False)
            bc = bcs.create_group(f"{dim}_periodic")
            bc.attrs.update(
                associated_dims=_strings([dim]), associated_fields=_strings([]), bc_type="PERIODIC",
                sample_varying=False, time_varying=False,
            )  # fmt: skip
            bc["mask"] = np.isin(np.arange(n), (0, n - 1))
        group = file.create_group("scalars")
        group.attrs["field_names"] = _strings(list(scalars))
        for key, values in scalars.items():
            stored = group.create_dataset(
                key, data=values.astype(np.float32) if vary(values) else np.float32(values[0])
            )
            stored.attrs.update(sample_varying=vary(values), time_varying=False)
        group = file.create_group("t0_fields")
        group.attrs["field_names"] = _strings(list(data["channels"]))
        for c, channel in enumerate(data["channels"]):
            field = group.create_dataset(channel, data=u[:, :, c], chunks=(1, *u.shape[1:2], *u.shape[3:]))
            field.attrs.update(dim_varying=np.ones(ndim, dtype=bool), sample_varying=True, time_varying=True)
        for order in ("t1_fields", "t2_fields"):
            file.create_group(order).attrs["field_names"] = _strings([])

    if split == "train":  # first: a complete split file means a complete split
        stats = _stats(u, data["channels"])
        write_file(target.parents[2] / "stats.yaml", lambda handle: handle.write(stats), source, count)
    return write_hdf5(target, fill, source, count)


def _stats(u: np.ndarray, channels: tuple[str, ...]) -> bytes:
    """WellDataset's normalisation statistics of each field (and of its frame-to-frame changes), as YAML."""
    stats: dict[str, dict[str, float]] = {
        k: {} for k in ("mean", "std", "mean_delta", "std_delta", "rms", "rms_delta")
    }
    for c, channel in enumerate(channels):
        field = u[:, :, c].astype(np.float64)
        delta = np.diff(field, axis=1)
        for suffix, values in (("", field), ("_delta", delta)):
            stats[f"mean{suffix}"][channel] = float(values.mean())
            stats[f"std{suffix}"][channel] = float(values.std())
            stats[f"rms{suffix}"][channel] = float(np.sqrt((values**2).mean()))
    return yaml.safe_dump(stats, sort_keys=False).encode()
