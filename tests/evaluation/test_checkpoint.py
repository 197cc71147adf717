import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from data.hdf5 import write_split
from data.timegrid import TimeGrid
from solvers.ks import KuramotoSivashinsky
from tests.evaluation.conftest import eval_config
from training.checkpoint import CheckpointError, frame_stride, load_checkpoint, model_grid, resolve_checkpoint
from training.forecasters import load_models
from training.module import RefinerModule, SurrogateModule
from training.pipeline import evaluate
from training.testdata import load_test_set


def test_loads_ema_weights_config_and_module_kind(fno_run, refiner_run):
    module, config = load_checkpoint(fno_run)
    stored = torch.load(fno_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert type(module) is SurrogateModule and not module.training
    assert config["pde"]["n"] == 32 and config["model"]["name"] == "fno-small"
    for key, value in stored["state_dict"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(module.state_dict()[key], value), key
    assert module.normalizer.param_names == ["nu"]
    u = torch.randn(2, 4, 1, 32)
    out = module.predictor({"nu": torch.ones(2)}, torch.full((2,), 0.25))(u)
    assert out.shape == (2, 1, 1, 32) and bool(torch.isfinite(out).all())
    assert config["model"]["objective"] == "one_step"
    refiner, refiner_config = load_checkpoint(refiner_run / "checkpoints" / "last.ckpt")
    assert type(refiner) is RefinerModule and refiner_config["model"]["objective"] == "refiner"


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ("refiner", r"model.objective='refiner' needs a network with its own loss and sampler"),
        (None, r"model.objective=None is not allowed; allowed: one_step, refiner"),
    ],
)
def test_the_stored_objective_chooses_the_module(fno_run, tmp_path, objective, message):
    """The module kind is read from the stored ``model.objective``, and must fit the stored network."""
    path = _modified(fno_run, tmp_path, "objective.ckpt", lambda c: c["model"].update(objective=objective))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_run_directory_prefers_best_then_last(fno_run, tmp_path):
    assert resolve_checkpoint(fno_run) == fno_run / "checkpoints" / "best.ckpt"
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(fno_run / "checkpoints" / "last.ckpt", tmp_path / "checkpoints")
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "last.ckpt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def test_missing_corrupt_and_foreign_files(fno_run, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((fno_run / "checkpoints" / "best.ckpt").read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not a pdestream checkpoint"):
        load_checkpoint(foreign)


def test_unsafe_pickle_needs_trust(fno_run, tmp_path):
    checkpoint = torch.load(fno_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["extra"] = pathlib.PurePosixPath("x")  # not allowed by weights_only=True
    path = tmp_path / "unsafe.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="trust_checkpoints=true"):
        load_checkpoint(path)
    module, _ = load_checkpoint(path, trust=True)
    assert isinstance(module, SurrogateModule)


def _modified(run, tmp_path, name, edit):
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    edit(checkpoint["hyper_parameters"]["config"])
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


def test_the_model_step_comes_from_the_stored_time_grid(fno_run, tmp_path):
    _, config = load_checkpoint(fno_run)
    assert model_grid(config) == TimeGrid(0.25, 0.25, 12)  # pde.dt_out=0.25, data.frames=12
    old = _modified(fno_run, tmp_path, "old.ckpt", lambda c: c.pop("time_grid"))
    with pytest.raises(CheckpointError, match=r"does not record its training time grid .*: retrain it"):
        load_checkpoint(old)


def test_frame_stride_takes_every_kth_test_frame():
    test_set = TimeGrid(0.25, 0.25, 8)
    assert frame_stride(0.25, test_set, "a") == 1 and frame_stride(0.75, test_set, "a") == 3
    with pytest.raises(
        CheckpointError, match=r"checkpoint a steps dt=0\.3 but the test set's interval is 0\.25"
    ):
        frame_stride(0.3, test_set, "a")


def test_weights_that_do_not_fit_the_config(fno_run, tmp_path):
    path = _modified(fno_run, tmp_path, "wide.ckpt", lambda c: c["model"].update(width=8))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)


