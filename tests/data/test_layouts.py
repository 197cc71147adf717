"""The field's layouts: pdestream data written by ``python -m data.generate format=…``, read back by each
project's own consumer (The Well's ``WellDataset`` itself; PDEBench's and PDEArena's loaders step by step), read
by ``data=offline`` into the same training batches as the pdestream file, and bad files refused in one sentence."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from data.datamodule import OfflineDataModule
from data.generate import run as generate_run
from data.hdf5 import read_trajectories
from data.layouts import detect
from solvers import KuramotoSivashinsky, NavierStokes2D
from solvers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
KS = ["pde=ks", "pde.n=64", "pde.burn_in=0", "frames=6", "num_trajectories=10"]
LPSDA = ["pde=ks_lpsda", "pde.n=64", "pde.burn_in=0", "frames=6", "num_trajectories=6"]
NS = ["pde=navier_stokes", "pde.n=16", "pde.dt=0.05", "pde.dt_out=0.5", "frames=4", "num_trajectories=4"]
EVERY_ROW = {"train": [0, None], "val": [0, None], "test": [0, None]}


def generate(path: Path, *overrides: str) -> Path:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "generate",
            overrides=[*overrides, f"path={path}", "workers=0", "progress=false", "chunk=4"],
            return_hydra_config=True,
        )
        HydraConfig().set_config(cfg)
        return Path(generate_run(cfg))


def ks_solver(n: int = 64) -> KuramotoSivashinsky:
    return KuramotoSivashinsky(n=n, length=64.0, dt=0.25, dt_out=1.0, nu=1.0, burn_in=0.0)


def ns_solver() -> NavierStokes2D:
    """The navier_stokes preset on the 16-point grid of :data:`NS`."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["pde=navier_stokes", "pde.n=16", "pde.dt=0.05", "pde.dt_out=0.5"])
    return instantiate(cfg.pde)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """One pdestream file per PDE and the same splits in each foreign layout."""
    folder = tmp_path_factory.mktemp("layouts")
    out = {}
    for split in ("train", "test"):
        out[f"ks-{split}"] = generate(folder / "ks.h5", *KS, f"split={split}")
        out[f"pdebench-{split}"] = generate(
            folder / f"ks_{split}.hdf5", *KS, f"split={split}", "format=pdebench"
        )
        out[f"pdearena-{split}"] = generate(
            folder / f"KS_{split}_fixed.h5", *KS, f"split={split}", "format=pdearena"
        )
        out[f"well-{split}"] = generate(folder / "ks_well", *KS, f"split={split}", "format=the_well")
    out["lpsda"] = generate(folder / "lpsda.h5", *LPSDA, "split=train")
    out["lpsda-pdearena"] = generate(folder / "KS_train_lpsda.h5", *LPSDA, "split=train", "format=pdearena")
    out["lpsda-well"] = generate(folder / "lpsda_well", *LPSDA, "split=train", "format=the_well")
    out["ns"] = generate(folder / "ns.h5", *NS, "split=train")
    out["ns-well"] = generate(folder / "ns_well", *NS, "split=train", "format=the_well")
    out["ns-pdebench"] = generate(folder / "ns.hdf5", *NS, "split=train", "format=pdebench")
    return out


def test_the_layouts_are_detected_and_written_where_their_readers_look(made) -> None:
    assert made["well-train"] == made["well-train"].parents[2] / "data" / "train" / "ks_well_train.hdf5"
    assert (made["well-train"].parents[2] / "stats.yaml").is_file()
    assert [detect(made[k]) for k in ("ks-train", "pdebench-train", "pdearena-train", "well-train")] == [
        "pdestream", "pdebench", "pdearena", "the_well",
    ]  # fmt: skip
    assert detect(made["well-train"].parents[2]) == "the_well"
    assert not list(made["ks-train"].parent.glob("*.partial.h5"))  # the working files are gone


