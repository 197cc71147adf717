"""DataModules: cached rollout sets, normalisation, offline files, checkpoint resume under Lightning."""

import errno
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

import data.datamodule as datamodule_module
from data import Normalizer, OfflineDataModule, OnlineDataModule, inspect_split, write_split
from data.generate import run as generate_run
from data.timegrid import TimeGrid
from data.trajectories import generate
from solvers.errors import ConfigError
from tests.data.conftest import Heat

ROOT = Path(__file__).resolve().parents[2]


def online_kwargs(tmp_path, **overrides):
    """Keyword arguments of a tiny OnlineDataModule (generation in this process)."""
    kwargs = dict(
        time_history=2,
        target_frames=1,
        batch_size=8,
        num_workers=0,
        frames=6,
        solver_batch=4,
        buffer={"policy": "reservoir", "capacity": 64, "max_reuse": 2, "watermark": 16},
        seed=1,
        generation="device",
        num_val_trajectories=5,
        num_test_trajectories=3,
        cache_dir=str(tmp_path / "cache"),
    )
    kwargs.update(overrides)
    return kwargs


def online(tmp_path, solver, **overrides):
    return OnlineDataModule(solver, **online_kwargs(tmp_path, **overrides))


def test_rollout_sets_are_cached_per_config_and_reused(tmp_path, heat1d, monkeypatch):
    dm = online(tmp_path, heat1d)
    val = dm.trajectories("val")
    assert val["u"].shape == (5, 6, 1, 16) and dm.trajectories("test")["u"].shape == (3, 6, 1, 16)
    assert val["grid"] == dm.time_grid == TimeGrid(0.1, 0.2, 6)
    assert dm.cache_path.is_file()

    def no_writes(*args, **kwargs):
        raise AssertionError("the cached file should have been reused")

    monkeypatch.setattr(datamodule_module, "write_split", no_writes)
    again = online(tmp_path, Heat(n=16, dt=0.1, dt_out=0.2, ndim=1))
    assert again.cache_path == dm.cache_path
    assert torch.equal(again.trajectories("val")["u"], val["u"])
    assert online(tmp_path, heat1d, seed=2).cache_path != dm.cache_path
    assert online(tmp_path, Heat(n=32)).cache_path != dm.cache_path
    batch = next(iter(dm.val_dataloader()))
    assert batch["u"].shape == (5, 6, 1, 16) and batch["params"]["nu"].shape == (5,)
    assert torch.allclose(batch["dt"], torch.tensor(0.2))

    # val, test and train are different seed streams: their trajectory 0 differ
    times = TimeGrid(0.1, 0.2, 6).times()
    first = [generate(heat1d, 1, split, [0], times).u[0] for split in ("train", "val", "test")]
    torch.testing.assert_close(first[1], val["u"][0], atol=0, rtol=0)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])


def test_training_generates_only_the_validation_set(tmp_path, heat1d):
    """The test set is not needed to fit: it is generated when evaluation first asks for it."""
    dm = online(tmp_path, heat1d)
    dm.prepare_data()
    with h5py.File(dm.cache_path, "r") as file:
        assert "val" in file and "test" not in file
    assert dm.trajectories("test")["u"].shape == (3, 6, 1, 16)
    with h5py.File(dm.cache_path, "r") as file:
        assert {"val", "test"} <= set(file)


def test_normalizer_statistics_and_conditioning(tmp_path, heat1d):
    dm = online(tmp_path, heat1d)
    dm.setup("fit")
    norm = dm.normalizer
    batch = next(iter(dm.train_dataloader()))
    x = norm.normalize(batch["x"])
    assert abs(x.mean().item()) < 0.5 and 0.3 < x.std().item() < 3
    torch.testing.assert_close(norm.denormalize(x), batch["x"])
    cond = norm.cond(batch["params"], batch["dt"])
    assert (
        cond.shape == (8, norm.cond_dim)
        and cond[:, :1].abs().max() <= 1
        and torch.allclose(cond[:, 1], torch.ones(8))
    )
    restored = type(norm)(torch.zeros(1), torch.ones(1), ["?"], torch.zeros(2), torch.ones(2), torch.zeros(2))
    restored.load_state_dict(norm.state_dict())
    assert restored.param_names == ["nu"] and torch.equal(restored.std, norm.std)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"generation": "gpu"}, "data.generation"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"frames": 1}, "frames"),
    ],
)
def test_bad_online_config_names_the_key(tmp_path, heat1d, overrides, key):
    with pytest.raises(ConfigError, match=key):
        online(tmp_path, heat1d, **overrides)


