"""The training job: config tree, every pde × model, exact resume, DDP, and bad-config messages."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from data.normalize import Normalizer
from models.base import SurrogateNet
from training.module import SurrogateModule
from training.run import RunConfigError, build, fit
from training.stopping import Stopped

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
        "data.frames=10",
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


def any_scheduler(tmp: Path) -> list[str]:
    """:func:`tiny` without its warm-up override, which only the default scheduler has."""
    return [o for o in tiny(tmp) if not o.startswith("scheduler.")]


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
    for key in (
        "train/loss",
        "val/corr_time",
        "perf/samples_per_s",
        "perf/data_wait_fraction",
        "lr-AdamW",
        "stream/buffer_fill",
    ):
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


@pytest.mark.parametrize("generation", ["device", "cpu"])
def test_stream_statistics_reach_the_csv_log(generation, tmp_path):
    """Buffer fill, windows inserted, reuse and trajectories generated/diverged are logged as stream/*
    every log step, also when DataLoader workers generate (their counters come with the batches)."""
    overrides = [o for o in tiny(tmp_path) if not o.startswith(("logger=", "data.num_workers"))]
    workers = "data.num_workers=1" if generation == "cpu" else "data.num_workers=0"
    cfg = compose_train([*overrides, "logger=csv", f"data.generation={generation}", workers])
    cfg.trainer.max_steps = cfg.trainer.val_check_interval = 4
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    rows = list(csv.DictReader(next((tmp_path / "run").glob("csv/*/metrics.csv")).open()))
    logged = [{k: float(v) for k, v in row.items() if k.startswith("stream/") and v} for row in rows]
    logged = [row for row in logged if row]
    assert len(logged) == 4  # log_every_n_steps=1
    windows = run.datamodule.stream.windows_per_trajectory
    for step, row in enumerate(logged, start=1):
        assert row["stream/trajectories"] >= 2
        assert row["stream/diverged"] == row["stream/diverged_fraction"] == 0
        assert row["stream/windows_inserted"] == row["stream/trajectories"] * windows
        assert row["stream/samples_served"] == 4 * step  # batch_size 4
        reuse = row["stream/samples_served"] / row["stream/windows_inserted"]
        assert row["stream/reuse_mean"] == pytest.approx(reuse, rel=1e-6)  # logged as float32
        assert 1 <= row["stream/reuse_max"] <= step
        assert 0 < row["stream/buffer_fill"] <= 1
        assert row["stream/evicted_unseen"] >= 0


def test_adaptive_sampling_learns_logs_its_histogram_and_checkpoints_its_state(tmp_path):
    """data.sampling=adaptive on KS with ν ∈ [0.5, 1.5]: the sampler learns from every step's per-sample
    losses, the drawn shares and probabilities reach the log after validation, the state the checkpoint."""
    overrides = [o for o in tiny(tmp_path) if not o.startswith("logger=")]
    cfg = compose_train(
        [*overrides, "logger=csv", "pde.nu=[0.5,1.5]", "data.sampling=adaptive", "data.adaptive.bins=4"]
    )
    cfg.trainer.max_steps = cfg.trainer.val_check_interval = 6
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    sampler = run.datamodule.sampler
    assert not sampler.loss.isnan().all() and not torch.allclose(
        sampler.probs, torch.full((4,), 0.25).double()
    )
    rows = list(csv.DictReader(next((tmp_path / "run").glob("csv/*/metrics.csv")).open()))
    drawn = {k: float(v) for row in rows for k, v in row.items() if k.startswith("sampling/drawn/") and v}
    probs = {k: float(v) for row in rows for k, v in row.items() if k.startswith("sampling/prob/") and v}
    assert list(drawn) == [
        f"sampling/drawn/nu={a}-{b}"
        for a, b in (("0.5", "0.75"), ("0.75", "1"), ("1", "1.25"), ("1.25", "1.5"))
    ]
    assert sum(drawn.values()) == pytest.approx(1.0, rel=1e-5) and sum(probs.values()) == pytest.approx(
        1.0, rel=1e-5
    )
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    stored = state["OnlineDataModule"]["sampler"]  # Lightning keeps a DataModule's state under its class name
    assert stored["mode"] == "adaptive" and torch.equal(stored["loss"].isnan(), sampler.loss.isnan())


