"""How many intra-op threads a process should use: the CPUs it may run on, shared by the processes on them.

OpenMP (torch's intra-op pool) and MKL start one thread per visible core and split every operation
over all of them. When more threads are runnable than there are CPUs — several training runs, DDP ranks
or DataLoader workers on one node, or a container with a CPU quota smaller than the machine — each
parallel operation waits for a descheduled partner thread while the others spin: on 2 shared cores a
training run took 22x its solo time next to two other runs, with ten times the CPU time. So a process
takes ``floor(cpus / processes)`` threads (at least one), where

* ``cpus`` is what the process may use: its CPU affinity (``taskset``, SLURM's ``--cpus-per-task``
  binding) capped by its cgroup CPU quota (Docker ``--cpus``, Kubernetes limits, SLURM with
  ``ConstrainCores``), and
* ``processes`` counts the CPU-bound processes that share them: the ranks on this node, each with its
  DataLoader workers, and the other pdestream training runs of this user on this machine (parallel
  sweep jobs, runs started side by side), which register in :class:`Registry`.

Every function takes its inputs as arguments (with the live system as default), so the choice is tested
with injected affinities, quotas and process counts.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (``quota / period``), or ``None`` without a quota.

    Reads cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``), else cgroup v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us`` (quota ``-1``: none).
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def affinity() -> int:
    """CPUs this process may be scheduled on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_cpus(cpus: int | None = None, quota: float | None = None) -> int:
    """Whole CPUs this process can use: ``cpus`` (affinity) capped by the cgroup ``quota``, at least 1.

    A fractional quota counts down (1.5 CPUs of quota keep one thread busy, not two).
    """
    cpus = affinity() if cpus is None else cpus
    if quota is not None:
        cpus = min(cpus, math.floor(quota + 1e-9))
    return max(1, cpus)


def live_cpus() -> int:
    """:func:`available_cpus` of the live system: this process's affinity capped by its cgroup quota."""
    return available_cpus(affinity(), cgroup_quota())


def ranks_per_node(env: Mapping[str, str] | None = None) -> int:
    """Training processes of this job on this node: ``LOCAL_WORLD_SIZE`` (torchrun, Lightning), else
    SLURM's tasks per node (``SLURM_NTASKS_PER_NODE``, ``"4"`` or ``"4(x2)"``), else 1."""
    env = os.environ if env is None else env
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = env.get(key, "").split("(")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def choose_threads(cpus: int, processes: int) -> int:
    """Intra-op threads per process when ``processes`` CPU-bound processes share ``cpus`` CPUs."""
    if cpus < 1 or processes < 1:
        raise ValueError(f"need cpus >= 1 and processes >= 1, got {cpus} and {processes}")
    return max(1, cpus // processes)


class Registry:
    """Live pdestream training processes of this user on this machine, each with its process count.

    A run writes ``<directory>/<pid>`` holding how many CPU-bound processes it stands for (itself and
    its DataLoader workers) and removes it when it ends; files of processes that no longer exist are
    ignored and removed. The default directory is per user under the system's temporary directory.
    """

    def __init__(self, directory: Path | None = None) -> None:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        self.directory = directory or Path(tempfile.gettempdir()) / f"pdestream-runs-{uid}"

    def register(self, processes: int, pid: int | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / str(pid or os.getpid())).write_text(str(processes))

    def unregister(self, pid: int | None = None) -> None:
        (self.directory / str(pid or os.getpid())).unlink(missing_ok=True)

    def processes(self) -> int:
        """Processes of all live registered runs (0 when none)."""
        total = 0
        for path in self.directory.glob("*") if self.directory.is_dir() else ():
            try:
                pid, count = int(path.name), int(path.read_text())
            except (OSError, ValueError):
                continue
            if _alive(pid):
                total += count
            else:
                path.unlink(missing_ok=True)
        return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def intra_op_threads(
    workers: int = 0,
    registered: int = 0,
    env: Mapping[str, str] | None = None,
    cpus: int | None = None,
    ranks: int | None = None,
) -> tuple[int, str]:
    """Threads for a training process, and the reason in words.

    Args:
        workers: this process's CPU-bound DataLoader workers (each runs on one thread).
        registered: processes of all registered runs on this machine, this one included
            (:meth:`Registry.processes`); sibling ranks that have not registered yet are counted
            through ``env``.
        env: environment giving the ranks per node (default ``os.environ``).
        cpus: CPUs available to this process (default :func:`live_cpus`).
        ranks: this job's ranks on this node when known from its configuration (default: from ``env``).
    """
    cpus = live_cpus() if cpus is None else cpus
    ranks = ranks_per_node(env) if ranks is None else ranks
    processes = max(ranks * (1 + workers), registered)
    return choose_threads(cpus, processes), f"{cpus} CPU(s) available, shared by {processes} process(es)"
