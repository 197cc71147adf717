"""The FNO papers' MATLAB layout: written by data.generate format=fno, read back (MATLAB 5 and 7.3), split and
subsampled as the reference scripts do."""

from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from data.datamodule import OfflineDataModule
from data.generate import run as generate_run
from data.layouts.fno import read_fno
from solvers import Burgers
from solvers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
N, SAMPLES = 512, 12


def generate(path: Path, *extra: str) -> str:
    overrides = [
        "pde=burgers_fno",
        f"pde.n={N}",
        "pde.dt=0.01",
        "split=train",
        f"num_trajectories={SAMPLES}",
        "frames=2",
        "chunk=5",
        "format=fno",
        f"path={path}",
        "workers=0",
        "progress=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
        return generate_run(cfg)


@pytest.fixture(scope="module")
def fno_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fno") / "burgers.mat"
    assert generate_run is not None and generate(path) == str(path)
    return path


def solver(n: int = N, **kwargs) -> Burgers:
    return Burgers(n=n, length=1.0, dt=0.01, dt_out=1.0, nu=0.1, method="spectral", ic="grf", **kwargs)


ROWS = {"train": [0, 6], "val": [6, 8], "test": [-3, None]}
"""The reference's split of a 12-row file: ntrain = 6, the 2 after them validate, the last 3 test."""


def module(path: str | Path, n: int = 128, **kwargs) -> OfflineDataModule:
    """``data=fno_file`` on ``path`` read at ``n`` points."""
    kwargs = {"format": "fno", "rows": ROWS, "time_history": 1, **kwargs}
    return OfflineDataModule(solver(n=n), str(path), **kwargs)


def test_generate_writes_the_published_layout(fno_file: Path) -> None:
    """``a`` and ``u`` are [N, n] float32 (burgers_data_R10.mat: [2048, 8192]), ``u`` the solution at t = 1 of ``a``."""
    found = scipy.io.loadmat(fno_file)
    assert found["a"].shape == found["u"].shape == (SAMPLES, N) and found["a"].dtype == np.float32
    assert found["nu"].ravel().tolist() == [0.1] * SAMPLES and found["t"].ravel().tolist() == [1.0]
    assert "format: fno" in str(found["config"][0])
    assert not fno_file.with_name(fno_file.name + ".train.partial.h5").exists()  # the working file is gone
    # row i is trajectory i of the seed stream: its u0 solved to t = 1 again
    again = solver()
    u0 = torch.from_numpy(found["a"][:2]).double()[:, None]
    u1 = again.solve(u0, [1.0])[:, 0, 0].numpy()
    assert np.abs(u1 - found["u"][:2]).max() < 1e-5
    mean = found["a"].mean(-1)
    assert np.abs(found["u"].mean(-1) - mean).max() < 1e-5 and np.abs(mean).max() > 0.05


def test_a_complete_file_is_kept_and_a_wrong_count_refused(fno_file: Path, monkeypatch) -> None:
    monkeypatch.setattr(Burgers, "solve", lambda *a, **k: pytest.fail("solved again"))
    stamp = fno_file.stat().st_mtime_ns
    assert generate(fno_file) == str(fno_file) and fno_file.stat().st_mtime_ns == stamp
    with pytest.raises(
        ConfigError, match=r"already holds data made with num_trajectories=12, not 13: choose"
    ):
        generate(fno_file, "num_trajectories=13")
    with pytest.raises(
        ConfigError, match=r"already holds data made with pde=\{.*'nu': 0\.1.*\}, not \{.*'nu': 0\.2"
    ):
        generate(fno_file, "pde.nu=0.2")


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["path={tmp}/b.h5"], r"path='.*b\.h5' is not allowed with format=fno: give a \.mat file"),
        (["frames=1"], r"format=fno holds one field \(this pde has 1\) and frames >= 2 \(got 1\)"),
    ],
)
def test_what_the_layout_cannot_hold_is_refused_before_solving(tmp_path, extra, pattern, monkeypatch) -> None:
    monkeypatch.setattr(Burgers, "solve", lambda *a, **k: pytest.fail("solved"))
    with pytest.raises(ConfigError, match=pattern):
        generate(tmp_path / "b.mat", *(e.format(tmp=tmp_path) for e in extra))


