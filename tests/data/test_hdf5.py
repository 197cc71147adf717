"""HDF5 files: round trip, xarray, resumable writes, full disks, lazy windows, clear errors for bad files."""

import errno
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

from data.hdf5 import HDF5Windows, inspect_split, open_dataset, read_trajectories, write_split
from data.timegrid import TimeGrid
from data.trajectories import generate
from solvers import KuramotoSivashinsky, NavierStokes2D
from solvers.errors import ConfigError
from tests.data.conftest import Heat

ROOT = Path(__file__).resolve().parents[2]
GRID = TimeGrid(0.1, 0.2, 6)


def write(path, solver, n=10, chunk=4, **kwargs):
    return write_split(
        path,
        "train",
        solver,
        GRID,
        n,
        seed=5,
        config_yaml="pde: heat\n",
        chunk=chunk,
        progress=False,
        **kwargs,
    )


def test_round_trip_matches_generated_trajectories(tmp_path, heat2d):
    path = tmp_path / "heat.h5"
    info = write(path, heat2d)
    assert info.num_trajectories == 10 and info.spatial == (8, 8) and info.param_names == ("nu",)
    data = read_trajectories(path, "train", heat2d)
    expected = generate(heat2d, 5, "train", range(10), GRID.times())
    torch.testing.assert_close(data["u"], expected.u, atol=0, rtol=0)
    torch.testing.assert_close(data["params"]["nu"], expected.params["nu"])
    assert torch.equal(data["index"], torch.arange(10)) and data["grid"] == GRID == info.grid
    with h5py.File(path) as f:
        assert f["train"].attrs["config"] == "pde: heat\n" and f["train"].attrs["complete"] == 1
        assert f["train"]["u"].chunks == (1, 6, 1, 8, 8)
        attempted = f["train"].attrs["attempted"]
    write(path, heat2d)  # rerunning on a complete file generates nothing
    with h5py.File(path) as f:
        assert f["train"].attrs["attempted"] == attempted


def test_opens_in_xarray_with_named_dims(tmp_path, heat2d):
    path = tmp_path / "heat.h5"
    write(path, heat2d)
    direct = xr.open_dataset(path, group="train", engine="h5netcdf")
    helper = open_dataset(path, "train")
    for ds in (direct, helper):
        assert ds["u"].dims == ("trajectory", "t", "channel", "x", "y")
        assert ds["nu"].dims == ("trajectory",)
        np.testing.assert_allclose(ds["t"].values, GRID.times().numpy())
        np.testing.assert_allclose(ds["x"].values, heat2d.grid[0].numpy())
        assert list(ds["channel"].values) == ["u"]
        assert ds.attrs["solver_class"].endswith("Heat")
    value = helper["u"].sel(trajectory=3, t=0.4, method="nearest").values
    np.testing.assert_array_equal(value, read_trajectories(path, "train")["u"][3, 2].numpy())


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    solver = Heat(n=16, nu=[-0.05, 0.1], blowup=3.0)  # some trajectories diverge and are skipped
    full = write(tmp_path / "full.h5", solver, n=12, max_divergence_fraction=0.9)
    calls = {"n": 0}
    solve = solver.solve

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return solve(*args, **kwargs)

    monkeypatch.setattr(solver, "solve", interrupted)
    path = tmp_path / "part.h5"
    with pytest.raises(KeyboardInterrupt):
        write(path, solver, n=12, max_divergence_fraction=0.9)
    with h5py.File(path) as f:
        written = int(f["train"].attrs["num_written"])
    assert 0 < written < 12
    with pytest.raises(ConfigError, match=f"incomplete: {written} of 12 trajectories written"):
        inspect_split(path, "train")
    monkeypatch.setattr(solver, "solve", solve)
    write(path, solver, n=12, max_divergence_fraction=0.9)
    a, b = read_trajectories(tmp_path / "full.h5", "train"), read_trajectories(path, "train")
    assert torch.equal(a["u"], b["u"]) and torch.equal(a["index"], b["index"])
    assert b["index"][-1] > 11  # diverged indices were skipped
    with h5py.File(path) as f:
        assert f["train"].attrs["diverged"] > 0
    assert full.num_trajectories == 12


def test_resume_with_other_settings_is_refused(tmp_path, heat1d):
    path = tmp_path / "heat.h5"
    write(path, heat1d)
    with pytest.raises(ConfigError, match="seed=5, not 6"):
        write_split(path, "train", heat1d, GRID, 10, seed=6, progress=False)