# ----------------------------------------------------------------------------- each project's own reader
def test_the_well_reads_our_files_with_equal_arrays(made) -> None:
    """``the_well.data.WellDataset`` (installed with the dev extra) opens the directory; every window equals
    pdestream's trajectories, the PDE parameter arrives as a constant scalar and the boundaries as periodic."""
    from the_well.data import WellDataset

    for key, source in (("well", "ks"), ("ns-well", "ns")):
        split = "train"
        path = made[f"{key}-{split}" if key == "well" else key]
        data = read_trajectories(made[f"{source}-{split}" if source == "ks" else source], split)
        ours = data["u"]
        well = WellDataset(
            path=str(path.parents[2]), well_split_name=split, n_steps_input=2, n_steps_output=1
        )
        windows = ours.shape[1] - 2
        assert len(well) == len(ours) * windows
        for i in (0, len(well) - 1):
            item, (row, start) = well[i], divmod(i, windows)
            assert torch.equal(item["input_fields"][..., 0], ours[row, start : start + 2, 0])
            assert torch.equal(item["output_fields"][..., 0], ours[row, start + 2 : start + 3, 0])
            assert torch.all(item["boundary_conditions"] == 2.0)  # PERIODIC at both ends of every axis
        expected = [float(v[0]) for v in data["params"].values()]  # each PDE parameter, in the file's order
        assert item["constant_scalars"].tolist() == pytest.approx(expected, rel=1e-6) and expected
    stats = WellDataset(
        path=str(made["well-train"].parents[2]), well_split_name="train", use_normalization=True,
        normalization_type=__import__("the_well.data.normalization", fromlist=["Z"]).ZScoreNormalization,
    )  # fmt: skip
    u = read_trajectories(made["ks-train"], "train")["u"].double()
    expected = (u[0, 0, 0] - u.mean()) / u.std()
    torch.testing.assert_close(stats[0]["input_fields"][0, :, 0].double(), expected, rtol=1e-4, atol=1e-4)


def test_pdebench_reads_our_file_as_fno_dataset_single_does(made) -> None:
    """``pdebench/models/fno/utils.py`` ``FNODatasetSingle``, 1D ``tensor`` branch, step by step: strided
    ``tensor`` → ``[N, X, T, 1]``, the grid from ``x-coordinate``, the first ``int(0.1 N)`` rows test."""
    ours = read_trajectories(made["ks-train"], "train")["u"][:, :, 0].numpy()
    r, rt = 2, 1  # reduced_resolution, reduced_resolution_t
    with h5py.File(made["pdebench-train"], "r") as f:
        assert "tensor" in f and not str(made["pdebench-train"]).endswith("h5")  # the tensor branch
        data = np.array(f["tensor"], dtype=np.float32)[::1, ::rt, ::r]
        data = np.transpose(data, (0, 2, 1))[..., None]  # [N, X, T, 1]
        grid = np.array(f["x-coordinate"], dtype=np.float32)[::r][:, None]
        t = np.array(f["t-coordinate"])
        nu = float(f.attrs["Nu"])
    test_idx = int(len(data) * 0.1)
    train, test = data[test_idx:], data[:test_idx]
    np.testing.assert_array_equal(train[0, :, :, 0], ours[test_idx, :, ::r].T)
    assert test.shape == (1, 32, 6, 1) and grid.shape == (32, 1) and nu == 1.0
    assert len(t) == 7 and t[1] - t[0] == pytest.approx(1.0)  # T + 1 times, dt_out apart
    np.testing.assert_allclose(grid[:2, 0], [0.5, 2.5])  # cell centres of the 64-point grid, every 2nd


