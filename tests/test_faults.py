"""Faults of the machine and of training lose nothing: NaN training, full disks and altered files while saving
checkpoints, reused run directories, changed or moved resumes, Ctrl-C, and command-line slips."""

from __future__ import annotations

import errno
import fcntl
import math
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch

from tests.test_train import (
    ROOT,
    SendSignal,
    assert_one_sentence,
    compose_train,
    default_data,
    run_cli,
    run_steps,
    tiny,
)
from training.callbacks import BestCheckpoint
from training.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointWriteError,
    read_checkpoint,
)
from training.run import RunConfigError, build, fit
from training.stopping import Stopped


def last(tmp: Path) -> Path:
    return tmp / "run" / "checkpoints" / "last.ckpt"


def finite(checkpoint: dict) -> bool:
    return all(
        bool(t.isfinite().all())
        for t in checkpoint["state_dict"].values()
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    )


# --------------------------------------------------------------------------- non-finite training
class PoisonBatch(pl.Callback):
    """Puts a NaN into the training batch's input ``x`` from step ``step`` on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            batch["x"][0].view(-1)[0] = math.nan


def test_nan_data_stops_the_run_naming_the_step_and_input_and_keeps_the_validated_checkpoints(tmp_path):
    run = build(
        compose_train([*default_data(tmp_path), "trainer.max_steps=30", "trainer.val_check_interval=5"])
    )
    run.trainer.callbacks.insert(0, PoisonBatch(7))
    with pytest.raises(
        Exception, match=r"training stopped at step 8: the batch's x is NaN or infinite; check"
    ):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    saved = torch.load(last(tmp_path), weights_only=True)
    assert saved["global_step"] == 5 and finite(saved)


def test_a_diverging_learning_rate_exits_2_with_one_sentence_and_no_nan_checkpoint(tmp_path):
    result = run_cli(
        *tiny(tmp_path), "optimizer.lr=1e6", "trainer.max_steps=40", "trainer.val_check_interval=1"
    )
    assert_one_sentence(
        result,
        "configuration error",
        r"training stopped at step \d+: the training loss is NaN or infinite; lower optimizer.lr",
    )
    for name in ("last.ckpt", "best.ckpt"):
        path = tmp_path / "run" / "checkpoints" / name
        assert not path.exists() or finite(torch.load(path, weights_only=True)), name


def fake_trainer() -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda decision: decision))


def test_best_checkpoint_never_keeps_a_nan_or_a_score_below_the_untrained_model():
    best = BestCheckpoint(monitor="val/corr_time", mode="max", filename="best")
    trainer = fake_trainer()
    assert not best.check_monitor_top_k(trainer, torch.tensor(math.nan))  # Lightning saves a first NaN
    assert best.check_monitor_top_k(trainer, torch.tensor(0.1))
    best.floor = 0.5
    assert not best.check_monitor_top_k(trainer, torch.tensor(0.4))
    assert best.check_monitor_top_k(trainer, torch.tensor(0.5))
    low = BestCheckpoint(monitor="val/fno_rel_l2", mode="min", filename="best")
    low.floor = 0.2
    assert not low.check_monitor_top_k(trainer, torch.tensor(0.3))
    assert low.check_monitor_top_k(trainer, torch.tensor(0.1))


def test_the_best_score_travels_in_the_checkpoint_not_in_the_path(tmp_path):
    """Resumed in another directory, the best score is kept as the floor; only this directory's best.ckpt
    is ever the best model (so the other directory's file is never removed)."""
    old = tmp_path / "old"
    (old / "best.ckpt").parent.mkdir(parents=True)
    (old / "best.ckpt").write_bytes(b"x")
    state = {
        "dirpath": str(old),
        "best_model_score": torch.tensor(1.5),
        "best_model_path": str(old / "best.ckpt"),
        "best_k_models": {str(old / "best.ckpt"): torch.tensor(1.5)},
        "floor": 0.7,
    }
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "best.ckpt").write_bytes(b"x")
    for directory, kept in ((moved, True), (tmp_path / "new", False)):
        best = BestCheckpoint(dirpath=str(directory), monitor="val/corr_time", mode="max", filename="best")
        best.load_state_dict(state)
        assert best.floor == 1.5
        assert best.best_model_path == (str(directory / "best.ckpt") if kept else "")
        assert not best.check_monitor_top_k(fake_trainer(), torch.tensor(1.0))
        assert best.check_monitor_top_k(fake_trainer(), torch.tensor(1.6))
        assert str(old / "best.ckpt") not in best.best_k_models