def test_truncated_and_garbage_files_give_clear_errors(tmp_path, heat1d):
    path = tmp_path / "heat.h5"
    write(path, heat1d)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file" * 100)
    for name in ("cut.h5", "junk.h5"):
        with pytest.raises(ConfigError, match="not a readable HDF5 file"):
            inspect_split(tmp_path / name, "train")
    with pytest.raises(ConfigError, match="does not exist"):
        inspect_split(tmp_path / "missing.h5", "train")
    with pytest.raises(ConfigError, match="has no split 'val'; it has: train"):
        inspect_split(path, "val")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("train")
    with pytest.raises(ConfigError, match="not a pdestream trajectory file"):
        inspect_split(tmp_path / "other.h5", "train")


def test_mismatched_pde_or_resolution_is_refused(tmp_path, heat1d):
    path = tmp_path / "heat.h5"
    write(path, heat1d)
    with pytest.raises(ConfigError, match="file has n=16, config has n=32"):
        inspect_split(path, "train", Heat(n=32))
    with pytest.raises(ConfigError, match="file has ndim=1, config has ndim=2"):
        HDF5Windows(path, "train", 2, 1, solver=Heat(n=16, ndim=2))
    with h5py.File(path, "r+") as file:  # the same file with integer values
        u = file["train/u"][()]
        del file["train/u"]
        file["train/u"] = u.astype(np.int8)
    with pytest.raises(ConfigError, match=r"split 'train': 'u' holds int8 values; allowed: floating point"):
        read_trajectories(path, "train", heat1d)


def test_windows_read_lazily_with_stride(tmp_path, heat1d):
    path = tmp_path / "heat.h5"
    write(path, heat1d)
    u = read_trajectories(path, "train")["u"]
    windows = HDF5Windows(path, "train", time_history=2, target_frames=1, stride=2, solver=heat1d)
    assert len(windows) == 10 * 2 and torch.isclose(windows[0]["dt"], torch.tensor(0.4))
    item = windows[3]  # trajectory 1, start 1
    assert torch.equal(item["x"], u[1, [1, 3]]) and torch.equal(item["y"], u[1, [5]])
    loader = DataLoader(windows, batch_size=5, num_workers=2, shuffle=True)
    batches = list(loader)
    assert sum(len(b["x"]) for b in batches) == 20 and batches[0]["params"]["nu"].shape == (5,)
    with pytest.raises(ConfigError, match="needs 11"):
        HDF5Windows(path, "train", 5, 1, stride=2)


def fails_at(monkeypatch, method, call, error, name="/train/u"):
    """Make the ``call``-th use of ``h5py`` ``method`` (on dataset ``name`` where it is a dataset's) raise."""
    cls, attr = method.rsplit(".", 1)
    owner = {"Dataset": h5py.Dataset, "File": h5py.File}[cls]
    original, calls = getattr(owner, attr), []

    def failing(self, *args):
        if cls == "File" or self.name == name:
            calls.append(1)
            if len(calls) == call:
                raise error
        return original(self, *args)

    monkeypatch.setattr(owner, attr, failing)


FULL = OSError(errno.ENOSPC, "No space left on device")
FLUSH_FULL = RuntimeError(  # how h5py reports a metadata flush that hit a full disk
    "Unable to flush file (file write failed: time = now, filename = 'x.h5', file descriptor = 3, errno = 28, "
    "error message = 'No space left on device', buf = 0x0, total write size = 288, bytes this sub-write = 288)"
)


@pytest.mark.parametrize(
    ("method", "call", "error"),
    [("Dataset.__setitem__", 2, FULL), ("File.flush", 4, FLUSH_FULL)],
    ids=["write", "flush"],
)
def test_a_full_disk_stops_with_one_sentence_and_the_verified_rows_resume(
    tmp_path, heat1d, monkeypatch, method, call, error
):
    """The second chunk's rows (or their flush) hit a full disk: the first chunk stays counted, nothing
    claims completeness, and the rerun finishes the file as an uninterrupted write would."""
    write(tmp_path / "full.h5", heat1d)
    path = tmp_path / "part.h5"
    fails_at(monkeypatch, method, call, error)
    with pytest.raises(ConfigError) as stopped:
        write(path, heat1d)
    assert str(stopped.value) == (
        f"disk full while writing {str(path)!r}: 4 of 10 trajectories of split 'train' are safely written; "
        "free space and rerun the same command to resume"
    )
    with pytest.raises(ConfigError, match="incomplete: 4 of 10 trajectories written"):
        inspect_split(path, "train")
    monkeypatch.undo()
    write(path, heat1d)
    assert torch.equal(
        read_trajectories(path, "train")["u"], read_trajectories(tmp_path / "full.h5", "train")["u"]
    )


