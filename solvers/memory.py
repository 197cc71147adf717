"""How much memory a process may still take, and the refusal of a configuration that needs more.

A grid that does not fit (``pde.n_solve=8192`` for Navier-Stokes) must stop with one sentence before it is
solved, not be killed by the kernel minutes later. The callers estimate what they need
(:meth:`~solvers.base.Solver.solve_bytes` and the data-side sums built on it) and :func:`require_memory`
compares that with

* on the host: ``MemAvailable`` of ``/proc/meminfo`` (what the kernel can hand out without swapping),
  capped by the cgroup's headroom (Docker ``--memory``, Kubernetes limits, SLURM ``--mem``): its limit less
  its usage, reclaimable page cache excepted; where neither exists (macOS) the free physical memory
  (``os.sysconf``);
* on a CUDA device: its free memory.

Every function takes its inputs as arguments (with the live system as default), so the choice is tested
with injected files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from solvers.errors import ConfigError
from solvers.threads import CGROUP_ROOT

GIB = 2**30
MEMINFO = Path("/proc/meminfo")
NO_LIMIT = 2**60
"""cgroup v1 reports "no limit" as a huge number (``PAGE_COUNTER_MAX`` pages); anything above this is none."""


def meminfo_available(path: Path = MEMINFO) -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, or ``None`` where the file or field is missing."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_headroom(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes the cgroup may still allocate, or ``None`` without a memory limit.

    cgroup v2: ``memory.max`` (``"max"``: none) less ``memory.current``; cgroup v1:
    ``memory/memory.limit_in_bytes`` less ``memory/memory.usage_in_bytes``. Inactive page cache
    (``inactive_file`` of ``memory.stat``, v1 ``total_inactive_file``) counts as free: the kernel reclaims it.
    """
    layouts = (
        (root, "memory.max", "memory.current", "inactive_file"),
        (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    )
    for folder, limit_file, usage_file, reclaimable in layouts:
        try:
            limit_text = (folder / limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int((folder / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit >= NO_LIMIT:
            return None
        return max(limit - usage + _stat(folder / "memory.stat", reclaimable), 0)
    return None


def _stat(path: Path, key: str) -> int:
    """Field ``key`` of a cgroup ``memory.stat`` file, 0 where it is missing."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def physical_available() -> int | None:
    """Free physical memory from ``os.sysconf`` (total physical memory where the free pages are not
    reported, as on macOS), or ``None``."""
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            continue
    return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes a new allocation on ``device`` can take now; ``None`` where that is unknown (nothing is refused).

    The host: ``MemAvailable`` (else :func:`physical_available`) capped by :func:`cgroup_headroom`; a CUDA
    device: its free memory.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] if torch.cuda.is_available() else None
    if device.type != "cpu":
        return None
    host = meminfo_available()
    known = [v for v in (physical_available() if host is None else host, cgroup_headroom()) if v is not None]
    return min(known) if known else None


def require_memory(
    what: str, needed: int, remedy: str, device: torch.device | str = "cpu", available: int | None = None
) -> None:
    """Refuse ``what`` if the about ``needed`` bytes it takes on ``device`` exceed what is available
    (:func:`available_memory` unless given).

    Raises:
        ConfigError: ``"<what> needs about X GiB but this machine has Y GiB available; lower <remedy>"``.
    """
    device = torch.device(device)
    available = available_memory(device) if available is None else available
    if available is not None and needed > available:
        place = "this machine" if device.type == "cpu" else str(device)
        raise ConfigError(
            f"{what} needs about {_gib(needed)} GiB but {place} has {_gib(available)} GiB available; lower {remedy}"
        )


def _gib(nbytes: int) -> str:
    """``nbytes`` in GiB, three significant digits (whole GiB from 1000 on)."""
    gib = nbytes / GIB
    return f"{gib:,.0f}" if gib >= 1000 else f"{gib:.3g}"