def test_an_interrupted_generation_resumes(tmp_path: Path, fno_file: Path, monkeypatch) -> None:
    """Killed after the first chunk: no .mat yet, and the rerun finishes the same rows."""
    path = tmp_path / "b.mat"
    calls = []
    original = Burgers.solve

    def dies_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Burgers, "solve", dies_second)
    with pytest.raises(KeyboardInterrupt):
        generate(path)
    assert not path.exists() and path.with_name("b.mat.train.partial.h5").exists()
    monkeypatch.setattr(Burgers, "solve", original)
    generate(path)
    np.testing.assert_array_equal(scipy.io.loadmat(path)["u"], scipy.io.loadmat(fno_file)["u"])


def test_matlab_73_files_are_read_with_their_axes_reversed(tmp_path: Path, fno_file: Path) -> None:
    """A MATLAB 7.3 file is HDF5 holding each array transposed; the reference MatReader reverses the axes."""
    found = scipy.io.loadmat(fno_file)
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w") as file:
        for key in ("a", "u"):
            file[key] = found[key].astype(np.float64).T
    back = read_fno(path)
    np.testing.assert_array_equal(back["a"], found["a"].astype(np.float64))
    np.testing.assert_array_equal(back["u"], found["u"].astype(np.float64))


def test_the_data_module_splits_and_subsamples_as_the_reference(fno_file: Path) -> None:
    found = scipy.io.loadmat(fno_file)
    dm = module(fno_file, batch_size=3)
    test = dm.trajectories("test")
    assert test["u"].shape == (3, 2, 1, 128) and test["grid"].dt_out == 1.0
    np.testing.assert_array_equal(test["u"][:, 0, 0].numpy(), found["a"][-3:, ::4])  # x_data[-ntest:, ::sub]
    np.testing.assert_array_equal(test["u"][:, 1, 0].numpy(), found["u"][-3:, ::4])
    assert dm.trajectories("val")["index"].tolist() == [6, 7]
    assert dm.trajectories("train")["index"].tolist() == list(range(6))
    seen = []
    for batch in dm.train_dataloader():
        assert batch["x"].shape[1:] == (1, 1, 128) and batch["y"].shape[1:] == (1, 1, 128)
        torch.testing.assert_close(batch["dt"], torch.ones(len(batch["x"])))
        seen += [row for row in batch["x"][:, 0, 0]]
    assert len(seen) == 6  # one epoch is every training row once
    train = torch.from_numpy(found["a"][:6, ::4])
    assert sorted(int((train - row).abs().sum(1).argmin()) for row in seen) == list(range(6))
    assert dm.normalizer.mean.tolist() != [0.0]
    raw = module(fno_file, normalize="none")
    assert raw.normalizer.mean.tolist() == [0.0] and raw.normalizer.std.tolist() == [1.0]


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"n": 96}, r"pde\.n=96 must divide 512 \(allowed: 512, 256, 128, 64, 32, 16, 8\)"),
        (
            {"rows": {**ROWS, "test": [-20, None]}},
            r"data\.rows\.test=\[-20, None\] does not fit the 12 rows the file holds; give "
            r"data\.rows\.test=\[start, stop\] within 0\.\.12",
        ),
        (
            {"rows": {}},
            r"data\.rows\.test=\[-100, None\] \(the fno layout's own split\) does not fit the 12 rows",
        ),
        (
            {"path": "missing.mat"},
            r"data file 'missing\.mat' does not exist; write it with python -m data\.generate",
        ),
        ({"normalize": "minmax"}, r"data\.normalize='minmax' is not allowed; allowed: channel, none"),
    ],
)
def test_bad_input_is_one_sentence(fno_file: Path, change: dict, pattern: str) -> None:
    kwargs = {"path": str(fno_file), **change}
    with pytest.raises(ConfigError, match=pattern):
        module(**kwargs).trajectories("test")


def test_foreign_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"x": np.zeros((2, 8))})
    with pytest.raises(
        ConfigError, match=r"is not an FNO-layout file: it lacks \['a', 'u'\]; it has \['x'\]"
    ):
        read_fno(other)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    empty = tmp_path / "empty.mat"
    empty.write_bytes(b"")
    for path in (garbage, empty):
        with pytest.raises(ConfigError, match=r"is not a readable MATLAB file"):
            read_fno(path)