def test_rows_that_read_back_differ_are_never_counted(tmp_path, heat1d, monkeypatch):
    """A write that lands as zeros (the failure the chunk cache used to hide) stops the write; a file this
    call created without one verified row is removed."""
    original = h5py.Dataset.__getitem__

    def zeros(self, key):
        values = original(self, key)
        return np.zeros_like(values) if self.name == "/train/u" else values

    monkeypatch.setattr(h5py.Dataset, "__getitem__", zeros)
    path = tmp_path / "heat.h5"
    with pytest.raises(ConfigError) as stopped:
        write(path, heat1d)
    assert str(stopped.value) == (
        f"could not write {str(path)!r} (rows 0 to 3 of /train/u read back differ from those written): "
        "0 of 10 trajectories of split 'train' are safely written; fix that and rerun the same command to resume"
    )
    assert not path.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 700 kB tmpfs mounted at ``tmp_path / "disk"`` (needs root), too small for the 1.3 MB written to it;
    unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)], capture_output=True, text=True
        )
        if shutil.which("mount")
        else None
    )
    if mounted is None or mounted.returncode:
        reason = "no mount command" if mounted is None else mounted.stderr.strip() or "mount failed"
        pytest.skip(f"mounting a small tmpfs is impossible here ({reason}): the full-disk test needs root")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_exits_2_and_the_rerun_resumes(small_disk, tmp_path):
    """The issue's reproduction on a real full file system: one sentence and exit status 2 (no crash at
    exit, no file that claims completeness); with space freed, the write resumes and ends as an uninterrupted
    one."""
    path = small_disk / "ks.h5"
    settings = "pde=ks pde.n=64 num_trajectories=128 frames=40 chunk=16 workers=0 progress=false"
    command = [sys.executable, "-m", "data.generate", *settings.split(), f"path={path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, lines
    found = re.fullmatch(
        rf"generation error: disk full while writing {re.escape(repr(str(path)))}: (\d+) of 128 trajectories of "
        r"split 'train' are safely written; free space and rerun the same command to resume",
        lines[0],
    )
    assert found and 0 < int(found.group(1)) < 128, lines[0]
    with h5py.File(path, "r") as file:
        assert (
            file["train"].attrs["num_written"] == int(found.group(1)) and file["train"].attrs["complete"] == 0
        )
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    solver = KuramotoSivashinsky(n=64, dt_out=1.0)
    grid = TimeGrid.of_solver(solver, 40)
    write_split(path, "train", solver, grid, 128, seed=0, chunk=16, progress=False)
    write_split(tmp_path / "ref.h5", "train", solver, grid, 128, seed=0, chunk=16, progress=False)
    assert torch.equal(
        read_trajectories(path, "train")["u"], read_trajectories(tmp_path / "ref.h5", "train")["u"]
    )


def test_non_finite_trajectories_are_refused_where_they_are_read(tmp_path, heat1d):
    path = tmp_path / "heat.h5"
    write(path, heat1d)
    with h5py.File(path, "a") as file:
        file["train"]["u"][3, 2, 0, 5] = np.nan
        file["train"]["u"][7, 0, 0, 0] = np.inf
    pattern = (
        rf"^{re.escape(repr(str(path)))} split 'train' holds non-finite values \(NaN or inf\), first in trajectory "
        r"3: regenerate the file \(a cache file: delete it\) or give another$"
    )
    with pytest.raises(ConfigError, match=pattern):
        read_trajectories(path, "train")
    assert read_trajectories(path, "train", limit=3)["u"].shape[0] == 3  # the rows before it are fine
    windows = HDF5Windows(path, "train", time_history=2, target_frames=1, solver=heat1d)
    assert torch.isfinite(windows[3 * windows.windows + 3]["x"]).all()  # frames 3 to 5 of trajectory 3
    with pytest.raises(ConfigError, match=pattern):
        windows[3 * windows.windows + 1]  # frames 1 to 3


@pytest.mark.parametrize(
    ("solver", "field", "units"),
    [
        (lambda: KuramotoSivashinsky(n=32, dt=0.1, dt_out=0.2, burn_in=0), "u", "length units/time unit"),
        (
            lambda: NavierStokes2D(n=16, length=1.0, dt=0.05, dt_out=0.2),
            "u",
            "1/time unit",
        ),
    ],
)
def test_files_state_the_units_of_fields_coordinates_and_parameters(solver, field, units, tmp_path):
    """pdestream's PDEs are nondimensional: fields, coordinates and parameters carry the equation's units."""
    solver = solver()
    path = tmp_path / "units.h5"
    write(path, solver, n=2, chunk=2)
    with h5py.File(path) as f:
        group = f["train"]
        assert group[field].attrs["units"] == units
        assert group["t"].attrs["units"] == "time units" and group["x"].attrs["units"] == "length units"
        assert group["nu"].attrs["units"] == solver.param_meanings["nu"][1] != ""
        assert "nondimensional" in group.attrs["units_note"]
    ds = open_dataset(path, "train")
    assert ds["u"].attrs["units"] == units and ds["t"].attrs["units"] == "time units"
    assert np.issubdtype(ds["t"].dtype, np.floating)  # "time units" is no calendar unit: t is not decoded
