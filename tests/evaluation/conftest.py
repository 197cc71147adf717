"""Tiny trained checkpoints (KS on 32 points, a few optimizer steps) shared by the evaluation tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from training.run import build, register_resolvers

TINY = [
    "pde.n=32",
    "pde.burn_in=2.0",
    "data.frames=12",
    "pde.dt_out=0.25",  # one solver step: 12 frames span t = 0 … 2.75
    "data.num_val_trajectories=2",
    "data.num_test_trajectories=4",
    "data.solver_batch=4",
    "data.buffer.capacity=32",
    "data.buffer.watermark=8",
    "data.batch_size=4",
    "data.stats_trajectories=2",
    "data.num_workers=0",
    "data.generation=device",
    "logger=none",
    "callbacks.progress=null",
    "callbacks.lr_monitor=null",  # needs a logger
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_model_summary=false",
    "+trainer.enable_progress_bar=false",
    "scheduler.warmup_steps=1",
]


def train_config(output_dir: Path, cache_dir: Path, overrides: list[str]) -> DictConfig:
    """The composed training config of a tiny run writing into ``output_dir``."""
    register_resolvers()
    with initialize(config_path="../../conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*TINY, f"paths.output_dir={output_dir}", f"paths.cache_dir={cache_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def train_tiny(output_dir: Path, cache_dir: Path, overrides: list[str]) -> Path:
    """Train for two steps; returns the run directory (``checkpoints/best.ckpt`` and ``last.ckpt``)."""
    run = build(train_config(output_dir, cache_dir, overrides))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return output_dir


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def fno_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    return train_tiny(tmp_path_factory.mktemp("fno"), cache_dir, ["model=fno-small", "model.modes=4"])


@pytest.fixture(scope="session")
def refiner_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    return train_tiny(tmp_path_factory.mktemp("refiner"), cache_dir, ["model=pde_refiner-small"])


EVAL_CACHE = Path(tempfile.mkdtemp(prefix="pdestream-eval-cache-"))
"""The evaluations' own cache of generated test sets (``cache_dir``), outside the repository."""


def eval_config(overrides: list[str]) -> DictConfig:
    """``conf/evaluate.yaml`` composed with ``overrides`` (give ``paths.output_dir``: no Hydra run here)."""
    with initialize(config_path="../../conf", version_base="1.3"):
        return compose("evaluate", overrides=["progress=false", f"cache_dir={EVAL_CACHE}", *overrides])