@pytest.mark.parametrize("pde", PDES)
def test_generated_files_hold_the_frames_training_uses(pde, tmp_path):
    """The offline recipe of docs/data.md: `python -m data.generate pde=…` writes frames at the interval and
    length that `python train.py pde=… data=offline` trains and validates on."""
    train = compose_train([f"pde={pde}", *tiny(tmp_path)])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        generate = compose("generate", overrides=[f"pde={pde}"], return_hydra_config=True)
    HydraConfig().set_config(generate)
    assert generate.pde.dt_out == train.pde.dt_out is not None
    assert generate.frames == compose_train([f"pde={pde}"]).data.frames


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
    with caplog.at_level("INFO", logger="pdestream"):
        fit(
            compose_train([*any_scheduler(tmp_path), "trainer.max_steps=20", "trainer.val_check_interval=20"])
        )
    assert "warmup_steps=50 is more than half of total_steps=20; warming up over 2 steps" in caplog.text
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 20


def test_warmup_is_capped_at_a_tenth_of_a_short_run():
    from training.module import warmup_cosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    capped = warmup_cosine(opt, warmup_steps=50, total_steps=20).lr_lambdas[0]
    assert [capped(s) for s in (0, 1)] == [0.5, 1.0]  # two warm-up steps, then the cosine from 1
    assert capped(20) == pytest.approx(0.01)
    kept = warmup_cosine(opt, warmup_steps=50, total_steps=3000).lr_lambdas[0]
    assert kept(0) == pytest.approx(1 / 50) and kept(49) == 1.0 and kept(50) == 1.0


# --------------------------------------------------------------------------- optimizers and schedulers
@pytest.mark.parametrize(
    ("overrides", "lrs"),
    [
        # StepLR in optimizer steps: ×0.5 every step_size steps (the FNO recipe at step_size 5000)
        (
            ["scheduler=step", "scheduler.step_size=3", "optimizer.lr=1e-3"],
            [1e-3] * 3 + [5e-4] * 3 + [2.5e-4],
        ),
        # PDEArena's cosine without warm-up: eta_min + (lr − eta_min)(1 + cos(π s / T)) / 2, T = max_steps
        (
            ["scheduler=cosine", "optimizer.lr=1e-4", "trainer.max_steps=4"],
            [
                1e-4,
                1e-6 + 99e-6 * (1 + math.cos(math.pi / 4)) / 2,
                5.05e-5,
                1e-6 + 99e-6 * (1 - math.cos(math.pi / 4)) / 2,
                1e-6,
            ],
        ),
        (["scheduler=none", "optimizer.lr=2e-3"], [2e-3] * 4),
    ],
)
def test_scheduler_options_give_their_learning_rates_per_optimizer_step(overrides, lrs, tmp_path):
    cfg = compose_train([*any_scheduler(tmp_path), *overrides])
    optimizer = hydra.utils.instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer) if cfg.scheduler else None
    seen = []
    for _ in lrs:
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    assert seen == pytest.approx(lrs, rel=1e-9)


