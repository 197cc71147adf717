"""Wall-clock cost of surrogates and solver settings: warmed up, repeated, interleaved, summarised by the median.

One timing of a rollout is noisy (first calls allocate memory, build FFT plans and compile kernels; other
processes share the machine), so every job is run ``warmup`` times untimed and then ``repeats`` times
timed, in turns — job a, b, c, a, b, c, … — so that a change of machine load during the measurement
hits every job alike and their ratios stay meaningful. Reports give the median and the fastest and
slowest repeat, name the device, and record the machine's load (:func:`machine_load`) so that timings
taken on a busy machine can be flagged.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the computation."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(seconds: Sequence[float]) -> float:
    """The median of timed repeats; NaN when nothing was timed."""
    return statistics.median(seconds) if seconds else math.nan


def time_interleaved(
    jobs: Mapping[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each call of every job: ``warmup`` untimed rounds, then ``repeats`` timed rounds in turns."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    for round_ in range(warmup + repeats):
        for name, job in jobs.items():
            synchronize(device)
            tic = time.perf_counter()
            job()
            synchronize(device)
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - tic)
    return seconds


def device_description(device: torch.device) -> str:
    """What ran the timings, e.g. ``"cpu: AMD EPYC 7B13, 2 torch threads"`` or ``"cuda:0: NVIDIA H200"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}: {torch.cuda.get_device_name(index)}"
    threads = torch.get_num_threads()
    return f"{device.type}: {cpu_name()}, {threads} torch thread{'s' if threads > 1 else ''}"


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown processor"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_load() -> dict[str, float]:
    """``timing_load``: the 1-minute load average (NaN where the OS has none), read right after the timed
    runs, and ``timing_cores``: :func:`usable_cores`. The load counts this process's own threads too, so a
    load above the usable cores means other work competed for them while the timings ran."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return {"timing_load": float(load), "timing_cores": usable_cores()}
