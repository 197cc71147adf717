"""The training job: config tree, every pde × model, exact resume, DDP, and bad-config messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from models.training import RunConfigError, build, fit

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
    """`python train.py` shortened: trains, validates, writes best/last checkpoints and the config; with
    output to a file (not a terminal) it prints plain progress lines, which also reach train.log."""
    overrides = [
        o for o in tiny(tmp_path) if not o.startswith(("logger=", "validate_untrained", "callbacks."))
    ]
    result = run_cli(
        *overrides,
        "logger=csv",
        "trainer.max_steps=12",
        "trainer.val_check_interval=6",
        "callbacks.progress.every_s=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    log = (run_dir / "train.log").read_text()
    for line in (
        "step 1/12 (8%) · loss ",
        "step 12/12 (100%) · loss ",
        "validation at step 6 ",
        "validation at step 12 ",
    ):
        assert line in result.stdout and line in log, line
    assert "samples/s" in log and "left" in log and "val/corr_time" in log
    assert "generating val split" in log and "filling the replay buffer: done" in log
    for noise in ("Tip", "Total FLOPs", "GPU available", "Logging error", "━"):
        assert noise not in result.stdout + result.stderr, noise
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


@pytest.mark.parametrize("pde", PDES)
def test_generated_files_hold_the_frames_training_uses(pde, tmp_path):
    """The README's offline recipe: `python -m data.generate pde=…` writes frames at the interval and
    length that `python train.py pde=… data=offline` trains and validates on."""
    train = compose_train([f"pde={pde}", *tiny(tmp_path)])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        generate = compose("generate", overrides=[f"pde={pde}"], return_hydra_config=True)
    HydraConfig().set_config(generate)
    assert generate.dt_out == train.data.dt_out
    assert generate.rollout == compose_train([f"pde={pde}"]).data.rollout_steps


# --------------------------------------------------------------------------- short runs
def test_run_shorter_than_its_validation_interval_ends_validated_with_checkpoints(tmp_path):
    results = fit(compose_train([*tiny(tmp_path), "trainer.max_steps=3", "trainer.val_check_interval=500"]))
    assert "val/corr_time" in results
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 3
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_last_step_validates_once_when_it_is_a_validation_step(tmp_path):
    cfg = compose_train([*tiny(tmp_path), "trainer.max_steps=4", "trainer.val_check_interval=2"])
    run = build(cfg)
    steps = []
    run.module.on_validation_epoch_start = lambda: steps.append(run.trainer.global_step)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert steps == [2, 4]


def test_twenty_step_run_with_the_default_warmup(tmp_path, caplog):
    overrides = [o for o in tiny(tmp_path) if not o.startswith("scheduler.")]
    with caplog.at_level("INFO", logger="pdestream"):
        fit(compose_train([*overrides, "trainer.max_steps=20", "trainer.val_check_interval=20"]))
    assert "warmup_steps=50 is more than half of total_steps=20; warming up over 2 steps" in caplog.text
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 20


def test_warmup_is_capped_at_a_tenth_of_a_short_run():
    from models.module import warmup_cosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    capped = warmup_cosine(opt, warmup_steps=50, total_steps=20).lr_lambdas[0]
    assert [capped(s) for s in (0, 1)] == [0.5, 1.0]  # two warm-up steps, then the cosine from 1
    assert capped(20) == pytest.approx(0.01)
    kept = warmup_cosine(opt, warmup_steps=50, total_steps=3000).lr_lambdas[0]
    assert kept(0) == pytest.approx(1 / 50) and kept(49) == 1.0 and kept(50) == 1.0


def test_fast_dev_run_skips_the_untrained_validation_and_shrinks_the_data(tmp_path):
    overrides = [o for o in tiny(tmp_path) if not o.startswith(("validate_untrained", "data."))]
    cfg = compose_train([*overrides, "trainer.fast_dev_run=true", f"data.cache_dir={tmp_path}"])
    assert cfg.validate_untrained is True and cfg.data.num_val_trajectories == 32
    results = fit(cfg)
    assert "untrained/corr_time" not in results and "val/corr_time" in results
    run = build(cfg)
    assert run.datamodule.batch_size == 4 and run.datamodule.num_rollouts == {"val": 2, "test": 2}
    assert run.datamodule.rollout_steps == 4 + 1 + 4


def test_thread_budget_shares_the_cpus_with_registered_runs(tmp_path):
    from models.callbacks import ThreadBudget
    from solvers.threads import Registry, affinity, available_cpus, cgroup_quota

    before = torch.get_num_threads()
    registry = Registry(tmp_path / "runs")
    registry.register(1, pid=os.getppid())  # another live run on this machine
    try:
        budget = ThreadBudget(registry=registry)
        assert torch.get_num_threads() == max(1, available_cpus(affinity(), cgroup_quota()) // 2)
        assert registry.processes() == 2
        budget.teardown()
        assert registry.processes() == 1
        ThreadBudget(threads=3, registry=registry)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


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
def _final_state(tmp: Path, steps: int, ckpt: Path | None = None) -> dict:
    # fifo with capacity = one solver call: every batch is a pure function of the stream position
    overrides = [
        *tiny(tmp),
        "data.buffer.policy=fifo",
        "data.buffer.capacity=15",
        "data.rollout_steps=10",  # 2 trajectories × 6 windows = 12 = 3 batches per solver call
        "data.time_history=4",
        "module.input_noise=0.01",  # draws from the RNG that the checkpoint must restore
        f"trainer.max_steps={steps}",
        "scheduler.total_steps=6",  # the same schedule whether the run stops at 3 or 6
        "trainer.val_check_interval=3",
    ]
    if ckpt is not None:
        overrides.append(f"ckpt_path={ckpt}")
    fit(compose_train(overrides))
    return torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def test_resume_equals_uninterrupted(tmp_path):
    straight = _final_state(tmp_path / "straight", 6)
    _final_state(tmp_path / "first", 3)
    resumed = _final_state(
        tmp_path / "second", 6, ckpt=tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    )
    assert resumed["global_step"] == straight["global_step"] == 6
    for key in ("state_dict", "current_model_state"):  # EMA weights and the raw weights
        for name, value in straight[key].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(resumed[key][name], value, msg=f"{key}/{name}")
            else:
                assert resumed[key][name] == value, name
    opt_a, opt_b = straight["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    for i in opt_a:
        torch.testing.assert_close(opt_b[i]["exp_avg"], opt_a[i]["exp_avg"])
    assert straight["lr_schedulers"][0]["last_epoch"] == resumed["lr_schedulers"][0]["last_epoch"]


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
        (["pde=navier_stokes", "pde.cfl=2.0"], "cfl"),
        (["pde=navier_stokes", "pde.n_solve=48"], "n_solve"),
        (["ckpt_path=/nonexistent/last.ckpt"], "no such checkpoint"),
        (["model=unet-small", "pde.n=34"], "model"),
        (["data.buffer.policy=lifo"], "policy"),
        (["scheduler.warmup_steps=-1"], "warmup_steps"),
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
