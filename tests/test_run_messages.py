"""What a run tells its user: the progress bar, blown-up validations, the plan, and the noise it does not make."""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import hydra
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from data.datamodule import leave_stop_signals_to_the_trainer
from tests.test_train import ROOT, assert_one_sentence, compose_train, run_cli, tiny
from training.callbacks import BlowUpCheck, StepProgressBar
from training.loggers import WandbLogger
from training.plan import Plan, announce, measure
from training.run import build, register_resolvers


# --------------------------------------------------------------------------- noise
def test_wandb_logger_passes_no_anonymous_setting(tmp_path):
    """wandb warns "The anonymous setting has no effect" for any value of it; the run's logger sends none."""
    cfg = compose_train([*tiny(tmp_path), "logger=wandb"])
    assert cfg.logger._target_ == "training.loggers.WandbLogger"
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="pdestream")
    assert "anonymous" not in logger._wandb_init
    assert logger._wandb_init["project"] == "pdestream"


# --------------------------------------------------------------------------- the progress bar
class _Seen(StepProgressBar):
    """The bar's training task and metrics as the last training step left them."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        task = self.progress.tasks[self.train_progress_bar_id]
        self.seen = (task.description, task.completed, task.total, self.get_metrics(trainer, pl_module))


def test_progress_bar_counts_steps_out_of_max_steps_without_epochs_or_version(tmp_path):
    overrides = [o for o in tiny(tmp_path) if not o.startswith(("logger=", "callbacks.progress"))]
    cfg = compose_train([*overrides, "logger=csv", "trainer.max_steps=5", "trainer.val_check_interval=5"])
    run = build(cfg)
    bar = _Seen()
    run.trainer.callbacks = [c for c in run.trainer.callbacks if not hasattr(c, "enable")] + [bar]
    run.trainer.fit(run.module, datamodule=run.datamodule)
    description, completed, total, metrics = bar.seen
    assert "Training step" in description and "Epoch" not in description
    assert (completed, total) == (5, 5)
    assert "v_num" not in metrics and "train/loss" in metrics


# --------------------------------------------------------------------------- blown-up validations
@pytest.mark.parametrize(
    ("metrics", "reference", "expected"),
    [
        ({"val/mse": math.nan, "val/rel_l2": 0.5}, {}, r"val/mse not finite"),
        ({"val/mse": 1.3e28, "val/rel_l2": 0.9}, {"val/mse": 0.01}, r"val/mse 1.3e\+28 is 1.3e\+30 times"),
        ({"val/mse": 5.0, "val/rel_l2": 40.0}, {}, r"val/rel_l2 40: the predictions are over 10 times"),
        ({"val/mse": 0.5, "val/rel_l2": 0.9}, {"val/mse": 0.01}, None),  # 50 times: poor, not blown up
        ({"val/mse": 0.002, "val/rel_l2": 0.2}, {"val/mse": 0.01}, None),
    ],
)
def test_blow_up_verdict(metrics, reference, expected):
    check = BlowUpCheck()
    check.reference = reference
    verdict = check.verdict(metrics)
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None and re.search(expected, verdict), verdict


def test_blown_up_validation_is_one_warning_line(caplog):
    check = BlowUpCheck()
    check.reference = {"val/mse": 0.01}
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        is_global_zero=True,
        global_step=1500,
        callback_metrics={"val/mse": torch.tensor(1.3e28), "val/corr_time": torch.tensor(0.0)},
    )
    with caplog.at_level(logging.WARNING, logger="pdestream"):
        check.on_validation_end(trainer, None)
        trainer.callback_metrics = {"val/mse": torch.tensor(0.005)}
        check.on_validation_end(trainer, None)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("validation at step 1500 blew up (val/mse 1.3e+28 is ")
    assert "optimizer.lr" in lines[0]


# --------------------------------------------------------------------------- the plan before a run
def test_a_run_of_hours_is_announced_with_the_override_that_shortens_it(caplog):
    plan = Plan(100000, 32, "cpu", step_s=0.136, val_trajectories=32, val_steps=96, val_s=4.0)
    with caplog.at_level(logging.INFO, logger="pdestream"):
        announce(plan, 2000)
    info, warning = (r.getMessage() for r in caplog.records)
    assert info.startswith("plan: 100000 training steps of 32 samples on cpu;")
    assert "at least 3 h 46 min" in info and "every 2000 steps: 32 rollouts of 96 steps" in info
    assert warning == (
        "this run is long on this machine: 100000 steps take at least 3 h 46 min on cpu; for about "
        "10 min 00 s of training give trainer.max_steps=4400"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pdestream"):
        announce(Plan(3000, 32, "cpu", 0.05, 32, 96, 4.0), 500)
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # 2 min 30 s: no warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pdestream"):
        announce(Plan(0, 32, "cpu", 0.05, 32, 96, 4.0), 500)  # a resume with nothing left to train
    assert not caplog.records


def test_measuring_the_plan_leaves_the_run_untouched(tmp_path):
    run = build(compose_train([*tiny(tmp_path), "trainer.max_steps=5"]))
    before = {k: v.clone() for k, v in run.module.state_dict().items() if isinstance(v, torch.Tensor)}
    rng = torch.get_rng_state()
    plan = measure(run.module, run.datamodule.trajectories("val"), 5, 4, 0, torch.device("cpu"))
    assert plan.step_s > 0 and plan.val_s > 0 and plan.val_trajectories == 2
    assert plan.val_steps == 10 - 4  # frames after the history, one frame per network call
    assert all(torch.equal(v, run.module.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in run.module.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(
    ("overrides", "steps", "interval"),
    [
        (["trainer=ddp", "trainer.accelerator=cpu"], 3000, 500),
        (["trainer=ddp", "trainer.accelerator=gpu"], 100000, 2000),
        (["trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=20"], 20, 500),
    ],
)
def test_ddp_on_the_cpu_keeps_the_cpu_trainer_length(overrides, steps, interval, tmp_path):
    register_resolvers()
    cfg = compose_train([*tiny(tmp_path), *overrides])
    assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval) == (steps, interval)
    cpu = compose_train([*tiny(tmp_path), "trainer=cpu"])
    assert (cpu.trainer.max_steps, cpu.trainer.val_check_interval) == (
        3000,
        500,
    )  # the values ddp.yaml copies


# --------------------------------------------------------------------------- wrong machine
@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine is a SLURM node")
def test_slurm_multirun_off_a_cluster_is_one_sentence(tmp_path):
    result = run_cli("-m", "hydra/launcher=slurm", "trainer.max_steps=3", f"hydra.sweep.dir={tmp_path}/sweep")
    assert_one_sentence(
        result,
        "configuration error",
        r"hydra/launcher=slurm submits the jobs to a SLURM cluster, but this "
        r"machine has no srun command; run it on the cluster's login node, or leave hydra/launcher out",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_names_trainer_cpu(tmp_path):
    result = run_cli(*tiny(tmp_path), "trainer=gpu")
    assert_one_sentence(
        result,
        "configuration error",
        r"trainer.accelerator=gpu but this machine has no GPU that torch can "
        r"use; use trainer=cpu here",
    )
    assert "No supported gpu backend" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- stop signals
def test_data_workers_leave_stop_signals_to_the_training_process(tmp_path):
    """A scheduler signals every process of a job; a DataLoader worker must not die of it (the training
    process would fail with "DataLoader worker ... killed by signal" instead of saving last.ckpt)."""
    code = (
        "import os, signal\n"
        "from data.datamodule import leave_stop_signals_to_the_trainer\n"
        "leave_stop_signals_to_the_trainer(0)\n"
        "for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):\n"
        "    os.kill(os.getpid(), s)\n"
        "print('still here')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout == "still here\n", result.stderr[-2000:]
    register_resolvers()
    cfg = compose_train([*tiny(tmp_path), "data.generation=cpu", "data.num_workers=1"])
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.train_dataloader().worker_init_fn is leave_stop_signals_to_the_trainer


def test_the_untrained_validation_is_the_blow_up_reference_and_results_are_written(tmp_path, monkeypatch):
    import json

    import training.callbacks
    import training.run

    made = []

    class Recording(BlowUpCheck):
        def __init__(self, **limits: float) -> None:
            super().__init__(**limits)
            made.append(self)

    monkeypatch.setattr(training.callbacks, "BlowUpCheck", Recording)  # callbacks.blow_up's _target_
    overrides = [o for o in tiny(tmp_path) if not o.startswith("validate_untrained")]
    results = training.run.fit(
        compose_train([*overrides, "trainer.max_steps=2", "trainer.val_check_interval=2"])
    )
    assert len(made) == 1 and made[0].reference["val/mse"] > 0
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["monitor"] == "val/corr_time" and written["mode"] == "max" and written["seconds"] > 0
    assert written["metrics"]["untrained/corr_time"] == results["untrained/corr_time"]


def test_plan_durations_read_as_english() -> None:
    from training.plan import about

    assert about(0.4) == "under 1 s"
    assert about(29.2) == "about 29 s"
    assert about(29.2, "at least") == "at least 29 s"