# --------------------------------------------------------------------------- checkpoint files
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def full(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device\); .*still holds the previous"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_full_tmpfs_while_saving_keeps_the_previous_checkpoint(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]).returncode:
        pytest.skip(
            "mounting a tmpfs needs root; test_a_full_disk_while_saving_… covers it with a patched writer"
        )
    try:
        io = AtomicCheckpointIO()
        io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, mount / "last.ckpt")
        with pytest.raises(CheckpointWriteError, match="No space left on device"):
            io.save_checkpoint({"state_dict": {"w": torch.ones(200_000)}}, mount / "last.ckpt")
        assert read_checkpoint(mount / "last.ckpt")["state_dict"]["w"].numel() == 1000
        assert [p.name for p in mount.iterdir()] == ["last.ckpt"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def flip_a_tensor_byte(path: Path) -> None:
    """Flip one bit inside the largest tensor's bytes of a (stored, uncompressed) torch checkpoint."""
    with zipfile.ZipFile(path) as archive:
        name = max(
            (n for n in archive.namelist() if "/data/" in n), key=lambda n: archive.getinfo(n).file_size
        )
        info = archive.getinfo(name)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2] ^= 0x10
    path.write_bytes(data)


def test_a_flipped_bit_in_a_checkpoint_tensor_is_detected_and_auto_resume_falls_back(tmp_path, caplog):
    run_steps(tmp_path, 10)
    flip_a_tensor_byte(last(tmp_path))
    with pytest.raises(CheckpointError, match=r"is corrupt: its tensors do not match the checksum"):
        read_checkpoint(last(tmp_path))
    with caplog.at_level("WARNING"):
        resumed = run_steps(tmp_path, 12, "ckpt_path=auto")
    assert re.search(
        r"ckpt_path=auto: skipping last.ckpt \(.*checksum.*\); resuming from .*best.ckpt", caplog.text
    )
    assert resumed["global_step"] == 12


def test_a_truncated_last_checkpoint_falls_back_and_no_intact_one_is_refused(tmp_path):
    run_steps(tmp_path, 10)
    data = last(tmp_path).read_bytes()
    last(tmp_path).write_bytes(data[: len(data) // 2])
    assert run_steps(tmp_path, 12, "ckpt_path=auto")["global_step"] == 12  # from best.ckpt
    for path in (last(tmp_path), last(tmp_path).with_name("best.ckpt")):
        path.write_bytes(b"garbage")
    with pytest.raises(
        RunConfigError,
        match=r"ckpt_path=auto: no intact checkpoint in (?=.*last.ckpt \(.*is corrupt)(?=.*best.ckpt \()",
    ):
        build(compose_train([*default_data(tmp_path), "ckpt_path=auto"]))


def test_a_pickle_payload_is_named_as_blocked_code_not_as_corruption(tmp_path):
    path = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "hook": print}, path)
    with pytest.raises(
        CheckpointError, match=r"holds pickled Python objects \(.*print\) .*trust_checkpoints"
    ):
        read_checkpoint(path)


# --------------------------------------------------------------------------- run directories and resumes
def test_a_second_run_into_a_run_directory_with_checkpoints_is_refused(tmp_path):
    run_steps(tmp_path, 2)
    before = last(tmp_path).read_bytes()
    with pytest.raises(
        RunConfigError, match=r"already holds checkpoints \(best.ckpt, last.ckpt\) .*ckpt_path=auto"
    ):
        build(compose_train(default_data(tmp_path)))
    other = tmp_path / "other"
    run_steps(other, 2)
    with pytest.raises(RunConfigError, match=r"ckpt_path=.* would overwrite them"):
        build(compose_train([*default_data(tmp_path), f"ckpt_path={last(other)}"]))
    assert last(tmp_path).read_bytes() == before


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path):
    lock = tmp_path / "run" / ".pdestream.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl,time; f=open({str(lock)!r},'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('4242 on elsewhere'); f.flush(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(
            RunConfigError, match=r"is in use by another training run \(process 4242 on elsewhere\)"
        ):
            build(compose_train(tiny(tmp_path)))
    finally:
        holder.kill()
        holder.wait()
    with open(lock) as file:  # released by the failed build
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("pde=burgers", "pde._target_"),
        ("pde.nu=[0.5,1.5]", "pde.nu"),
        ("model.width=8", "model.width"),
        ("data.num_val_trajectories=3", "data.num_val_trajectories"),
        ("seed=3", "seed"),
    ],
)
def test_a_resume_that_would_be_another_run_is_refused(change, key, tmp_path):
    run_steps(tmp_path, 2)
    with pytest.raises(
        RunConfigError, match=rf"ckpt_path=.*last.ckpt was trained with {re.escape(key)}=.* but this run has"
    ):
        build(compose_train([*default_data(tmp_path), "trainer.max_steps=4", "ckpt_path=auto", change]))


