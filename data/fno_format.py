"""The FNO papers' MATLAB layout: ``a`` (the inputs) and ``u`` (the solutions), one row per sample.

The Burgers benchmark of Li et al. (ICLR 2021, Section 5.1) ships as ``burgers_data_R10.mat``: ``a`` = the
initial conditions ``u(·, 0)`` and ``u`` = the solutions ``u(·, 1)``, each ``[2048, 8192]``; the reference
script ``fourier_1d.py`` subsamples every ``8192 / s``-th point, trains on the first 1000 rows and tests on
the last 100. A file with more output frames holds ``u`` as ``[N, *S, T]`` (time last, as the FNO
Navier-Stokes files do; read here as the trajectory ``a, u_1 … u_T``, whereas the reference's 2D time script
takes its inputs from ``u`` itself).

:func:`export_fno` writes a pdestream split in this layout (MATLAB 5, readable by ``scipy.io.loadmat``, by
the reference code's ``MatReader`` and by MATLAB), with the composed config and each sample's PDE
parameters as extra variables; :func:`read_fno` reads it back, and reads MATLAB 7.3 files (HDF5, axes
reversed) through h5py. :class:`FNOFileDataModule` trains and tests on such a file as the reference script
does, at any resolution the file's grid divides.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from data.cli import write_atomically
from data.datamodule import PDEDataModule
from data.hdf5 import check_finite, read_trajectories, write_failure
from data.timegrid import TimeGrid, output_interval
from solvers.base import ConfigError, Solver, check_int

FNO_KEYS = ("a", "u")
"""The variables every file of the layout holds."""


def is_fno_file(path: str | Path) -> bool:
    """Whether ``path`` names a file of this layout: a MATLAB ``.mat`` file (pdestream's own are ``.h5``)."""
    return Path(path).suffix.lower() == ".mat"


def export_fno(source: str | Path, split: str, target: str | Path, config_yaml: str = "") -> Path:
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
    target = Path(target)
    try:
        write_atomically(target, lambda handle: scipy.io.savemat(handle, variables, do_compression=False))
    except OSError as error:
        raise write_failure(
            target, error, f"the {len(fields)} trajectories stay in {str(source)!r}"
        ) from None
    return target


def read_fno(path: str | Path) -> dict[str, np.ndarray]:
    """The variables of an FNO-layout file: MATLAB 5 (``scipy.io.loadmat``) or 7.3 (HDF5, axes reversed back).

    Raises :class:`ConfigError` for a missing or unreadable file, or one without ``a`` and ``u``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"data file {str(path)!r} does not exist; write it with python -m data.generate format=fno "
            "(see the README) or give the published file's path"
        )
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as file:
                found = {k: file[k][()] for k in file if isinstance(file[k], h5py.Dataset)}
            found = {k: np.transpose(v) for k, v in found.items()}
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


class _Pairs(Dataset):
    """Training samples ``{"x": a_i [1, 1, *S], "y": u_i [T, 1, *S], "params", "dt"}`` held in memory."""

    def __init__(self, u: Tensor, params: Mapping[str, Tensor], dt: float, time_history: int) -> None:
        self.u, self.params, self.time_history = u, dict(params), time_history
        self.dt = torch.tensor(dt, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.u)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "x": self.u[i, : self.time_history],
            "y": self.u[i, self.time_history :],
            "params": {k: v[i] for k, v in self.params.items()},
            "dt": self.dt,
        }


class FNOFileDataModule(PDEDataModule):
    """Training, validation and test samples from one FNO-layout file, split as the reference scripts do.

    Rows ``[0, ntrain)`` train, the last ``ntest`` rows test (``fourier_1d.py``: the first 1000 and the last
    100 of ``burgers_data_R10.mat``) and the ``nval`` rows after the training rows validate. Every sample is
    one trajectory of ``1 + T`` frames ``pde.dt_out`` apart, subsampled to the ``pde.n`` points per axis of
    the PDE config (every ``file_n / n``-th point, the reference scripts' ``sub``); training batches are
    shuffled epochs over the training rows, as the reference's ``DataLoader(shuffle=True)``.

    Args (besides those of :class:`PDEDataModule`):
        path: the ``.mat`` file (MATLAB 5 or 7.3).
        ntrain, nval, ntest: rows of each split.
    """

    ROWS = ("ntrain", "nval", "ntest")
    """The constructor arguments that split the file's rows."""

    def __init__(
        self,
        pde: Solver | Mapping[str, Any],
        path: str,
        time_history: int = 1,
        target_frames: int = 1,
        batch_size: int = 20,
        num_workers: int = 0,
        stats_trajectories: int = 16,
        normalize: str = "channel",
        ntrain: int = 1000,
        nval: int = 100,
        ntest: int = 100,
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
        for key, value in (("ntrain", ntrain), ("nval", nval), ("ntest", ntest)):
            check_int(f"data.{key}", value, 1)
        self.path, self.rows = str(path), {"train": ntrain, "val": nval, "test": ntest}
        self._data: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        """Every sample as a trajectory ``[N, 1 + T, 1, *S]`` at the PDE's resolution, with its parameters."""
        if self._data is not None:
            return self._data
        found = read_fno(self.path)
        a, u, ndim = found["a"], found["u"], self.solver.ndim
        if a.ndim != ndim + 1 or u.ndim not in (ndim + 1, ndim + 2) or u.shape[: ndim + 1] != a.shape:
            raise ConfigError(
                f"{self.path!r}: a {list(a.shape)} and u {list(u.shape)} are not [N, *S] and [N, *S(, T)] of a "
                f"{ndim}D PDE"
            )
        n_file, n = a.shape[1], self.solver.n
        if any(size != n_file for size in a.shape[1:]) or n_file % n:
            allowed = [str(n_file // d) for d in range(1, n_file // 8 + 1) if n_file % d == 0]
            raise ConfigError(
                f"{self.path!r} holds {list(a.shape[1:])} points; pde.n={n} must divide {n_file} (allowed: "
                f"{', '.join(allowed)})"
            )
        later = u if u.ndim == ndim + 2 else u[..., None]
        if "t" in found:  # a file that records its output times: they must be the PDE config's
            times = np.asarray(found["t"], dtype=np.float64).reshape(-1)
            expected = output_interval(self.solver) * np.arange(1, later.shape[-1] + 1)
            if times.shape != expected.shape or not np.allclose(times, expected):
                raise ConfigError(
                    f"{self.path!r} holds frames at t = {times.tolist()}; pde.dt_out={output_interval(self.solver):g} "
                    f"expects {expected.tolist()}: give the pde.dt_out it was made with"
                )
        frames = np.concatenate([a[..., None], later], axis=-1)  # [N, *S, 1 + T]
        sub = (slice(None), *([slice(None, None, n_file // n)] * ndim))
        trajectories = torch.from_numpy(np.ascontiguousarray(np.moveaxis(frames[sub], -1, 1)))
        trajectories = trajectories.float().unsqueeze(2)  # [N, 1 + T, 1, *S]
        count = len(trajectories)
        needed = sum(self.rows.values())
        if needed > count:
            raise ConfigError(
                f"{self.path!r} holds {count} samples; data.ntrain + data.nval + data.ntest = {needed} must not "
                "exceed it"
            )
        self._data = {"u": trajectories, "params": self._params(found, count), "count": count}
        return self._data

    def _params(self, found: Mapping[str, np.ndarray], count: int) -> dict[str, Tensor]:
        """Each sample's PDE parameters: the file's vectors where it has them, else the config's fixed values."""
        params = {}
        for name, spec in self.solver.params.items():
            if name in found:
                params[name] = torch.from_numpy(np.asarray(found[name], dtype=np.float64).reshape(-1))
            elif spec.fixed:
                params[name] = torch.full((count,), spec.low, dtype=torch.float64)
            else:
                raise ConfigError(
                    f"{self.path!r} has no variable {name!r} and pde.{name} is a range: give the value "
                    "the file was made with"
                )
        return params

    def _split_rows(self, split: str) -> slice:
        count, ntrain = self._load()["count"], self.rows["train"]
        return {
            "train": slice(0, ntrain),
            "val": slice(ntrain, ntrain + self.rows["val"]),
            "test": slice(count - self.rows["test"], count),
        }[split]

    @property
    def time_grid(self) -> TimeGrid:
        """``1 + T`` frames ``pde.dt_out`` apart."""
        return TimeGrid(self.solver.dt, output_interval(self.solver), self._load()["u"].shape[1])

    def trajectories(self, split: str) -> dict[str, Any]:
        """As :meth:`PDEDataModule.trajectories`, and ``"train"``: the training rows as trajectories."""
        return self._load_trajectories("train") if split == "train" else super().trajectories(split)

    def _load_trajectories(self, split: str) -> dict[str, Any]:
        data, rows = self._load(), self._split_rows(split)
        check_finite(data["u"][rows], self.path, split, rows.start)
        indices = torch.arange(data["count"])[rows]
        params = {k: v[rows] for k, v in data["params"].items()}
        return {"u": data["u"][rows], "params": params, "grid": self.time_grid, "index": indices}

    def _stats_sample(self) -> tuple[Tensor, str]:
        sample = self._load()["u"][: min(self.stats_trajectories, self.rows["train"])]
        check_finite(sample, self.path, "train")
        return sample, f"the first {len(sample)} training rows of {self.path!r}"

    def train_dataloader(self) -> DataLoader:
        data, rows = self._load(), self._split_rows("train")
        check_finite(data["u"][rows], self.path, "train")
        if self.time_history + self.target_frames > data["u"].shape[1]:
            raise ConfigError(
                f"{self.path!r} has {data['u'].shape[1]} frames per sample; time_history + target_frames = "
                f"{self.time_history + self.target_frames} do not fit"
            )
        pairs = _Pairs(
            data["u"][rows, : self.time_history + self.target_frames],
            {k: v[rows].float() for k, v in data["params"].items()},
            self.time_grid.dt_out,
            self.time_history,
        )
        return DataLoader(
            pairs,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
