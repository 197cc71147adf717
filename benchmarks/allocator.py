"""glibc's default allocator thresholds against :func:`training.process.keep_freed_memory`, on the work a
training process does: a solver round of the online stream and training steps of the default network.

Every measurement runs in a fresh process (the thresholds are process-wide and cannot be set back),
the two settings alternating ``--repeats`` times; the table gives the median of each. A process times its
work after one untimed repetition of it and reports the wall seconds, the kernel (system) CPU seconds
and the minor page faults of the timed part, and its peak resident set.

    python -m benchmarks.allocator [--repeats 3] [--frames 100] [--results benchmarks/results/allocator.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.models import in_subprocess
from training import presets
from training.process import OPENMP_WAITS, allocator_settings, keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
ONLINE = OmegaConf.load(ROOT / "conf" / "data" / "online.yaml")
SOLVER_BATCH, TRAIN_BATCH = int(ONLINE.solver_batch), int(ONLINE.batch_size)
"""Trajectories of a round and samples of a training step, as the online data configuration has them."""
STEPS = 10
"""Timed training steps."""
WORKLOADS = ("ks round", "navier_stokes round", "fno-small steps, 2D 64²")
MODES = ("default", "kept")


def _round(pde: str, frames: int) -> Callable[[], None]:
    """A solver round: ``SOLVER_BATCH`` trajectories of the preset ``pde`` over ``frames`` frames."""
    solver = instantiate(OmegaConf.load(ROOT / "conf" / "pde" / f"{pde}.yaml"))
    generator = torch.Generator().manual_seed(0)
    u0 = solver.initial_condition(SOLVER_BATCH, generator, device="cpu", dtype=torch.float32)
    times = [solver.dt_out * i for i in range(frames)]
    return lambda: solver.solve(u0, times)


def _steps() -> Callable[[], None]:
    """``STEPS`` Adam steps of ``fno-small`` on a 2D batch (4 input frames, 64²)."""
    torch.manual_seed(0)
    net = presets.build("fno-small", ndim=2, channels=1, time_history=4, time_future=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(TRAIN_BATCH, 4, 1, 64, 64), torch.randn(TRAIN_BATCH, 1, 1, 64, 64)

    def run() -> None:
        for _ in range(STEPS):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(net(x), y).backward()
            optimizer.step()

    return run


def measure(workload: str, mode: str, frames: int) -> dict[str, Any]:
    """One process's figures for ``workload`` under allocator ``mode``."""
    if mode == "kept" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() did not apply here (not glibc, or the environment sets malloc)")
    work = _steps() if workload.startswith("fno") else _round(workload.split()[0], frames)
    work()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "sys": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
        "peak_mib": after.ru_maxrss / 2**10,
    }


def table(results: dict[tuple[str, str], list[dict[str, Any]]], repeats: int, threads: int) -> str:
    def median(workload: str, mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[workload, mode])

    lines = [
        f"# glibc malloc: default thresholds vs training.process.keep_freed_memory, cpu ({platform.machine()}, "
        f"{threads} threads), torch {torch.__version__}, median of {repeats} fresh processes each",
        f"{'workload':26} {'default [s]':>11} {'kept [s]':>9} {'kept/default':>12} {'sys [s] default/kept':>21}"
        f" {'page faults default/kept':>25} {'peak RSS [MiB] default/kept':>28}",
    ]
    for workload in WORKLOADS:
        seconds = [median(workload, mode, "seconds") for mode in MODES]
        system = "/".join(f"{median(workload, mode, 'sys'):.2f}" for mode in MODES)
        faults = "/".join(f"{median(workload, mode, 'faults'):.0f}" for mode in MODES)
        peak = "/".join(f"{median(workload, mode, 'peak_mib'):.0f}" for mode in MODES)
        lines.append(
            f"{workload:26} {seconds[0]:11.2f} {seconds[1]:9.2f} {seconds[1] / seconds[0]:12.2f} {system:>21}"
            f" {faults:>25} {peak:>28}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per workload and setting")
    parser.add_argument("--frames", type=int, default=int(ONLINE.frames), help="frames of a solver round")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of each process")
    parser.add_argument("--results", type=Path, help="also write the table to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.frames < 2 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1 and --frames >= 2")
    torch.set_num_threads(args.threads)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(measure(spec["workload"], spec["mode"], spec["frames"])))
        return
    # as train.py runs by default: the caller's own allocator and OpenMP-wait settings give way to train.py's
    for name in allocator_settings():
        del os.environ[name]
    os.environ.update(OPENMP_WAITS)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for workload in WORKLOADS:
            for mode in MODES:
                spec = {"workload": workload, "mode": mode, "frames": args.frames}
                options = ("--threads", str(args.threads))
                result = in_subprocess("benchmarks.allocator", spec, f"{workload} ({mode})", *options)
                if result is None:
                    raise SystemExit(1)
                results.setdefault((workload, mode), []).append(result)
    text = table(results, args.repeats, args.threads)
    print(text)
    if args.results:
        args.results.write_text(text + "\n")


if __name__ == "__main__":
    main()
