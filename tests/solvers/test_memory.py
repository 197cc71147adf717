"""Available memory: /proc/meminfo, cgroup v1/v2 limits, the sysconf fallback and the refusal sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import solvers.memory
from solvers import KuramotoSivashinsky, NavierStokes2D
from solvers.errors import ConfigError
from solvers.memory import (
    GIB,
    available_memory,
    cgroup_headroom,
    meminfo_available,
    physical_available,
    require_memory,
)

MEMINFO = "MemTotal:       24731400 kB\nMemFree:        21298344 kB\nMemAvailable:   22675708 kB\n"


def test_meminfo_available(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO)
    assert meminfo_available(tmp_path / "meminfo") == 22675708 * 1024
    (tmp_path / "old").write_text("MemTotal: 1024 kB\n")  # kernels before 3.14 lack the field
    assert meminfo_available(tmp_path / "old") is None
    assert meminfo_available(tmp_path / "missing") is None


def test_cgroup_v2_headroom_counts_inactive_page_cache_as_free(tmp_path: Path) -> None:
    assert cgroup_headroom(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text(str(3 * GIB))
    assert cgroup_headroom(tmp_path) is None
    (tmp_path / "memory.max").write_text(str(8 * GIB))
    assert cgroup_headroom(tmp_path) == 5 * GIB
    (tmp_path / "memory.stat").write_text(f"anon 100\ninactive_file {GIB}\nactive_file 7\n")
    assert cgroup_headroom(tmp_path) == 6 * GIB
    (tmp_path / "memory.current").write_text(str(9 * GIB))
    (tmp_path / "memory.stat").write_text("")
    assert cgroup_headroom(tmp_path) == 0  # over the limit: nothing left


def test_cgroup_v1_headroom_and_its_no_limit_value(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(str(4 * GIB))
    (v1 / "memory.usage_in_bytes").write_text(str(GIB))
    (v1 / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {GIB}\n")
    assert cgroup_headroom(tmp_path) == 4 * GIB
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 without a limit
    assert cgroup_headroom(tmp_path) is None


def test_available_memory_is_the_smaller_of_host_and_cgroup(monkeypatch) -> None:
    monkeypatch.setattr(solvers.memory, "meminfo_available", lambda: 20 * GIB)
    monkeypatch.setattr(solvers.memory, "cgroup_headroom", lambda: 6 * GIB)
    assert available_memory() == 6 * GIB
    monkeypatch.setattr(solvers.memory, "cgroup_headroom", lambda: None)
    assert available_memory("cpu") == 20 * GIB
    monkeypatch.setattr(solvers.memory, "meminfo_available", lambda: None)  # macOS: no /proc
    monkeypatch.setattr(solvers.memory, "physical_available", lambda: 3 * GIB)
    assert available_memory() == 3 * GIB
    monkeypatch.setattr(solvers.memory, "physical_available", lambda: None)
    assert available_memory() is None
    assert available_memory("meta") is None  # a device whose memory is not known


def test_physical_available_is_positive_here() -> None:
    assert physical_available() > 0


def test_require_memory_refuses_with_one_sentence() -> None:
    require_memory("solving", 2 * GIB, "pde.n", available=3 * GIB)
    require_memory("solving", 2 * GIB, "pde.n", available=None)  # unknown: nothing refused
    with pytest.raises(ConfigError) as refused:
        require_memory("solving 64 trajectories", 5000 * GIB, "pde.n_solve or chunk", available=GIB // 2)
    assert str(refused.value) == (
        "solving 64 trajectories needs about 5,000 GiB but this machine has 0.5 GiB available; "
        "lower pde.n_solve or chunk"
    )
    with pytest.raises(ConfigError, match=r"needs about 12 GiB but cuda:1 has 8 GiB available; lower x"):
        require_memory("y", 12 * GIB, "x", device="cuda:1", available=8 * GIB)


def test_solve_bytes_scale_with_the_solve_grid_batch_and_frames() -> None:
    ks = KuramotoSivashinsky(n=256, dt_out=1.0)
    assert ks.solve_bytes(2, 10) == 2 * 4 * (28 * 256 + 3 * 10 * 256)
    assert ks.solve_bytes(2, 10, dtype=torch.float64) == 2 * ks.solve_bytes(2, 10)
    fine = NavierStokes2D(n=64, n_solve=256, length=1.0, dt=0.025, dt_out=1.0)
    assert fine.solve_bytes(1, 5) == 4 * (26 * 256**2 + 3 * 5 * 64**2)  # work at n_solve, frames at n