@pytest.mark.parametrize(
    ("optimizer", "theta"),
    [
        # L2: the decay enters the gradient, so Adam's first step is lr · g / (|g| + eps) with g = wd · θ
        ("adam", 1 - 1e-3 * 1e-4 / (1e-4 + 1e-8)),
        # decoupled: θ ← θ (1 − lr · wd), and a zero gradient moves nothing else
        ("adamw", 1 - 1e-3 * 1e-4),
    ],
)
def test_adam_decays_the_weights_through_the_gradient_and_adamw_apart_from_it(optimizer, theta, tmp_path):
    cfg = compose_train(
        [*tiny(tmp_path), f"optimizer={optimizer}", "optimizer.lr=1e-3", "optimizer.weight_decay=1e-4"]
    )
    param = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    step = hydra.utils.instantiate(cfg.optimizer)([param])
    param.grad = torch.zeros_like(param)
    step.step()
    assert param.item() == pytest.approx(theta, rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scheduler=step", "scheduler.step_size=0"],
            r"scheduler.step_size=0 is not allowed; allowed: an int >= 1",
        ),
        (["scheduler=step", "scheduler.gamma=0"], r"scheduler.gamma=0 is not allowed"),
        (["scheduler=cosine", "scheduler.eta_min=-1"], r"scheduler.eta_min=-1 is not allowed"),
    ],
)
def test_bad_scheduler_settings_are_one_clear_error(overrides, message, tmp_path):
    with pytest.raises(RunConfigError, match=f"optimizer/scheduler: {message}"):
        build(compose_train([*any_scheduler(tmp_path), *overrides]))


def test_run_without_a_scheduler_keeps_its_learning_rate(tmp_path):
    run = build(compose_train([*any_scheduler(tmp_path), "scheduler=none", "optimizer=adam"]))
    assert isinstance(run.module.configure_optimizers(), torch.optim.Adam)


# --------------------------------------------------------------------------- training objective
SCALE, BATCH, POINTS = 0.9, 3, 8  # the network's factor a, samples and grid points of the test batches


class LastFrameScale(SurrogateNet):
    """``a ·`` the last input frame: a one-parameter network whose unrolled losses have closed forms."""

    def __init__(self, ndim: int = 1, channels: int = 1, time_history: int = 2, time_future: int = 1) -> None:
        super().__init__(ndim, channels, time_history, time_future)
        self.a = torch.nn.Parameter(torch.tensor(SCALE, dtype=torch.float64))

    def _forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.a * x[:, -1:]


def scale_module(**module_options) -> SurrogateModule:
    """The module around :class:`LastFrameScale`, with an identity normaliser and direct (not difference) targets."""
    identity = Normalizer(
        torch.zeros(1), torch.ones(1), [], torch.zeros(1), torch.ones(1), torch.zeros(1, dtype=torch.bool)
    )
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    return SurrogateModule(LastFrameScale(), identity, optimizer, predict_difference=False, **module_options)


def objective_batch(steps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 2, 1, POINTS, generator=g, dtype=torch.float64)
    y = torch.randn(BATCH, steps, 1, POINTS, generator=g, dtype=torch.float64)
    return {"x": x, "y": y, "params": {}, "dt": torch.ones(BATCH, dtype=torch.float64)}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_fno_loss_sums_the_per_sample_relative_l2_over_steps_and_batch():
    """fourier_2d_time.py: ``loss += LpLoss(size_average=False)(im, y)`` for every fed-back step ``t``."""
    steps = 4
    batch = objective_batch(steps)
    module = scale_module(loss="rel_l2", reduction="sum", unroll_steps=steps - 1, unroll_grad=True)
    out = module.training_step(batch, 0)
    last, y = batch["x"][:, -1, 0], batch["y"][:, :, 0]  # step k predicts a^k · last
    errors = [SCALE**k * last - y[:, k - 1] for k in range(1, steps + 1)]
    norms = [y[:, k - 1].norm(dim=-1) for k in range(1, steps + 1)]
    per_sample = sum(e.norm(dim=-1) / n for e, n in zip(errors, norms, strict=True))
    torch.testing.assert_close(out["sample_losses"], per_sample)
    torch.testing.assert_close(out["loss"], per_sample.sum())
    assert not out["sample_losses"].requires_grad
    out["loss"].backward()  # d/da of Σ_b Σ_k ‖a^k x − y_k‖ / ‖y_k‖
    grad = sum(
        k * SCALE ** (k - 1) * (e * last).sum(-1) / (e.norm(dim=-1) * n)
        for k, e, n in zip(range(1, steps + 1), errors, norms, strict=True)
    ).sum()
    torch.testing.assert_close(module.net.a.grad, grad)
    mean = scale_module(loss="rel_l2", unroll_steps=steps - 1, unroll_grad=True).training_step(batch, 0)
    torch.testing.assert_close(mean["loss"], per_sample.sum() / (steps * BATCH))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_unrolled_training_backpropagates_to_the_first_input_through_every_step():
    steps = 4
    batch = objective_batch(steps)
    last = batch["x"][:, -1].clone()
    for k in range(1, steps):  # the first steps hit their targets: only the last step has a loss
        batch["y"][:, k - 1] = SCALE**k * last
    batch["x"].requires_grad_()
    module = scale_module(loss="mse", unroll_steps=steps - 1, unroll_grad=True)
    module.training_step(batch, 0)["loss"].backward()
    # loss = mean_b ‖a^4 x_b − y_b4‖² / (POINTS · steps): its gradient reaches x through all four calls
    expected = 2 / (POINTS * steps * BATCH) * SCALE**steps * (SCALE**steps * last - batch["y"][:, -1])
    torch.testing.assert_close(batch["x"].grad[:, -1], expected)
    assert not batch["x"].grad[:, 0].any()  # the network reads only the last frame