def test_a_resume_may_change_how_it_trains_and_says_so(tmp_path, caplog):
    run_steps(tmp_path, 2)
    with caplog.at_level("INFO", logger="pdestream"):
        resumed = run_steps(tmp_path, 4, "ckpt_path=auto", "data.batch_size=16", "optimizer.lr=0.0005")
    assert "resuming with changes: " in caplog.text
    assert "data.batch_size 32 → 16" in caplog.text and "optimizer.lr 0.003 → 0.0005" in caplog.text
    assert resumed["global_step"] == 4


def test_the_thread_count_is_recorded_and_a_resume_under_auto_uses_it(tmp_path, monkeypatch):
    run_steps(tmp_path, 2)
    recorded = torch.load(last(tmp_path), weights_only=True)["callbacks"]["ThreadBudget"]["threads"]
    assert recorded == torch.get_num_threads() == 1  # conftest: OMP_NUM_THREADS=1
    checkpoint = torch.load(last(tmp_path), weights_only=True)
    checkpoint["callbacks"]["ThreadBudget"]["threads"] = 2
    AtomicCheckpointIO().save_checkpoint(checkpoint, last(tmp_path))
    monkeypatch.delenv("OMP_NUM_THREADS")
    run = build(compose_train([*default_data(tmp_path), "trainer.max_steps=4", "ckpt_path=auto"]))
    budget = next(c for c in run.trainer.callbacks if type(c).__name__ == "ThreadBudget")
    assert budget.threads == 2 and torch.get_num_threads() == 2
    run.run_dir.release()
    torch.set_num_threads(1)


def test_ctrl_c_saves_like_sigterm(tmp_path):
    with pytest.raises(Stopped, match=r"stopped by SIGINT after step \d+") as stop:
        run_steps(tmp_path, 30, callbacks=(SendSignal(signal.SIGINT, 3),))
    assert 128 + stop.value.signum == 130
    step = int(re.search(r"after step (\d+)", str(stop.value)).group(1))
    assert 3 < step < 10 and torch.load(last(tmp_path), weights_only=True)["global_step"] == step


# --------------------------------------------------------------------------- command-line slips
@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["seed=abc"], r"seed='abc' is not allowed; give an int >= 0 or null"),
        (["data.nosuchkey=1"], r"data.nosuchkey=1: no such setting; data has: _target_, .*batch_size"),
        (["+foo=1"], r"\+foo=1 adds a top-level key that nothing reads; the top-level settings are: seed, "),
    ],
)
def test_command_line_slips_are_one_sentence(overrides, pattern, tmp_path):
    assert_one_sentence(run_cli(*tiny(tmp_path), *overrides, timeout=120), "configuration error", pattern)


def test_evaluation_writes_its_test_set_to_its_own_cache_not_the_checkpoints(tmp_path):
    fit(compose_train([*tiny(tmp_path), "trainer.max_steps=2", "trainer.val_check_interval=2"]))
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "cache").write_text("the training run's cache_dir, now a file")
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"checkpoints=[{tmp_path / 'run'}]",
            f"cache_dir={tmp_path / 'eval-cache'}",
            f"output_dir={tmp_path / 'report'}",
            "solver_baseline.enabled=false",
            "bootstrap.num_resamples=10",
            "timing.repeats=1",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'report'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "eval-cache").glob("*.h5")) and (tmp_path / "report" / "metrics.nc").is_file()
