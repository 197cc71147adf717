"""Process-wide settings of a training process: how OpenMP threads wait, and how much freed memory glibc's
allocator keeps for reuse.

``train.py`` (and the benchmarks that time its training loop) put :func:`openmp_waits` into the environment
before torch loads and call :func:`keep_freed_memory` at start.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter numbers (``<malloc.h>``)."""

MMAP_THRESHOLD = 32 * 2**20
"""Blocks up to this size come from the heap instead of a mapping of their own (glibc's largest on 64-bit)."""

TRIM_THRESHOLD = 256 * 2**20
"""Free memory the heap keeps at its top before it hands it back to the kernel."""


OPENMP_WAITS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
"""How an OpenMP thread waits at a barrier: it spins 10,000 times (some tens of microseconds), then sleeps.
Sleeping at once (``PASSIVE`` alone) pays a futex wake-up per parallel operation, thousands per second in a
small model's steps; spinning without end takes the core a partner process needs under contention
(solvers/threads.py). ``GOMP_SPINCOUNT`` is read by libgomp, the OpenMP of torch's Linux wheels, and overrides
the policy's spin count (``python -m benchmarks.default_run``, ``python -m benchmarks.contention``)."""


def openmp_waits(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of :data:`OPENMP_WAITS` to add to ``environ``: all of them, or none where the user has set
    either (a wait policy or spin count of one's own is kept whole)."""
    return {} if OPENMP_WAITS.keys() & environ.keys() else dict(OPENMP_WAITS)


def allocator_settings(environ: dict[str, str] | None = None) -> list[str]:
    """The variables of ``environ`` (default: this process's) that set or replace glibc's allocator:
    ``GLIBC_TUNABLES`` with a ``glibc.malloc`` tunable, any ``MALLOC_*``, a non-empty ``LD_PRELOAD``."""
    environ = dict(os.environ) if environ is None else environ
    return [
        name
        for name, value in environ.items()
        if name.startswith("MALLOC_")
        or (name == "GLIBC_TUNABLES" and "glibc.malloc" in value)
        or (name == "LD_PRELOAD" and bool(value))
    ]


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Make glibc's ``malloc`` reuse freed blocks of up to 32 MiB instead of mapping and unmapping them.

    By default glibc serves a block above a threshold that adapts from 128 KiB with a fresh ``mmap`` and
    returns it on ``free``, and trims the heap's top beyond twice that threshold. A training step or a
    spectral solve allocates and frees tensors of a MiB or more by the dozen, so every step touches fresh
    pages and the kernel zeroes them on the page fault (``python -m benchmarks.allocator`` measures the
    cost; docs/figures.md quotes it). The price is resident memory: freed blocks stay in the process.

    Returns whether the thresholds were set: not off Linux, not with another C library (musl's
    ``mallopt`` refuses), and not when the environment sets or replaces the allocator itself
    (:func:`allocator_settings`).
    """
    if allocator_settings(environ) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