def test_a_bad_reduction_is_refused_with_one_sentence():
    with pytest.raises(ValueError, match=r"module.reduction='max' is not allowed; allowed: mean, sum"):
        scale_module(reduction="max")


def test_fast_dev_run_skips_the_untrained_validation_and_shrinks_the_data(tmp_path):
    overrides = [o for o in tiny(tmp_path) if not o.startswith(("validate_untrained", "data."))]
    cfg = compose_train([*overrides, "trainer.fast_dev_run=true", f"data.cache_dir={tmp_path}"])
    assert cfg.validate_untrained is True and cfg.data.num_val_trajectories == 32
    results = fit(cfg)
    assert "untrained/corr_time" not in results and "val/corr_time" in results
    run = build(cfg)
    assert run.datamodule.batch_size == 4 and run.datamodule.num_rollouts == {"val": 2, "test": 2}
    assert run.datamodule.time_grid.frames == 4 + 1 + 1  # a window and one more frame: two rollout steps


def test_thread_budget_shares_the_cpus_with_registered_runs(tmp_path):
    from solvers.threads import Registry, affinity, available_cpus, cgroup_quota
    from training.callbacks import ThreadBudget

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
        assert (
            json.loads((tmp_path / "sweep" / job / "results.json").read_text())["monitor"] == "val/corr_time"
        )
    # one table across the jobs: the override that differs, the best score, wall time, run directory
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert rows[0] == "| job | model | best val/corr_time | wall time | run directory |"
    assert re.match(r"\| 0 \| fno-small \| [\d.e+-]+( \(best\))? \| \d+ s \| .*sweep/0 \|$", rows[1]), rows[1]
    assert re.match(r"\| 1 \| unet-small \| ", rows[2]) and len(rows) == 3
    assert summary.count("(best)") == 1 and rows[0] in result.stdout


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


def test_adaptive_sampling_resumes_bit_exact(tmp_path):
    """With data.sampling=adaptive the sampler learns every step; a run killed after its step-10 checkpoint
    and resumed draws the same parameters and ends with the uninterrupted run's weights and sampler."""
    adaptive = ("pde.nu=[0.5,1.5]", "data.sampling=adaptive", "data.adaptive.bins=4")
    straight = run_steps(tmp_path / "straight", 20, *adaptive)
    killed = tmp_path / "killed"
    run_steps(killed, 10, *adaptive)
    resumed = run_steps(killed, 20, *adaptive, f"ckpt_path={killed / 'run' / 'checkpoints' / 'last.ckpt'}")
    assert resumed["global_step"] == straight["global_step"] == 20
    assert differences(straight, resumed) == (0, 0)
    a, b = straight["OnlineDataModule"]["sampler"], resumed["OnlineDataModule"]["sampler"]
    assert torch.equal(a["loss"], b["loss"]) and not a["loss"].isnan().all()