def test_a_pde_without_dt_out_is_refused_not_stepped_once(tmp_path):
    with pytest.raises(ConfigError, match=r"pde\.dt_out is missing for Heat"):
        online(tmp_path, Heat(dt_out=None))
    with pytest.raises(ConfigError, match=r"pde\.dt_out is missing for Heat"):
        OfflineDataModule(Heat(dt_out=None), {"train": "a.h5", "val": "a.h5", "test": "a.h5"})


def test_offline_datamodule_reads_windows_and_rollouts(tmp_path, heat1d):
    path = tmp_path / "heat.h5"
    for split, n in (("train", 6), ("val", 3), ("test", 2)):
        write_split(path, split, heat1d, TimeGrid(0.1, 0.1, 9), n, seed=0, progress=False)
    paths = {"train": str(path), "val": str(path), "test": str(path)}
    dm = OfflineDataModule(heat1d, paths, time_history=2, target_frames=2, batch_size=4)
    assert dm.time_grid == TimeGrid(0.1, 0.2, 5)  # the file's 0.1, every 2nd frame
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 2, 1, 16) and batch["y"].shape == (4, 2, 1, 16)
    assert torch.allclose(batch["dt"], torch.tensor(0.2))
    val = dm.trajectories("val")
    assert val["u"].shape == (3, 5, 1, 16) and val["grid"] == TimeGrid(0.1, 0.2, 5)
    assert dm.normalizer.cond_dim == 2
    with pytest.raises(ConfigError, match=r"not a multiple of the interval 0\.1"):
        _ = OfflineDataModule(Heat(dt=0.05, dt_out=0.15), paths).time_grid
    with pytest.raises(ConfigError, match=r"config has n=8"):
        OfflineDataModule(Heat(n=8), paths).setup("fit")
    with pytest.raises(ConfigError, match=r"data\.paths is missing"):
        OfflineDataModule(heat1d, {"train": str(path)})


def generate_conf(tmp: Path) -> Path:
    """A config directory with ``generate.yaml`` (and what it includes) and a ``pde=heat`` option."""
    conf = tmp / "conf"
    (conf / "pde").mkdir(parents=True)
    shutil.copy(ROOT / "conf" / "generate.yaml", conf / "generate.yaml")
    (conf / "pde" / "heat.yaml").write_text(
        "_target_: tests.data.conftest.Heat\nn: 16\ndt: 0.1\ndt_out: 0.1\n"
    )
    return conf