def test_pdearena_and_lpsda_read_our_file_as_their_loaders_do(made) -> None:
    """PDEArena's ``kuramotosivashinsky1d.py`` ``_load_data`` (file filter ``_train_``, first ``pde_`` key,
    ``dt``, ``dx``, optional ``v``) and LPSDA's ``HDF5Dataset`` (key ``pde_{nt}-{nx}``, spacings from ``x``,
    ``t``), on the file of trajectories that each have their own length and duration."""
    path = made["lpsda-pdearena"]
    ours = read_trajectories(made["lpsda"], "train")
    assert "_train_" in str(path) and "h5" in str(path)
    with h5py.File(path, "r") as f:
        group = f["train"]
        key = next(k for k in group if k.startswith("pde_"))
        u = torch.tensor(np.array(group[key]), dtype=torch.float32)
        dt = torch.tensor(np.array(group["dt"]), dtype=torch.float32)
        dx = torch.tensor(np.array(group["dx"]), dtype=torch.float32)
        assert "v" not in group  # nu is fixed: the unconditional set
        u = u.reshape(-1, u.shape[1], 1, u.shape[2])
        assert key == "pde_6-64" and np.array(group["x"]).shape == (6, 64)  # LPSDA wants f"pde_{nt}-{nx}"
        lpsda_dx = np.array(group["x"])[:, 1] - np.array(group["x"])[:, 0]
        lpsda_dt = np.array(group["t"])[:, 1] - np.array(group["t"])[:, 0]
    torch.testing.assert_close(u, ours["u"])
    lengths, scales = ours["params"]["length"], ours["params"]["time_scale"]
    torch.testing.assert_close(dx.double(), lengths / 64, rtol=1e-6, atol=0)
    torch.testing.assert_close(dt.double(), scales * 100 / 499, rtol=1e-6, atol=0)
    np.testing.assert_allclose(lpsda_dx, (lengths / 64).numpy()) and np.testing.assert_allclose(
        lpsda_dt, (scales * 100 / 499).numpy()
    )


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    ("layout", "key", "source", "solver"),
    [
        ("pdebench", "pdebench-train", "ks-train", ks_solver),
        ("pdearena", "pdearena-train", "ks-train", ks_solver),
        ("the_well", "well-train", "ks-train", ks_solver),
        ("the_well", "ns-well", "ns", ns_solver),
        ("pdebench", "ns-pdebench", "ns", ns_solver),
    ],
)
def test_each_layout_gives_the_training_batches_of_the_pdestream_file(made, layout, key, source, solver):
    path = made[key].parents[2] if layout == "the_well" else made[key]
    own = {"paths": {"train": str(made[source]), "val": str(made[source]), "test": str(made[source])}}
    kwargs = {"time_history": 2, "batch_size": 4, "num_workers": 0}
    base = OfflineDataModule(solver(), own["paths"], **kwargs)
    other = OfflineDataModule(
        solver(), {s: str(path) for s in ("train", "val", "test")}, rows=EVERY_ROW, **kwargs
    )
    assert other.layout == layout
    torch.testing.assert_close(
        other.trajectories("train")["u"], base.trajectories("train")["u"], rtol=0, atol=0
    )
    for name, values in base.trajectories("train")["params"].items():
        torch.testing.assert_close(other.trajectories("train")["params"][name], values)
    assert other.time_grid == base.time_grid
    for a, b in zip(_batches(base), _batches(other), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(other.normalizer.mean, base.normalizer.mean)


def _batches(dm: OfflineDataModule) -> list:
    torch.manual_seed(0)
    return [
        [b["x"], b["y"], b["dt"], *(b["params"][k] for k in sorted(b["params"]))]
        for b in dm.train_dataloader()
    ]


def test_per_trajectory_lengths_and_durations_become_the_conditioning(made) -> None:
    """ks_lpsda draws a domain length and time scale per trajectory: both survive PDEArena's dx, dt and The
    Well's sample-varying coordinates."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["pde=ks_lpsda", "pde.n=64", "pde.burn_in=0"])
    pde = OmegaConf.to_container(cfg.pde, resolve=True)
    base = OfflineDataModule(pde, str(made["lpsda"]), time_history=2)
    for path in (made["lpsda-pdearena"], made["lpsda-well"].parents[2]):
        other = OfflineDataModule(pde, str(path), rows={"train": [0, None]}, time_history=2)
        for name in ("length", "time_scale"):
            torch.testing.assert_close(
                other.trajectories("train")["params"][name],
                base.trajectories("train")["params"][name],
                rtol=1e-6,
                atol=0,
            )


# ----------------------------------------------------------------------------- refusals
def _write_tensor(path: Path, tensor: np.ndarray, dt: float = 1.0, dx: float = 1.0) -> Path:
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor
        f["x-coordinate"] = (np.arange(tensor.shape[-1]) + 0.5) * dx
        f["t-coordinate"] = np.arange(tensor.shape[1] + 1) * dt
    return path


@pytest.mark.parametrize(
    ("tensor", "options", "pattern"),
    [
        (
            np.zeros((4, 6, 32), np.float32),
            {"dx": 2.0},
            r"'tensor' holds \[32\] points; pde\.n=64 must divide 32",
        ),
        (np.zeros((4, 6, 64), np.int8), {}, r"'tensor' holds int8 values; allowed: floating point"),
        (
            np.zeros((4, 6, 64), np.float32),
            {"dt": 0.3},
            r"frames are 0\.3 apart; pde\.dt_out=1 must be a multiple",
        ),
        (
            np.zeros((4, 6, 64), np.float32),
            {"dx": 2.0},
            r"span a domain of length 128; the pde config has pde\.length=64",
        ),
        (
            np.full((4, 6, 64), np.nan, np.float32),
            {},
            r"split 'train' holds non-finite values \(NaN or inf\)",
        ),
        (
            np.zeros((4, 6, 2, 64), np.float32),
            {},
            r"'tensor' has shape \[4, 6, 1, 2, 64\] and the pde config is 1D",
        ),
    ],
)
def test_a_file_that_does_not_fit_the_config_is_refused_naming_the_key(tmp_path, tensor, options, pattern):
    path = _write_tensor(tmp_path / "bad.hdf5", tensor, **options)
    dm = OfflineDataModule(ks_solver(), str(path), rows=EVERY_ROW)
    with pytest.raises(ConfigError, match=pattern):
        dm.trajectories("train")


def test_a_field_count_mismatch_and_a_missing_split_are_refused(made) -> None:
    ns = ns_solver()
    with pytest.raises(
        ConfigError, match=r"holds no group 'valid'|has no group 'valid' with a pde_… dataset"
    ):
        OfflineDataModule(ks_solver(), str(made["pdearena-train"])).trajectories("val")
    with pytest.raises(
        ConfigError, match=r"'train/pde_6-64' has shape \[10, 6, 1, 64\] and the pde config is 2D"
    ):
        OfflineDataModule(ns, str(made["pdearena-train"])).trajectories("train")
    with pytest.raises(ConfigError, match=r"format=pdearena holds one 1D field; this pde is 2D"):
        generate(made["ns"].parent / "NS_train_x.h5", *NS, "split=train", "format=pdearena")
    with pytest.raises(
        ConfigError, match=r"format=pdearena split=val: PDEArena reads the val files by the _valid_"
    ):
        generate(made["ns"].parent / "KS_train_x.h5", *KS, "split=val", "format=pdearena")


def test_splits_that_would_share_trajectories_are_refused(made) -> None:
    """Rows of one file given to two splits, The Well's training folder given as the test split, a parameter
    outside the config's range: each one sentence naming what to change."""
    with pytest.raises(
        ConfigError, match=r"data\.rows: the val and train rows of .* overlap \(e\.g\. row 5\)"
    ):
        dm = OfflineDataModule(
            ks_solver(), str(made["pdebench-train"]), rows={"train": [0, 8], "val": [5, 10]}
        )
        dm.trajectories("train") and dm.trajectories("val")
    split_folder = made["well-train"].parent
    with pytest.raises(
        ConfigError, match=r"holds The Well's 'train' split, not the 'test' split: give data\.paths\.test"
    ):
        OfflineDataModule(ks_solver(), {s: str(split_folder) for s in ("train", "val", "test")}).trajectories(
            "test"
        )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["pde=ks_lpsda", "pde.n=64", "pde.burn_in=0", "pde.length=[60.0,61.0]"]
        )
    narrow = OfflineDataModule(
        OmegaConf.to_container(cfg.pde, resolve=True), str(made["lpsda-pdearena"]), time_history=2
    )
    with pytest.raises(ConfigError, match=r"holds length = [\d.]+ … [\d.]+, outside pde\.length=\[60, 61\]"):
        narrow.trajectories("train")


