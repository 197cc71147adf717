"""Every option of every config group composes, and every model preset and experiment trains a step.

A config file that names a missing preset, a key its class does not take or an interpolation that does
not resolve fails here, before a user meets it on a cluster.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from data.layouts import fno
from data.normalize import CondLayout
from models import NETWORKS
from tests.test_train import any_scheduler, compose_train, tiny
from training.presets import OBJECTIVES, available
from training.run import RunConfigError, build, register_resolvers

register_resolvers()
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUPS = [
    "pde",
    "model",
    "data",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "hydra/launcher",
]
EXPERIMENTS = options("experiment")
FILE_BACKED = ("data=offline", "data=fno_file", "experiment=burgers_fno")
"""Overrides that train from a file: no stream, buffer or cache options."""


@pytest.fixture(scope="module")
def fno_file(tmp_path_factory) -> Path:
    """A small file in the FNO layout (12 samples of the Burgers benchmark on 64 points)."""
    from data.hdf5 import write_split
    from data.layouts.fno import export as export_fno
    from data.timegrid import TimeGrid
    from solvers import Burgers

    folder = tmp_path_factory.mktemp("fno")
    solver = Burgers(n=64, length=1.0, dt=0.05, dt_out=1.0, nu=0.1, method="spectral", ic="grf")
    write_split(folder / "b.h5", "train", solver, TimeGrid(0.05, 1.0, 2), 12, seed=0, progress=False)
    return export_fno(folder / "b.h5", "train", folder / "b.mat")


def test_every_group_has_options_and_every_model_preset_names_a_network_and_its_objective():
    for group in [*GROUPS, "experiment"]:
        assert options(group), group
    targets = set()
    for name in available():
        preset = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        assert preset.name == name and preset.objective in OBJECTIVES, name
        assert preset._target_ in NETWORKS, name
        assert (preset.objective == "refiner") == preset._target_.endswith("PDERefiner"), name
        targets.add(preset._target_)
    assert targets == {t for t in NETWORKS if t.startswith("models.")}  # every architecture has a preset


@pytest.mark.parametrize(
    "override",
    [f"{group}={option}" for group in GROUPS for option in options(group)]
    + [f"experiment={name}" for name in EXPERIMENTS],
)
def test_every_option_composes_and_resolves(override, tmp_path):
    base = any_scheduler(tmp_path)
    if override in FILE_BACKED:  # the file-backed modules have no stream, buffer or cache options
        base = [o for o in base if not o.startswith("data.")]
    if override == "pde=external":  # a description of data: no solver settings such as the burn-in
        base = [o for o in base if not o.startswith("pde.burn_in")]
    cfg = compose_train([*base, override])
    # resolving everything a run reads proves the interpolations (model shapes, dt_out, scheduler) hold
    for key in ("pde", "model", "data", "trainer", "module", "optimizer", "scheduler", "callbacks"):
        OmegaConf.to_container(cfg[key], resolve=True)


@pytest.mark.parametrize("pde", ["ks", "burgers", "navier_stokes", "kolmogorov"])
def test_cond_dim_is_read_without_building_the_solver(pde, tmp_path, monkeypatch):
    cfg = compose_train([f"pde={pde}", *tiny(tmp_path)])
    solver = hydra.utils.instantiate(cfg.pde)

    def refuse(*args, **kwargs):
        raise AssertionError("model.cond_dim built a solver")

    monkeypatch.setattr(type(solver), "__init__", refuse)
    assert cfg.model.cond_dim == len(CondLayout.of(solver)) == len(solver.params) + 1


@pytest.mark.parametrize("experiment", ["ks_unet", "ks_pde_refiner"])
def test_ks_experiments_use_the_data_pde_refiner_trained_on(experiment, tmp_path):
    """LPSDA's KS generator as PDE-Refiner used it: per trajectory L ~ U(57.6, 70.4) and T ~ U(90, 110) over
    500 frames T/499 apart, the last 140 kept, n = 256; the model steps every 4th frame and is conditioned
    on L and its Δt (nu is fixed; ``pde.nu=[0.5,1.5]`` is the conditional data set)."""
    cfg = compose_train(
        [f"experiment={experiment}", f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path}"]
    )
    solver = hydra.utils.instantiate(cfg.pde)
    assert solver.n == 256 and solver.n_solve == 256
    spec = solver.params
    assert (spec["length"].low, spec["length"].high) == (57.6, 70.4) and not spec["length"].log
    assert (spec["time_scale"].low, spec["time_scale"].high) == (0.9, 1.1) and spec["nu"].fixed
    assert solver.dt_out * 499 == pytest.approx(100, rel=1e-12)  # frame b: s_b · 100/499 = T_b / 499
    assert solver.burn_in / solver.dt_out == pytest.approx(360, rel=1e-12)  # the first 360 frames dropped
    assert cfg.data.frames == 140 and 360 + cfg.data.frames == 500 and cfg.data.frame_stride == 4
    assert cfg.model.cond_dim == 3 and CondLayout.of(solver).names == ("nu", "length", "dt")
    draws = solver.sample_params(2000, torch.Generator().manual_seed(0))
    durations = 100 * draws["time_scale"]
    assert 90 <= float(durations.min()) < 90.5 and 109.5 < float(durations.max()) <= 110
    conditional = compose_train([f"experiment={experiment}", "pde.nu=[0.5,1.5]", f"hydra.run.dir={tmp_path}"])
    assert (
        hydra.utils.instantiate(conditional.pde).params["nu"].high == 1.5 and conditional.model.cond_dim == 3
    )


def test_ks_rollout_sets_step_four_frames_of_each_trajectorys_own_spacing(tmp_path):
    cfg = compose_train(
        [
            "experiment=ks_unet",
            "pde.n=64",
            "data.rollout_frames=3",
            "data.num_val_trajectories=3",
            "data.batch_size=3",
            f"data.cache_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    batch = next(iter(datamodule.val_dataloader()))
    nominal = 4 * 100 / 499
    assert datamodule.time_grid.dt_out == pytest.approx(nominal) and batch["u"].shape == (3, 3, 1, 64)
    expected = nominal * batch["params"]["time_scale"]
    torch.testing.assert_close(batch["dt"], expected.float())
    assert len(set(batch["dt"].tolist())) == 3 and bool(((batch["dt"] > 0.72) & (batch["dt"] < 0.89)).all())


@pytest.mark.parametrize("config", ["evaluate", "generate"])
def test_entry_point_configs_compose(config):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=["checkpoints=[x]"] if config == "evaluate" else [])
    assert cfg.paths if config == "evaluate" else cfg.pde._target_.startswith("solvers.")


def one_step(overrides: list[str], tmp: Path, file_backed: bool = False) -> None:
    base = [o for o in any_scheduler(tmp) if not (file_backed and o.startswith("data."))]
    cfg = compose_train([*base, *overrides, "trainer.accelerator=cpu", "trainer.fast_dev_run=true"])
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("model", available())
def test_every_model_preset_trains_one_step(model, tmp_path):
    one_step([f"model={model}"], tmp_path)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_one_step(experiment, tmp_path, fno_file):
    if f"experiment={experiment}" in FILE_BACKED:  # a small file of its layout, read at 32 points
        rows = ["data.rows.train=[0,6]", "data.rows.val=[6,8]", "data.rows.test=[-2,null]"]
        one_step([f"experiment={experiment}", f"data.paths={fno_file}", *rows], tmp_path, file_backed=True)
        return
    # tiny grids (solved at 64, stored at 32) and trajectories; frames for the input history plus a target
    one_step([f"experiment={experiment}", "data.frames=12", "pde.n_solve=64"], tmp_path)


@pytest.mark.parametrize(
    ("model", "objective", "message"),
    [
        ("fno-small", "refiner", r"model.objective='refiner' needs a network with its own loss and sampler"),
        ("pde_refiner-small", "one_step", r"model.objective='one_step' needs a plain network.*PDERefiner"),
        ("fno-small", "diffusion", r"model.objective='diffusion' is not allowed; allowed: one_step, refiner"),
    ],
)
def test_an_objective_that_does_not_fit_the_network_is_refused(model, objective, message, tmp_path):
    cfg = compose_train([*tiny(tmp_path), f"model={model}", f"model.objective={objective}"])
    with pytest.raises(RunConfigError, match=message):
        build(cfg)


HEADER_FIELDS = ("# Paper:", "# Published:", "# Recipe", "# Hardware:", "# Differences kept:")

# The papers' recipes (see each file's header for the sources): optimizer class, lr, weight decay,
# scheduler class and its settings, batch, optimizer steps, fixed pool (and the buffer's capacity,
# watermark and reuse where it holds the pool), training horizon, loss, reduction, backpropagation through
# the rollout, EMA, gradient clipping.
ADAM, STEP, COSINE = "torch.optim.Adam", "training.module.step_decay", "training.module.cosine"
FNO_RECIPE = {
    "optimizer": (ADAM, 1e-3, 1e-4),
    "scheduler": (STEP, {"step_size": 5000, "gamma": 0.5}),
    "batch_size": 20,
    "max_steps": 25000,
    "pool_size": 1000,
    "buffer": (1000, 1000, 500),  # the whole pool held, generated once, each window used ~500 times
    "loss": ("rel_l2", "sum", True),
    "ema": False,
}
KS_RECIPE = {
    "optimizer": (ADAM, 1e-4, 0.0),
    "scheduler": (COSINE, {"total_steps": 896000, "eta_min": 1e-6}),
    "batch_size": 128,
    "max_steps": 896000,
    "pool_size": 2048,
    "loss": ("mse", "mean", False),
    "ema": False,
}
BURGERS_RECIPE = {  # fourier_1d.py of October 2020: one input, one output, no rollout
    **{key: value for key, value in FNO_RECIPE.items() if key != "buffer"},
    "pool_size": None,
    "ntrain": 1000,
    "loss": ("rel_l2", "sum", False),
    "model": ("fno-1d-paper", "none"),
}
RECIPES = {
    "burgers_fno": {**BURGERS_RECIPE, "frames": (None, 1, 0)},
    "burgers_fno_online": {**BURGERS_RECIPE, "ntrain": None, "frames": (2, 1, 0), "buffer": (2000, 400, 1)},
    "ns_fno": {**FNO_RECIPE, "frames": (50, 10, 39)},
    "ns_fno_1e-5": {**FNO_RECIPE, "frames": (20, 10, 9)},
    "ns_lsm_1e-5": {
        **FNO_RECIPE,
        "optimizer": (ADAM, 5e-4, 1e-4),
        "max_steps": 25050,
        "frames": (20, 10, 9),
    },
    "ks_unet": {**KS_RECIPE, "frames": (140, 1, 0)},  # the 140 kept frames; rollouts of 160 steps
    "ks_pde_refiner": {**KS_RECIPE, "frames": (140, 1, 0), "ema": True},
    "kolmogorov_sinenet": {
        "optimizer": ("torch.optim.AdamW", 2e-4, 1e-5),
        "scheduler": ("training.module.warmup_cosine", {"warmup_steps": 10000, "min_factor": 5e-4}),
        "batch_size": 32,
        "max_steps": 100000,
        "pool_size": None,
        "loss": ("rel_l2", "mean", False),
        "ema": False,
        "frames": (100, 4, 0),
    },
}


def test_every_experiment_header_states_paper_figure_recipe_hardware_and_differences():
    assert set(RECIPES) == set(EXPERIMENTS)
    for name in EXPERIMENTS:
        header = (CONF / "experiment" / f"{name}.yaml").read_text().split("\ndefaults:")[0]
        for field in HEADER_FIELDS:
            assert f"\n{field}" in header, (name, field)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_selects_its_papers_recipe(name, tmp_path):
    recipe = RECIPES[name]
    cfg = compose_train([f"experiment={name}", f"paths.output_dir={tmp_path}"])
    target, lr, weight_decay = recipe["optimizer"]
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (
        target,
        lr,
        weight_decay,
    )
    target, settings = recipe["scheduler"]
    assert cfg.scheduler._target_ == target
    assert {key: cfg.scheduler[key] for key in settings} == settings
    assert (cfg.data.batch_size, cfg.trainer.max_steps, cfg.data.get("pool_size")) == (
        recipe["batch_size"],
        recipe["max_steps"],
        recipe["pool_size"],
    )
    if recipe.get("ntrain"):  # the first 1000 rows of the file (the layout's own split unless data.rows says)
        start, stop = cfg.data.rows.train or fno.default_rows("train", 2048)
        assert (cfg.data.format, stop - start) == ("fno", recipe["ntrain"])
    elif "ntrain" in recipe:
        assert "rows" not in cfg.data
    if "model" in recipe:  # the network and the raw fields of the reference script
        assert (cfg.model.name, cfg.data.normalize, cfg.module.predict_difference) == (
            *recipe["model"],
            False,
        )
    if "buffer" in recipe:
        buffer = cfg.data.buffer
        assert (buffer.capacity, buffer.watermark, buffer.max_reuse) == recipe["buffer"]
    assert (cfg.module.loss, cfg.module.reduction, cfg.module.unroll_grad) == recipe["loss"]
    frames, history, unroll = recipe["frames"]
    assert (cfg.data.get("frames"), cfg.data.time_history, cfg.module.unroll_steps) == (
        frames,
        history,
        unroll,
    )
    if cfg.module.unroll_grad:  # the whole horizon in one window: t = 1..T, inputs 1..10, targets 11..T
        assert cfg.data.time_history + cfg.data.target_frames == cfg.data.frames
        assert cfg.pde.burn_in == 1.0 and cfg.pde.dt_out == 1.0
    assert bool(cfg.callbacks.ema) == recipe["ema"]
    if recipe["ema"]:
        assert cfg.callbacks.ema.decay == 0.995
    assert cfg.trainer.gradient_clip_val is None


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", available())
def test_compile_true_trains_every_model_preset_on_the_cpu(model, tmp_path):
    """``compile=true`` (``torch.compile`` of the network, inductor's C++ back end on the CPU): a training step
    and a validation rollout run compiled, and the compiled network gives the eager network's output."""
    cfg = compose_train(
        [*any_scheduler(tmp_path), f"model={model}", "compile=true", "trainer.fast_dev_run=true"]
    )
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
    net = run.module.net.eval()
    val = run.datamodule.trajectories("val")
    x = run.module.normalizer.normalize(val["u"][:2, : net.time_history])
    cond = run.module.normalizer.cond(
        {k: v[:2] for k, v in val["params"].items()}, torch.full((2,), val["grid"].dt_out)
    )
    with torch.no_grad():
        compiled, eager = net(x, cond), net.forward(x, cond)  # forward() bypasses the compiled call
        sampled = not torch.equal(eager, net.forward(x, cond))  # a network that draws noise
    if sampled:  # PDE-Refiner draws noise: compiled random numbers are another stream, compare the shape
        assert compiled.shape == eager.shape and bool(compiled.isfinite().all())
    else:
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
