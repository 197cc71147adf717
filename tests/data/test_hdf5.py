"""HDF5 files: round trip, xarray, resumable writes, lazy windows, clear errors for bad files."""

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

from data.hdf5 import HDF5Windows, inspect_split, open_dataset, read_trajectories, write_split
from data.timegrid import TimeGrid
from data.trajectories import generate
from solvers.base import ConfigError
from tests.data.conftest import Heat

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
