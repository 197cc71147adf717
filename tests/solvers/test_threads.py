"""Thread choice: affinity, cgroup quota and process counts → intra-op threads (all inputs injected)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from solvers.threads import (
    Registry,
    available_cpus,
    cgroup_quota,
    choose_threads,
    intra_op_threads,
    ranks_per_node,
)


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota_and_none(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path) is None  # neither file: no quota
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_quota(tmp_path) == 4.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None


@pytest.mark.parametrize(
    ("cpus", "quota", "expected"),
    [(16, None, 16), (16, 4.0, 4), (16, 1.5, 1), (2, 8.0, 2), (4, 0.5, 1), (3, 3.0, 3)],
)
def test_available_cpus_is_affinity_capped_by_quota(cpus: int, quota: float | None, expected: int) -> None:
    assert available_cpus(cpus, quota) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 1),
        ({"LOCAL_WORLD_SIZE": "4"}, 4),
        ({"SLURM_NTASKS_PER_NODE": "8(x2)"}, 8),
        ({"LOCAL_WORLD_SIZE": "2", "SLURM_NTASKS_PER_NODE": "8"}, 2),
        ({"SLURM_NTASKS_PER_NODE": "garbage"}, 1),
    ],
)
def test_ranks_per_node_from_the_environment(env: dict[str, str], expected: int) -> None:
    assert ranks_per_node(env) == expected


@pytest.mark.parametrize(
    ("cpus", "processes", "threads"), [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 3, 5), (16, 4, 4), (1, 1, 1)]
)
def test_choose_threads_shares_the_cpus(cpus: int, processes: int, threads: int) -> None:
    assert choose_threads(cpus, processes) == threads


def test_choose_threads_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="cpus >= 1"):
        choose_threads(0, 1)


@pytest.mark.parametrize(
    ("workers", "registered", "env", "cpus", "threads", "processes"),
    [
        (0, 1, {}, 2, 2, 1),  # the default run alone on 2 CPUs
        (0, 2, {}, 2, 1, 2),  # two runs side by side
        (2, 3, {}, 16, 5, 3),  # 2 generation workers on 16 CPUs
        (0, 1, {"LOCAL_WORLD_SIZE": "4"}, 16, 4, 4),  # 4 ranks, the others not registered yet
        (1, 8, {"LOCAL_WORLD_SIZE": "2"}, 16, 2, 8),  # 2 ranks x 2 processes, and another such job
        (0, 0, {}, 8, 8, 1),  # not registered: counts itself
    ],
)
def test_intra_op_threads(workers, registered, env, cpus, threads, processes) -> None:
    chosen, reason = intra_op_threads(workers, registered, env, cpus)
    assert chosen == threads
    assert reason == f"{cpus} CPU(s) available, shared by {processes} process(es)"


def test_registry_counts_live_runs_and_drops_dead_ones(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "runs")
    assert registry.processes() == 0
    registry.register(3)  # this process, with 2 workers
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        registry.register(1, pid=other.pid)
        assert registry.processes() == 4
    finally:
        other.kill()
        other.wait()
    assert registry.processes() == 3  # the dead run's entry is ignored ...
    assert not (tmp_path / "runs" / str(other.pid)).exists()  # ... and removed
    registry.unregister()
    assert registry.processes() == 0
