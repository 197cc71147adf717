"""Training and evaluation from the field's layouts: a run from each foreign layout, and a The Well set of a PDE
no pdestream solver makes (``pde=external``) trained and evaluated with the solver rows left out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import xarray as xr
from hydra import compose, initialize
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from solvers.errors import ConfigError
from tests.data.test_layouts import KS, NS, generate
from tests.evaluation.conftest import eval_config
from training.pipeline import evaluate
from training.run import RunConfigError, build, register_resolvers

RUN = [
    "model=fno-small", "model.modes=4", "data.time_history=2", "data.batch_size=4", "data.num_workers=0",
    "data.stats_trajectories=2", "logger=none", "callbacks.progress=null", "callbacks.lr_monitor=null",
    "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_model_summary=false",
    "+trainer.enable_progress_bar=false", "scheduler.warmup_steps=1", "validate_untrained=false",
]  # fmt: skip
EXTERNAL = [
    "pde=external",
    "pde.ndim=2",
    "pde.n=16",
    "pde.dt_out=0.5",
    "pde.channels=[vorticity]",
    "pde.length=1.0",
]
"""The navier_stokes data of :data:`NS` described as another program's: the grid, the field, the step."""


def train(output_dir: Path, overrides: list[str]) -> Path:
    register_resolvers()
    with initialize(config_path="../conf", version_base="1.3"):
        cfg = compose(
            "train", overrides=[*RUN, f"paths.output_dir={output_dir}", *overrides], return_hydra_config=True
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
    return output_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("foreign")
    out = {}
    for split in ("train", "val", "test"):
        name = {"val": "valid"}.get(split, split)
        generate(folder / "ks.hdf5", *KS, f"split={split}", "format=pdebench") if split == "train" else None
        out[f"pdearena-{split}"] = generate(
            folder / f"KS_{name}_x.h5", *KS, f"split={split}", "format=pdearena"
        )
        generate(folder / "ks_well", *KS, f"split={split}", "format=the_well")
        generate(folder / "flow", *NS, f"split={split}", "format=the_well")
    out["pdebench"], out["the_well"], out["flow"] = folder / "ks.hdf5", folder / "ks_well", folder / "flow"
    return out


@pytest.mark.parametrize("layout", ["pdebench", "pdearena", "the_well"])
def test_a_run_trains_from_each_foreign_layout(files, layout, tmp_path) -> None:
    if layout == "pdearena":
        paths = [f"data.paths.{s}={files[f'pdearena-{s}']}" for s in ("train", "val", "test")]
    else:
        paths = [f"data.paths={files[layout]}"]
    pde = ["pde=ks", "pde.n=64", "pde.burn_in=0"]
    run = train(tmp_path / "run", [*pde, "data=offline", *paths])
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_well_set_of_another_pde_trains_and_evaluates_without_solver_rows(files, tmp_path) -> None:
    run = train(tmp_path / "run", [*EXTERNAL, "data=offline", f"data.paths={files['flow']}"])
    out = tmp_path / "report"
    cfg = eval_config(
        [f"checkpoints=[{run}]", f"paths.output_dir={out}", "anchors.untrained=false", "timing.repeats=1",
         "timing.warmup=0", "timing.steps=1", "bootstrap.num_resamples=20", "horizons=[1]"]
    )  # fmt: skip
    evaluate(cfg)
    ds = xr.open_dataset(out / "metrics.nc", engine="h5netcdf")
    assert "solver_setting" not in ds.coords and list(ds.model.values) == ["fno-small", "persistence"]
    report = (out / "report.md").read_text()
    assert (
        "No classical-solver rows: the checkpoint's pde is External (data no pdestream solver makes)"
        in report
    )
    assert "(the_well layout)" in report or "its layout detected from the file" in report


@pytest.mark.parametrize("overrides", [["data=online"], []])
def test_an_external_pde_refuses_to_stream_or_generate(overrides, tmp_path) -> None:
    if overrides:
        with pytest.raises(
            RunConfigError,
            match=r"data: pde=external describes data no pdestream solver makes, so it cannot stream",
        ):
            train(tmp_path / "run", [*EXTERNAL, *overrides])
    else:
        with pytest.raises(ConfigError, match=r"so it cannot generate data"):
            generate(tmp_path / "x.h5", *EXTERNAL, "frames=3", "num_trajectories=1")