def test_checkpoints_of_different_grids_are_refused(fno_run, tmp_path):
    path = _modified(fno_run, tmp_path, "n64.ckpt", lambda c: c["pde"].update(n=64))
    with pytest.raises(CheckpointError, match=re.escape("pde.n=64")):
        load_models([str(fno_run), str(path)], trust=False)


def test_test_set_of_another_resolution_is_refused(fno_run, tmp_path):
    path = tmp_path / "ks64.h5"
    solver = KuramotoSivashinsky(n=64, burn_in=0.0)
    write_split(path, "test", solver, TimeGrid(0.25, 0.25, 8), 2, seed=0, progress=False)
    cfg = eval_config(
        [f"checkpoints=[{fno_run}]", f"test_path={path}", f"paths.output_dir={tmp_path / 'out'}"]
    )
    with pytest.raises(CheckpointError, match=r"does not fit checkpoint .*n=64.*n=32"):
        evaluate(cfg)
    cfg = eval_config(
        [f"checkpoints=[{fno_run}]", f"test_path={tmp_path / 'none.h5'}", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(cfg)


def _evil_refiner(config, target, recursive):
    """A refiner model config whose inner network is ``os.makedirs(target)``."""
    shape = {k: config["model"][k] for k in ("ndim", "channels", "time_history", "time_future", "cond_dim")}
    config["model"] = {
        "_target_": "models.pde_refiner.PDERefiner",
        **({} if recursive else {"_recursive_": False}),
        "name": "pde_refiner-small",
        "objective": "refiner",
        **shape,
        "inner": {"_target_": "os.makedirs", "name": target},
    }


@pytest.mark.parametrize(
    ("key", "edit"),
    [
        ("model", lambda c, target: c["model"].update(_target_="os.makedirs", name=target)),
        ("pde", lambda c, target: c["pde"].update(_target_="os.makedirs", n=target)),
        ("data", lambda c, target: c["data"].update(_target_="os.makedirs", pde=target)),
        ("data.pde", lambda c, target: c["data"]["pde"].update(_target_="os.makedirs", n=target)),
        ("model", lambda c, target: c["model"].update(_target_="models.fno.FNO", _args_=[target])),
        ("model.inner", lambda c, target: _evil_refiner(c, target, recursive=True)),
        ("model.inner", lambda c, target: _evil_refiner(c, target, recursive=False)),
    ],
)
def test_a_checkpoint_cannot_run_code(fno_run, tmp_path, key, edit):
    """A stored config naming anything but pdestream's classes is refused before anything is called."""
    target = str(tmp_path / "created")
    path = _modified(fno_run, tmp_path, "evil.ckpt", lambda c: edit(c, target))
    with pytest.raises(
        CheckpointError, match=r"not a pdestream (network )?class|not allowed in a stored config"
    ):
        _, config = load_checkpoint(path)
        options = {"test_path": None, "num_trajectories": None, "cache_dir": str(tmp_path / "cache")}
        load_test_set(OmegaConf.create(options), config, str(path))
    assert not pathlib.Path(target).exists()


def run_evaluate(*args):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    root = pathlib.Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "evaluate.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_evaluate_cli_refuses_an_evil_checkpoint_and_an_unwritable_output_dir(fno_run, tmp_path):
    target = tmp_path / "created"
    evil = _modified(
        fno_run, tmp_path, "evil.ckpt", lambda c: c["model"].update(_target_="os.makedirs", name=str(target))
    )
    (tmp_path / "file").write_text("")
    for checkpoint, output, pattern in (
        (
            evil,
            tmp_path / "out",
            r"model config cannot be built \(model._target_='os.makedirs' is not a pdestream class",
        ),
        (fno_run, tmp_path / "file" / "out", r"output_dir=.* is not a writable directory"),
    ):
        result = run_evaluate(
            f"checkpoints=[{checkpoint}]", f"output_dir={output}", f"hydra.run.dir={tmp_path / 'run'}"
        )
        output_text = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in output_text, output_text[-3000:]
        errors = [line for line in output_text.splitlines() if "evaluation error" in line]
        assert len(errors) == 1 and re.search(pattern, errors[0]), errors
    assert not target.exists()
