"""The training job: config tree, every pde × model, exact resume, DDP, and bad-config messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from models.stopping import Stopped
from models.training import RunConfigError, build

ROOT = Path(__file__).resolve().parents[1]
PDES = ["ks", "burgers", "navier_stokes", "kolmogorov"]
MODELS = ["fno-small", "unet-small", "sinenet-small", "lsm-small", "pde_refiner-small"]


def tiny(tmp: Path) -> list[str]:
    """Overrides that make any run take seconds: a 32-point grid, short trajectories, small buffers."""
    return [
        "logger=none",
        "callbacks.progress=null",
        "validate_untrained=false",
        "pde.n=32",
        "pde.burn_in=0",
        "data.num_workers=0",
        "data.rollout_steps=10",
        "data.solver_batch=2",
        "data.batch_size=4",
        "data.stats_trajectories=2",
        "data.num_val_trajectories=2",
        "data.num_test_trajectories=2",
        "data.buffer.capacity=64",
        "data.buffer.watermark=8",
        "scheduler.warmup_steps=1",
        "trainer.log_every_n_steps=1",
        f"data.cache_dir={tmp / 'cache'}",
        f"paths.output_dir={tmp / 'run'}",
        f"hydra.run.dir={tmp / 'run'}",
    ]


def compose_train(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- every pde × model
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("pde", PDES)
def test_fast_dev_run_every_pde_and_model(pde, model, tmp_path):
    cfg = compose_train([f"pde={pde}", f"model={model}", "trainer.fast_dev_run=true", *tiny(tmp_path)])
    run = build(cfg)
    assert run.module.net.ndim == (2 if pde in ("navier_stokes", "kolmogorov") else 1)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    loss = run.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    assert "val/corr_time" in run.trainer.callback_metrics


# --------------------------------------------------------------------------- the default run
def test_default_run_end_to_end(tmp_path):
    """`python train.py` shortened: trains, validates, writes best/last checkpoints and the config."""
    overrides = [o for o in tiny(tmp_path) if not o.startswith(("logger=", "validate_untrained"))]
    result = run_cli(*overrides, "logger=csv", "trainer.max_steps=12", "trainer.val_check_interval=6")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    metrics = next(run_dir.glob("csv/*/metrics.csv")).read_text()
    for key in ("train/loss", "val/corr_time", "perf/samples_per_s", "perf/data_wait_fraction", "lr-AdamW"):
        assert key in metrics, key
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["config"]["pde"]["_target_"].endswith("KuramotoSivashinsky")
    assert any(k.startswith("normalizer.") for k in ckpt["state_dict"])


def test_rollout_figure_reaches_an_image_logger(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    class ImageLogger(CSVLogger):
        def __init__(self, save_dir: str) -> None:
            super().__init__(save_dir)
            self.images: list[tuple[str, list[str], int]] = []

        def log_image(self, key: str, images: list[str], step: int) -> None:
            assert Path(images[0]).stat().st_size > 10_000  # a real PNG, still on disk while logged
            self.images.append((key, images, step))

    cfg = compose_train([*tiny(tmp_path), "trainer.max_steps=4", "trainer.val_check_interval=2"])
    run = build(cfg)
    logger = ImageLogger(str(tmp_path / "logs"))
    run.trainer._loggers = [logger]
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert [(key, step) for key, _, step in logger.images] == [("val/rollout", 2), ("val/rollout", 4)]


def test_bf16_mixed_precision_trains(tmp_path):
    cfg = compose_train([*tiny(tmp_path), "trainer.fast_dev_run=true", "trainer.precision=bf16-mixed"])
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])


def test_local_multirun_sweep(tmp_path):
    overrides = [o for o in tiny(tmp_path) if not o.startswith(("hydra.run.dir", "paths.output_dir"))]
    result = run_cli(
        "-m",
        "model=fno-small,unet-small",
        *overrides,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "checkpoints" / "last.ckpt").is_file()


# --------------------------------------------------------------------------- exact resume
def default_data(tmp: Path) -> list[str]:
    """:func:`tiny` (a 32-point grid, 10-frame trajectories), but the default buffer and batches: a
    16384-window reservoir buffer with watermark 4096, 32 trajectories per solver call, batches of 32."""
    data_keys = ("data.solver_batch", "data.batch_size", "data.buffer")
    return [o for o in tiny(tmp) if not o.startswith(data_keys)]


def run_steps(tmp: Path, steps: int, *extra: str, callbacks: tuple = ()) -> dict:
    """Train ``steps`` steps of the default-data run in ``tmp`` (validation every 10) and return last.ckpt."""
    overrides = [
        *default_data(tmp),
        f"trainer.max_steps={steps}",
        "scheduler.total_steps=30",  # the same schedule whether the run stops early or not
        "trainer.val_check_interval=10",
        *extra,
    ]
    run = build(compose_train(overrides))
    run.trainer.callbacks.extend(callbacks)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
    return torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def differences(a: dict, b: dict) -> tuple[int, int]:
    """Weight tensors (raw and EMA) and optimizer entries that differ between two checkpoints."""
    weights = sum(
        not torch.equal(a[key][name], b[key][name])
        for key in ("state_dict", "current_model_state")
        for name in a[key]
        if isinstance(a[key][name], torch.Tensor)
    )
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    optimizer = sum(
        not torch.equal(torch.as_tensor(opt_a[i][k]), torch.as_tensor(opt_b[i][k]))
        for i in opt_a
        for k in opt_a[i]
    )
    return weights, optimizer


class SendSignal(pl.Callback):
    """Sends ``signum`` to this process during training step ``step``."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_resume_is_bit_exact_with_the_default_buffer(tmp_path):
    """Killed after a validation checkpoint, or stopped by SIGUSR1 between checkpoints, and resumed:
    weights, EMA, optimizer and schedule equal the uninterrupted run's (default reservoir buffer)."""
    straight = run_steps(tmp_path / "straight", 30)
    killed = tmp_path / "killed"
    run_steps(killed, 10)  # as if killed after the step-10 last.ckpt
    resumed = run_steps(killed, 30, f"ckpt_path={killed / 'run' / 'checkpoints' / 'last.ckpt'}")
    stopped = tmp_path / "stopped"
    with pytest.raises(Stopped, match="stopped by SIGUSR1 after step 15"):
        run_steps(stopped, 30, callbacks=(SendSignal(signal.SIGUSR1, 13),))
    assert torch.load(stopped / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 15
    continued = run_steps(stopped, 30, "ckpt_path=auto")
    for other in (resumed, continued):
        assert other["global_step"] == straight["global_step"] == 30
        assert differences(straight, other) == (0, 0)
        assert straight["lr_schedulers"][0]["last_epoch"] == other["lr_schedulers"][0]["last_epoch"]
    assert differences(straight, run_steps(tmp_path / "other_seed", 30, "data.seed=1"))[0] > 0  # it can fail


def test_auto_resume_picks_the_run_directory_checkpoint(tmp_path):
    from models.training import resume_path

    cfg = compose_train([*tiny(tmp_path), "ckpt_path=auto"])
    assert resume_path(cfg) is None  # a fresh run directory: start from scratch
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert resume_path(cfg) == str(last)


# --------------------------------------------------------------------------- DDP on CPU
@pytest.mark.timeout(400)
def test_two_process_cpu_ddp(tmp_path):
    overrides = [o for o in tiny(tmp_path) if not o.startswith("callbacks.progress")]
    result = run_cli(
        *overrides,
        "callbacks.progress=null",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        timeout=380,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 4
    stream = ckpt["datamodule_state"] if "datamodule_state" in ckpt else ckpt["OnlineDataModule"]
    assert int(stream["stream"]["num_shards"]) == 2  # both ranks generated, as disjoint shards


# --------------------------------------------------------------------------- bad configuration
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.modes=40"], "model"),
        (["pde.nu=-1.0"], "nu"),
        (["pde=navier_stokes", "pde.dt=2.0"], "dt"),
        (["ckpt_path=/nonexistent/last.ckpt"], "no such checkpoint"),
        (["model=unet-small", "pde.n=34"], "model"),
        (["data.buffer.policy=lifo"], "policy"),
        (["trainer.max_steps=1", "scheduler.warmup_steps=5"], "warmup_steps"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, message, tmp_path):
    with pytest.raises(RunConfigError, match=message):
        build(compose_train([*tiny(tmp_path), *overrides]))


def test_cli_reports_errors_in_one_line_without_traceback(tmp_path):
    unknown = run_cli("model=nope", *tiny(tmp_path), timeout=120)
    assert unknown.returncode != 0
    assert "model/nope" in unknown.stderr and "Traceback" not in unknown.stderr
    bad = run_cli("pde.nu=-1.0", *tiny(tmp_path), timeout=120)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr + bad.stdout
    errors = [line for line in (bad.stderr + bad.stdout).splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "nu" in errors[0]