def test_resuming_a_finished_run_says_nothing_is_left_and_logs_cleanly(tmp_path, caplog):
    """No step is left to train: the resume says so; the summary line must not format a missing score
    (pytest's log capture raises on a logging error)."""
    run_steps(tmp_path / "done", 3)
    overrides = [*default_data(tmp_path / "again"), "trainer.max_steps=3", "scheduler.total_steps=30"]
    with caplog.at_level("INFO"):
        results = fit(
            compose_train(
                [*overrides, f"ckpt_path={tmp_path / 'done' / 'run' / 'checkpoints' / 'last.ckpt'}"]
            )
        )
    assert "train/loss" not in results
    assert re.search(r"has trained 3 steps, trainer.max_steps=3: nothing left to train", caplog.text)
    assert "no best.ckpt written" in caplog.text  # the best model is the other directory's


def test_auto_resume_picks_the_run_directory_checkpoint(tmp_path):
    from training.rundir import resume_source

    run = tmp_path / "run"
    assert resume_source("auto", run) is None  # a fresh run directory: start from scratch
    run_steps(tmp_path, 2)
    assert resume_source("auto", run) == str(run / "checkpoints" / "last.ckpt")


# --------------------------------------------------------------------------- DDP on CPU
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def ddp_run(tmp: Path, steps: int, *extra: str) -> dict:
    result = run_cli(
        *default_data(tmp),
        *DDP,
        f"trainer.max_steps={steps}",
        "scheduler.total_steps=8",
        "trainer.val_check_interval=4",
        *extra,
        timeout=380,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("model: FNO") == 1  # informational lines from rank 0 only
    assert "sync_dist" not in output
    return torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


@pytest.mark.timeout(600)
def test_two_rank_ddp_resume_is_bit_exact(tmp_path):
    """2-rank gloo DDP with the default buffer: the checkpoint holds both ranks' streams, and a resumed
    run ends with the uninterrupted run's weights and optimizer state."""
    straight = ddp_run(tmp_path / "straight", 8)
    first = ddp_run(tmp_path / "first", 4)
    shards = first["OnlineDataModule"]["stream"]["shards"]
    assert first["OnlineDataModule"]["stream"]["num_shards"] == 2 and sorted(shards) == [0, 1]
    assert all(s["batches"] == 4 and s["snapshot"] is not None for s in shards.values())
    resumed = ddp_run(tmp_path / "first", 8, "ckpt_path=auto")
    assert resumed["global_step"] == straight["global_step"] == 8
    assert differences(straight, resumed) == (0, 0)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_diverging_ddp_rank_stops_every_rank_with_one_sentence(tmp_path):
    # |u| > 2 counts as blown up: about 3 of 4 training trajectories, after the validation set is made
    result = run_cli(*tiny(tmp_path), *DDP, "pde.blowup=2.0", "trainer.max_steps=50", timeout=380)
    assert_one_sentence(
        result, "configuration error", r"\d+ of 16 trajectories diverged .*max_divergence_fraction"
    )


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ddp_spawn_trains(tmp_path):
    """The strategy docs/training.md suggests for local sweeps: the module and callbacks must pickle."""
    result = run_cli(
        *tiny(tmp_path),
        *DDP,
        "trainer.strategy=ddp_spawn",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


# --------------------------------------------------------------------------- stop signals
def test_sigterm_writes_a_resumable_checkpoint_and_exits_nonzero(tmp_path):
    overrides = [*tiny(tmp_path), "trainer.max_steps=100000", "trainer.val_check_interval=2"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "train.py", *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)  # training is under way once validation wrote last.ckpt at step 2
    process.send_signal(signal.SIGTERM)
    output = b"".join(process.communicate(timeout=120)).decode()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output and re.search(
        r"stopped by SIGTERM after step \d+; .*last.ckpt holds the run", output
    )
    step = torch.load(last, weights_only=True)["global_step"]
    assert step > 2  # written at the step after the signal, not the validation's
    resumed = run_cli(
        *tiny(tmp_path),
        f"trainer.max_steps={step + 2}",
        f"trainer.val_check_interval={step + 2}",
        "ckpt_path=auto",
        "scheduler.total_steps=100000",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == step + 2


# --------------------------------------------------------------------------- bad configuration
def garbage_checkpoint(tmp: Path) -> Path:
    path = tmp / "garbage.ckpt"
    path.write_bytes(os.urandom(3000))
    return path


def truncated_checkpoint(tmp: Path) -> Path:
    """The first half of a real training checkpoint (a job killed while writing it)."""
    fit(compose_train([*tiny(tmp / "source"), "trainer.max_steps=2", "trainer.val_check_interval=2"]))
    full = (tmp / "source" / "run" / "checkpoints" / "last.ckpt").read_bytes()
    path = tmp / "truncated.ckpt"
    path.write_bytes(full[: len(full) // 2])
    return path


def other_model_checkpoint(tmp: Path) -> Path:
    fit(compose_train([*tiny(tmp / "source"), "trainer.max_steps=2", "trainer.val_check_interval=2"]))
    return tmp / "source" / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.modes=40"], "model"),
        (["pde.nu=-1.0"], "nu"),
        (
            ["pde.dt_out=null"],
            r"data: pde\.dt_out is missing for KuramotoSivashinsky: give the output interval",
        ),
        (
            ["pde.dt_out=0.3"],
            r"dt_out=0\.3 is not allowed: it must be a positive multiple of the solver's dt=0\.25",
        ),
        (["pde=navier_stokes", "pde.cfl=2.0"], "cfl"),
        (["pde=navier_stokes", "pde.n_solve=48"], "n_solve"),
        (["ckpt_path=/nonexistent/last.ckpt"], "no such checkpoint"),
        (["model=unet-small", "pde.n=34"], "model"),
        (["data.buffer.policy=lifo"], "policy"),
        (["scheduler.warmup_steps=-1"], "warmup_steps"),
        (["module.loss=l1"], r"module.loss='l1' is not allowed; allowed: mse, rel_l2"),
        (["module.unroll_steps=-1"], r"module.unroll_steps=-1 is not allowed"),
        (["trainer.max_steps=abc"], r"trainer.max_steps='abc' is not allowed; allowed: an int >= 1"),
        (["trainer.val_check_interval=0"], r"trainer.val_check_interval=0 is not allowed"),
        (
            ["trainer.check_val_every_n_epoch=1"],
            r"trainer.check_val_every_n_epoch=1 is not allowed with data=online",
        ),
        (["trainer.gradient_clip_val=-1"], r"trainer.gradient_clip_val=-1 is not allowed"),
        (["paths.output_dir={tmp}/garbage.ckpt/run"], r"paths.output_dir=.* is not a writable directory"),
        (["data.cache_dir={tmp}/garbage.ckpt/cache"], r"data.cache_dir=.* is not a writable directory"),
        (
            ["ckpt_path={garbage}"],
            r"ckpt_path=.*garbage.ckpt: checkpoint .* is corrupt or not a torch checkpoint",
        ),
        (["ckpt_path={truncated}"], r"ckpt_path=.*truncated.ckpt: checkpoint .* is corrupt"),
        (["ckpt_path={other}", "model=unet-small"], r"ckpt_path=.* was trained with model\._target_="),
    ],
)
def test_bad_config_is_one_clear_error(overrides, message, tmp_path):
    paths = {"tmp": tmp_path, "garbage": garbage_checkpoint(tmp_path)}
    if any("{truncated}" in o for o in overrides):
        paths["truncated"] = truncated_checkpoint(tmp_path)
    if any("{other}" in o for o in overrides):
        paths["other"] = other_model_checkpoint(tmp_path)
    overrides = [o.format(**paths) for o in overrides]
    with pytest.raises(RunConfigError, match=message):
        build(compose_train([*tiny(tmp_path), *overrides]))


def assert_one_sentence(result: subprocess.CompletedProcess, prefix: str, pattern: str) -> None:
    """Exit status 2, no traceback, exactly one line with ``prefix``, whose sentence matches ``pattern``."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if prefix in line]
    assert len(lines) == 1, lines
    assert re.search(f"{prefix}: {pattern}", lines[0]), lines[0]


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (
            ["model=nope"],
            r"model=nope is not an option of the model group; allowed: fno, fno-1d-paper, fno-1d-repo, fno-2d-paper, ",
        ),
        (["hydra.run.dir={tmp}/garbage.ckpt/run"], r"hydra.run.dir=.* is not a writable directory"),
        # |u| > 2 counts as blown up: the stream diverges while training, after the validation set is made
        (
            ["pde.blowup=2.0", "trainer.max_steps=50"],
            r"\d+ of 16 trajectories diverged .*max_divergence_fraction",
        ),
        (
            ["pde.blowup=2.0", "trainer.max_steps=50", "data.generation=cpu", "data.num_workers=2"],
            r"\d+ of 16 trajectories diverged",
        ),
    ],
)
def test_cli_refuses_bad_input_with_one_sentence_and_status_2(overrides, pattern, tmp_path):
    paths = {"tmp": tmp_path, "garbage": garbage_checkpoint(tmp_path)}
    overrides = [o.format(**paths) for o in overrides]
    base = [
        o
        for o in tiny(tmp_path)
        if not (o.startswith("hydra.run.dir") and any("hydra.run" in x for x in overrides))
    ]
    assert_one_sentence(run_cli(*base, *overrides, timeout=300), "configuration error", pattern)


def test_command_line_check_reads_sweeps_and_leaves_the_rest_to_hydra(tmp_path):
    from data.cli import check_command_line

    conf = ROOT / "conf"
    check_command_line(["-m", "model=fno-small,unet-small", "trainer.max_steps=3"], conf, "train")
    with pytest.raises(ValueError, match=r"^model=nope is not an option of the model group; allowed: fno, "):
        check_command_line(["-m", "model=fno-small,nope"], conf, "train")
    with pytest.raises(ValueError, match=r"hydra.sweep.dir=.* is not a writable directory"):
        check_command_line(["-m", f"hydra.sweep.dir={garbage_checkpoint(tmp_path)}/sweep"], conf, "train")


def test_a_quoted_run_directory_is_the_directory_hydra_reads(tmp_path, monkeypatch):
    """Lightning's DDP launcher hands rank 1 ``hydra.run.dir="<dir>"``: the check creates <dir>, not a
    directory named with the quotes under the working directory."""
    from data.cli import check_command_line

    monkeypatch.chdir(tmp_path)
    check_command_line([f'hydra.run.dir="{tmp_path}/quoted run"'], ROOT / "conf", "train")
    assert (tmp_path / "quoted run").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quoted run"]


def test_ema_averages_every_weight_in_one_vectorised_update():
    """Lightning's averaged model with the callback's update follows ema ← decay·ema + (1 − decay)·w."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from training.averaging import EMAWeightAveraging

    callback = EMAWeightAveraging(decay=0.9)
    assert "avg_fn" not in callback._kwargs
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    averaged = AveragedModel(net, **callback._kwargs)
    expected = [p.detach().clone() for p in net.parameters()]
    averaged.update_parameters(net)  # the first update copies
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(step + 1.0)
        averaged.update_parameters(net)
        expected = [0.9 * e + 0.1 * p.detach() for e, p in zip(expected, net.parameters(), strict=True)]
    for got, want in zip(averaged.module.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # the callback's own per-step update (lists built once) gives torch's update, buffers included
    net.register_parameter(
        "spectral", torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    )  # FNO weights
    net.register_buffer("count", torch.tensor(0))
    net.register_buffer("scale", torch.ones(2))
    for use_buffers in (True, False):  # the callback's default, and buffers kept in sync instead
        callback._pairs = None
        callback._average_model = AveragedModel(net, use_buffers=use_buffers, **callback._kwargs)
        reference = AveragedModel(net, use_buffers=use_buffers, multi_avg_fn=get_ema_multi_avg_fn(0.9))
        for _ in range(4):
            callback.update(net)
            reference.update_parameters(net)
            with torch.no_grad():
                for p in net.parameters():
                    p.mul_(1.5)
                net.count += 1
                net.scale += 0.5
        got, want = callback._average_model.state_dict(), reference.state_dict()
        for name in want:  # torch's EMA; an integer counter is kept as the model's (torch averages it too)
            expected = (
                net.count - 1 if name == "module.count" and use_buffers else want[name]
            )  # at the update
            torch.testing.assert_close(got[name], expected, rtol=0, atol=0, msg=name)
        assert int(callback._average_model.n_averaged) == 4 and callback._use_buffers
        assert not torch.equal(got["module.spectral"], net.spectral)  # complex weights averaged, not copied


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_the_vectorised_optimizer_steps_bit_for_bit_as_the_per_tensor_loop(name):
    """``foreach: true`` (conf/optimizer) changes the speed on the CPU, not the weights: complex FNO weights too."""
    import copy

    from omegaconf import OmegaConf

    from training.presets import build as build_preset

    config = OmegaConf.load(ROOT / "conf" / "optimizer" / f"{name}.yaml")
    assert config.foreach is True
    torch.manual_seed(0)
    net = build_preset("fno-small", ndim=1, channels=1, cond_dim=2, time_history=4, time_future=1)
    nets = [copy.deepcopy(net) for _ in range(2)]
    optimizers = [
        hydra.utils.instantiate(config)(nets[0].parameters()),
        hydra.utils.instantiate({**OmegaConf.to_container(config), "foreach": False})(nets[1].parameters()),
    ]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in net.parameters()]
        for model, optimizer in zip(nets, optimizers, strict=True):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)


_CHURN = """
import ctypes, json, sys
import torch
from training.process import keep_freed_memory

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo = ctypes.CDLL(None).mallinfo2
mallinfo.restype = Info
if sys.argv[1] == "kept":
    assert keep_freed_memory(environ={})
mapped, free = [], []
for _ in range(3):
    before = mallinfo().hblks
    block = torch.ones(6 * 2**20)  # 24 MiB: a mapping of its own, or heap memory
    mapped.append(mallinfo().hblks - before)
    del block
    blocks = [torch.ones(2**18) for _ in range(16)]  # sixteen 1 MiB temporaries, like a solver step's
    del blocks
    free.append(mallinfo().fordblks / 2**20)  # MiB kept free in the heap for the next allocations
print(json.dumps([mapped, free]))
"""


def test_the_process_keeps_freed_memory_for_reuse() -> None:
    """glibc by default serves a fresh 24 MiB block with an ``mmap`` of its own (and unmaps it on
    ``free``); after :func:`keep_freed_memory` it comes from the heap, and the 16 MiB of temporaries freed
    after it stay in the heap for reuse. A user's own allocator settings are left alone."""
    from training.process import allocator_settings, keep_freed_memory

    env = {k: v for k, v in os.environ.items() if k not in allocator_settings()}

    def probe(mode: str) -> list[list[float]]:
        run = subprocess.run(
            [sys.executable, "-c", _CHURN, mode],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])

    assert probe("default")[0][0] == 1
    mapped, free = probe("kept")
    assert mapped == [0, 0, 0] and min(free) >= 16, (mapped, free)
    for user in (
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
        {"MALLOC_ARENA_MAX": "2"},
        {"LD_PRELOAD": "x.so"},
    ):
        assert allocator_settings(user) == list(user) and not keep_freed_memory(environ=user)
    assert allocator_settings({"GLIBC_TUNABLES": "glibc.rtld.nns=2", "LD_PRELOAD": ""}) == []


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ({}, ("PASSIVE", "10000")),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, ("ACTIVE", None)),
        ({"GOMP_SPINCOUNT": "0"}, (None, "0")),
    ],
)
def test_train_py_sets_openmp_waits_unless_the_user_did(own: dict, expected: tuple) -> None:
    """train.py puts training.process.openmp_waits into its environment: OPENMP_WAITS, or nothing where the
    user has set either variable."""
    from training.process import OPENMP_WAITS, openmp_waits

    assert openmp_waits(own) == ({} if own else OPENMP_WAITS)
    probe = "import os, train; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**env, **own},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(value) for value in expected]