def test_generate_cli_config_writes_a_complete_file(tmp_path):
    conf = generate_conf(tmp_path)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        overrides = ["pde=heat", "num_trajectories=6", "frames=5", "pde.dt_out=0.2", "chunk=4", "workers=0"]
        cfg = compose("generate", overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
        assert cfg.path == "datasets/heat.h5"
        cfg.path = str(tmp_path / "heat.h5")
        path = generate_run(cfg)
    info = inspect_split(path, "train")
    assert info.num_trajectories == 6 and info.grid == TimeGrid(0.1, 0.2, 5)


def half_created(path):
    """A file whose writer was killed between creating the split and writing its metadata."""
    with h5py.File(path, "w") as file:
        file.create_group("train")


@pytest.mark.parametrize(
    ("overrides", "prepare", "pattern"),
    [
        (
            ["num_trajectories=8"],
            "complete",
            r"already holds split 'train' made with num_trajectories=4, not 8",
        ),
        (
            ["pde.dt_out=0.15"],
            None,
            r"dt_out=0.15 is not allowed: it must be a positive multiple of the solver's dt=0.1",
        ),
        (["pde.dt_out=null"], None, r"pde\.dt_out is missing for Heat"),
        (["path={tmp}/file/x.h5"], None, r"the directory of path=.*file' is not a writable directory"),
        ([], "half", r"without metadata, left by a write interrupted .* delete the file"),
        ([], "garbage", r"is not a readable HDF5 file .*; delete it or choose another path"),
        (["dtype=float16"], None, r"dtype='float16' is not allowed; allowed: float32, float64"),
    ],
)
def test_generate_refuses_bad_input_before_solving(tmp_path, overrides, prepare, pattern, monkeypatch):
    (tmp_path / "file").write_text("")
    path = tmp_path / "heat.h5"
    base = [
        "pde=heat",
        "num_trajectories=4",
        "frames=5",
        "pde.dt_out=0.2",
        "chunk=4",
        "workers=0",
        f"path={path}",
    ]
    conf = generate_conf(tmp_path)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("generate", overrides=base, return_hydra_config=True)
        HydraConfig().set_config(cfg)
        if prepare == "complete":
            generate_run(cfg)
        cfg = compose("generate", overrides=[*base, *(o.format(tmp=tmp_path) for o in overrides)])
    if prepare == "half":
        half_created(path)
    if prepare == "garbage":
        path.write_bytes(b"not hdf5" * 100)
    solved = []
    monkeypatch.setattr(Heat, "solve", lambda self, *a, **k: solved.append(a))
    with pytest.raises(ConfigError, match=pattern):
        generate_run(cfg)
    assert not solved


def test_generate_cli_exits_2_with_one_sentence(tmp_path):
    path = tmp_path / "ks.h5"
    half_created(path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data.generate",
            "pde.n=32",
            "num_trajectories=2",
            "workers=0",
            f"path={path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    assert [line for line in output.splitlines() if line.strip()] == [
        f"generation error: {str(path)!r} holds a split 'train' without metadata, left by a write interrupted "
        "while creating it: delete the file (or that split) and generate again"
    ]


class Linear(pl.LightningModule):
    """The smallest model that trains on stream batches; checks the batch contract on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(16, 16)

    def training_step(self, batch, batch_idx):
        assert set(batch) == {"x", "y", "params", "dt"}
        return torch.nn.functional.mse_loss(self.layer(batch["x"][:, -1:]), batch["y"])

    def validation_step(self, batch, batch_idx):
        assert batch["u"].shape[1:] == (6, 1, 16)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Spy(OnlineDataModule):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = []

    def record(self, info) -> None:
        self.consumed.append(info["index"].tolist())
        super().record(info)


def test_checkpoint_resume_serves_the_uninterrupted_batches(tmp_path, heat1d):
    def trainer(steps):
        return pl.Trainer(
            max_steps=steps,
            val_check_interval=3,
            check_val_every_n_epoch=None,
            limit_val_batches=1,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=tmp_path,
        )

    def datamodule():
        buffer = {"policy": "reservoir", "capacity": 64, "max_reuse": 1, "watermark": 16}
        return Spy(
            heat1d, **online_kwargs(tmp_path, buffer=buffer, num_val_trajectories=2, num_test_trajectories=2)
        )

    straight = datamodule()
    trainer(9).fit(Linear(), datamodule=straight)
    first = datamodule()
    run = trainer(3)
    run.fit(Linear(), datamodule=first)
    ckpt = tmp_path / "stream.ckpt"
    run.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["Spy"]["stream"]
    assert state["num_shards"] == 1 and state["shards"][0]["batches"] == 3
    second = datamodule()
    trainer(9).fit(Linear(), datamodule=second, ckpt_path=ckpt)
    assert second.consumed == straight.consumed[3:]  # the same windows, drawn from the restored buffer
    assert second.stream_stats()["windows_inserted"] > first.stream_stats()["windows_inserted"]


def test_runs_started_together_share_one_cache_file(tmp_path, heat1d, monkeypatch):
    """Two processes asking for the same test set: one writes it, the other waits and reads it."""
    import threading

    writes = []
    original = datamodule_module.write_split

    def slow_write(*args, **kwargs):
        writes.append(args[1])
        original(*args, **kwargs)

    monkeypatch.setattr(datamodule_module, "write_split", slow_write)
    modules = [online(tmp_path, heat1d) for _ in range(2)]
    results: list = [None, None]

    def load(i):
        results[i] = modules[i].trajectories("test")["u"]

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writes == ["test"] and torch.equal(results[0], results[1])


def test_a_full_disk_while_caching_stops_with_one_sentence(tmp_path, heat1d, monkeypatch):
    """The validation cache is written as any generated file: nothing unverified is counted, and a cache
    file created without one verified row is removed, so the next run generates it afresh."""
    dm = online(tmp_path, heat1d)
    original = h5py.Dataset.__setitem__

    def full(self, key, value):
        if self.name == "/val/u":
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(ConfigError) as stopped:
        dm.prepare_data()
    assert str(stopped.value) == (
        f"disk full while writing {str(dm.cache_path)!r}: 0 of 5 trajectories of split 'val' are safely written; "
        "free space and rerun the same command to resume"
    )
    assert not dm.cache_path.exists()
    monkeypatch.undo()
    assert dm.trajectories("val")["u"].shape == (5, 6, 1, 16)


def test_non_finite_validation_and_training_data_are_refused(tmp_path, heat1d):
    dm = online(tmp_path, heat1d)
    dm.prepare_data()
    with h5py.File(dm.cache_path, "a") as file:
        file["val"]["u"][2, 3, 0, 4] = float("nan")
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(repr(str(dm.cache_path)))} split 'val' holds non-finite values \(NaN or inf\), "
        r"first in trajectory 2: regenerate the file \(a cache file: delete it\) or give another$",
    ):
        online(tmp_path, heat1d).trajectories("val")
    path = tmp_path / "heat.h5"
    for split in ("train", "val", "test"):
        write_split(path, split, heat1d, TimeGrid(0.1, 0.2, 6), 4, seed=0, progress=False)
    with h5py.File(path, "a") as file:
        file["train"]["u"][1, 5, 0, 0] = float("inf")
    offline = OfflineDataModule(heat1d, {split: str(path) for split in ("train", "val", "test")})
    with pytest.raises(
        ConfigError, match=r"split 'train' holds non-finite values \(NaN or inf\), first in trajectory 1"
    ):
        _ = offline.normalizer


def test_non_finite_statistics_are_one_consistent_sentence(tmp_path):
    """Statistics trajectories that all diverge leave no data: the sentence says which statistics, from what,
    and what to do (it used to blame a std of [1.0] for not being finite)."""
    dm = online(tmp_path, Heat(n=16, dt=0.1, nu=-1.0, blowup=1.0), stats_trajectories=4)
    with pytest.raises(ConfigError) as refused:
        _ = dm.normalizer
    assert str(refused.value) == (
        "the normalisation statistics of the 4 statistics trajectories of the pde config (4 diverged) are not "
        "finite (per-channel mean [nan], std [nan]) because those trajectories hold NaN or inf or there are "
        "none; fix their source or set data.normalize=none"
    )
    with pytest.raises(
        ValueError, match=r"mean and std must be finite with std > 0; got mean \[nan\] and std \[1\.0\]"
    ):
        Normalizer(
            torch.tensor([float("nan")]), torch.ones(1), [], torch.zeros(1), torch.ones(1), torch.zeros(1)
        )


def test_offline_datamodule_names_what_it_reads_and_how_to_make_a_missing_file(tmp_path, heat1d, caplog):
    path = tmp_path / "heat.h5"
    for split, n in (("train", 6), ("val", 3)):
        write_split(path, split, heat1d, TimeGrid(0.1, 0.1, 9), n, seed=0, progress=False)
    paths = {"train": str(path), "val": str(path), "test": str(tmp_path / "heat_test.h5")}
    with pytest.raises(
        ConfigError,
        match=r"^data file '.*heat_test\.h5' does not exist \(data\.paths\.test\); make it with: python -m "
        r"data\.generate pde=heat split=test path=.*heat_test\.h5 \(with this run's pde\.\* overrides, if any\)$",
    ):
        OfflineDataModule(heat1d, paths, pde_preset="heat").setup("fit")
    gone = {split: str(tmp_path / "none.h5") for split in ("train", "val", "test")}
    with pytest.raises(
        ConfigError, match=r"split=train path=.*none\.h5, then the same with split=val and split=test"
    ):
        _ = OfflineDataModule(heat1d, gone, pde_preset="heat").time_grid
    write_split(path, "test", heat1d, TimeGrid(0.1, 0.1, 9), 2, seed=0, progress=False)
    dm = OfflineDataModule(heat1d, dict.fromkeys(("train", "val", "test"), str(path)), time_history=2)
    with caplog.at_level(logging.INFO, logger="pdestream"):
        dm.setup("fit")
        dm.trajectories("val")
    lines = [r.getMessage() for r in caplog.records]
    assert f"data: training on {path}, group train: 6 trajectories of 9 frames (30 windows)" in lines
    assert f"data: val set from {path}, group val: 3 trajectories" in lines