def test_a_full_disk_while_exporting_keeps_the_generated_trajectories(
    tmp_path: Path, fno_file: Path, monkeypatch
):
    """The .mat is written beside its target and renamed once on the disk: a full disk leaves no .mat, no
    temporary file, and the trajectories in the working file, which the rerun exports."""
    path = tmp_path / "b.mat"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scipy.io, "savemat", full)
    working = tmp_path / "b.mat.train.partial.h5"
    with pytest.raises(ConfigError) as stopped:
        generate(path)
    assert str(stopped.value) == (
        f"disk full while writing {str(path)!r}: the {SAMPLES} trajectories stay in {str(working)!r}; "
        "free space and rerun the same command to resume"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [working.name]
    monkeypatch.undo()
    monkeypatch.setattr(Burgers, "solve", lambda *a, **k: pytest.fail("solved again"))
    generate(path)
    np.testing.assert_array_equal(scipy.io.loadmat(path)["u"], scipy.io.loadmat(fno_file)["u"])


def test_non_finite_rows_are_refused_with_their_split(tmp_path: Path, fno_file: Path) -> None:
    found = scipy.io.loadmat(fno_file)
    found["u"][7, 8] = np.nan  # row 7, a point pde.n=128 keeps: the second validation row (ntrain=6, nval=2)
    path = tmp_path / "nan.mat"
    scipy.io.savemat(path, {k: v for k, v in found.items() if not k.startswith("__")})
    dm = module(path)
    assert dm.trajectories("test")["u"].shape[0] == 3
    with pytest.raises(
        ConfigError,
        match=r"nan\.mat' split 'val' holds non-finite values \(NaN or inf\), first in trajectory 7",
    ):
        dm.trajectories("val")


def test_sets_too_large_for_matlab_5_are_written_as_matlab_73(tmp_path: Path, fno_file: Path, monkeypatch):
    """From 2 GiB per variable (the FNO Navier-Stokes sets) the file is MATLAB 7.3, as the published
    ``ns_V1e-3_N5000_T50.mat``: read by the reference ``MatReader``'s h5py branch (axes reversed) and by pdestream
    to the same arrays as the MATLAB 5 file; the generation settings still identify it."""
    from data.layouts import fno

    monkeypatch.setattr(fno, "V5_LIMIT", 0)
    path = tmp_path / "big.mat"
    generate(path)
    assert path.read_bytes()[:10] == b"MATLAB 7.3" and h5py.is_hdf5(path)
    small = scipy.io.loadmat(fno_file)
    with h5py.File(path, "r") as file:  # MatReader: x = data[field][()]; np.transpose(x, reversed axes)
        u = file["u"][()]
        u = np.transpose(u, axes=range(len(u.shape) - 1, -1, -1))
        assert file["u"].attrs["MATLAB_class"] == b"single"
    np.testing.assert_array_equal(u, small["u"])
    np.testing.assert_array_equal(read_fno(path)["a"], small["a"])
    assert generate(path) == str(path)  # complete, and made with these settings: kept
    with pytest.raises(ConfigError, match=r"already holds data made with num_trajectories=12"):
        generate(path, "num_trajectories=13")


def test_a_checkpoint_of_the_earlier_fno_file_module_reads_the_same_rows(fno_file: Path) -> None:
    """Runs trained with ``data.FNOFileDataModule`` (``path``, ``ntrain``, ``nval``, ``ntest``) still load: their
    data config becomes ``OfflineDataModule`` with ``format: fno`` and the rows the old module split."""
    from data.config import DATA_TARGETS, build_from_config, upgrade_data_config

    legacy = {"_target_": "data.FNOFileDataModule", "pde": {}, "path": str(fno_file), "ntrain": 6, "nval": 2,
              "ntest": 3, "time_history": 1}  # fmt: skip
    upgraded = upgrade_data_config(legacy)
    assert upgraded["format"] == "fno" and upgraded["rows"] == ROWS and "path" not in upgraded
    dm = build_from_config({**upgraded, "pde": solver(n=128)}, DATA_TARGETS, "data")
    assert dm.trajectories("val")["index"].tolist() == [6, 7]
    assert dm.trajectories("test")["index"].tolist() == [9, 10, 11]