def test_pdebench_navier_stokes_velocity_is_read_as_two_channels(tmp_path) -> None:
    """``ns_incom_inhom_2d_512-*.h5`` (PDEBench ``data_gen/src/data_io.py``): ``velocity`` [N, T, X, Y, 2], ``t``
    [N, T]; read as channels vx, vy, and refused by a one-field config naming them."""
    from solvers import External

    velocity = np.random.default_rng(0).standard_normal((3, 5, 16, 16, 2)).astype(np.float32)
    path = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    with h5py.File(path, "w") as f:
        f["velocity"], f["particles"] = velocity, velocity[..., :1]
        f["force"], f["t"] = velocity[:, 0], np.tile(0.005 * np.arange(5), (3, 1))
    external = External(n=16, length=1.0, dt_out=0.005, ndim=2, channels=["vx", "vy"])
    data = OfflineDataModule(external, str(path), rows=EVERY_ROW).trajectories("train")
    np.testing.assert_array_equal(data["u"].numpy(), np.moveaxis(velocity, -1, 2))
    with pytest.raises(
        ConfigError, match=r"'velocity' holds 2 field\(s\) \(vx, vy\); the pde config has 1 \(vorticity\)"
    ):
        OfflineDataModule(ns_solver(), str(path), rows=EVERY_ROW).trajectories("train")
