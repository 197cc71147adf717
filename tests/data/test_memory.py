"""Memory estimates against the real thing, and configurations refused before they are solved."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

import solvers.memory
from data.generate import run as generate_run
from solvers.errors import ConfigError
from tests.data.conftest import Heat
from tests.data.test_datamodule import generate_conf, online

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "ks": ("KuramotoSivashinsky", {"n": 8192, "dt": 0.25, "dt_out": 1.0, "burn_in": 8.0}, 64, 10),
    "burgers": ("Burgers", {"n": 4096, "dt": 0.01, "dt_out": 0.01, "nu": 1e-4, "cfl": 0.9}, 64, 4),
    "navier_stokes": ("NavierStokes2D", {"n": 256, "length": 1.0, "dt": 0.025, "dt_out": 0.05}, 8, 8),
}
"""Moderate grids: ``(solver class, settings, batch, frames)``, each growing the process by about 100 MB."""

MEASURE = """
import json, os, resource, sys
import solvers
from data.timegrid import TimeGrid
from data.trajectories import generate, generate_bytes

for name, settings, batch, frames in json.loads(sys.argv[1]).values():
    if os.fork() == 0:  # a child's peak RSS starts at its RSS at the fork
        solver = getattr(solvers, name)(**settings)
        times = TimeGrid.of_solver(solver, frames).times()
        generate(solver, 0, "train", range(1), times)  # libraries, FFT plans and the solver's tables in place
        with open("/proc/self/statm") as statm:
            before = int(statm.read().split()[1]) * resource.getpagesize()
        generate(solver, 0, "train", range(batch), times)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        sys.stdout.write(json.dumps([generate_bytes(solver, batch, frames), peak - before]) + "\\n")
        sys.stdout.flush()
        os._exit(0)
    os.wait()
"""


@pytest.fixture(scope="module")
def measured() -> dict[str, tuple[int, int]]:
    """``{case: (estimate, growth of peak RSS)}`` of :data:`CASES`, each generated in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(CASES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return dict(zip(CASES, map(json.loads, result.stdout.splitlines()), strict=True))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from Linux's /proc")
@pytest.mark.parametrize("case", list(CASES))
def test_generation_estimate_is_within_a_factor_of_the_measured_peak(measured, case):
    """:func:`~data.trajectories.generate_bytes` against the growth of peak RSS (``ru_maxrss``) while generating."""
    estimate, growth = measured[case]
    assert growth > 30 * 2**20  # large enough to dwarf the allocator's noise
    assert 0.5 <= estimate / growth <= 3, (estimate, growth)


@pytest.fixture
def little_memory(monkeypatch):
    """A machine with 16 KiB available, whatever the device."""
    monkeypatch.setattr(solvers.memory, "available_memory", lambda device="cpu": 2**14)


def test_generate_refuses_what_does_not_fit_before_solving(tmp_path, little_memory, monkeypatch):
    with initialize_config_dir(config_dir=str(generate_conf(tmp_path)), version_base="1.3"):
        overrides = ["pde=heat", "num_trajectories=4", "frames=5", "chunk=64", "workers=0"]
        cfg = compose(
            "generate", overrides=[*overrides, f"path={tmp_path / 'heat.h5'}"], return_hydra_config=True
        )
        HydraConfig().set_config(cfg)
    monkeypatch.setattr(Heat, "solve", lambda *a, **k: pytest.fail("solved"))
    with pytest.raises(
        ConfigError,
        match=r"^generating 64 trajectories of 5 frames at a time in 1 process\(es\) needs about [\d.e-]+ GiB but "
        r"this machine has 1\.53e-05 GiB available; lower pde\.n_solve, pde\.n, frames, chunk or workers$",
    ):
        generate_run(cfg)
    assert not (tmp_path / "heat.h5").exists()


def test_the_datamodule_refuses_what_does_not_fit_before_solving(
    tmp_path, heat1d, little_memory, monkeypatch
):
    monkeypatch.setattr(Heat, "solve", lambda *a, **k: pytest.fail("solved"))
    dm = online(tmp_path, heat1d, solver_batch=4)
    with pytest.raises(
        ConfigError,
        match=r"^generating the val set \(5 trajectories of 6 frames, 5 at a time\) needs about .* GiB but this "
        r"machine has 1\.53e-05 GiB available; lower pde\.n_solve, pde\.n, data\.rollout_frames or "
        r"data\.num_val_trajectories$",
    ):
        dm.prepare_data()
    assert not dm.cache_path.exists()
    dm = online(tmp_path, heat1d, buffer={"capacity": 100_000, "watermark": 16})
    with pytest.raises(
        ConfigError,
        match=r"^the training stream \(1 shard\(s\), each with a replay buffer of 100000 windows and solver calls "
        r"of 4 trajectories of 6 frames\) needs about 0\.0\d+ GiB but this machine has 1\.53e-05 GiB available; "
        r"lower data\.buffer\.capacity, data\.solver_batch, data\.frames, pde\.n_solve or pde\.n$",
    ):
        dm.setup("fit")
    with pytest.raises(ConfigError, match=r"^solving the 16 statistics trajectories of 6 frames needs about"):
        _ = dm.normalizer


def test_an_oversized_grid_exits_2_with_one_sentence(tmp_path):
    """``python -m data.generate`` with a grid no machine holds: refused in seconds, not killed after minutes."""
    path = tmp_path / "ns.h5"
    command = [sys.executable, "-m", "data.generate", "pde=navier_stokes", "pde.n=1024", "pde.n_solve=1024"]
    command += ["frames=1000", "chunk=1024", "workers=0", f"path={path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and not path.exists(), lines
    assert re.fullmatch(
        r"generation error: generating 1024 trajectories of 1000 frames at a time in 1 process\(es\) needs about "
        r"[\d,]+ GiB but this machine has [\d.,]+ GiB available; lower pde\.n_solve, pde\.n, frames, chunk or workers",
        lines[0],
    ), lines[0]
