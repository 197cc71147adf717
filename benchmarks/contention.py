"""Sharing a machine: how much do other processes slow pdestream down?

Two figures, each a ratio measured within one invocation (solo and contended alternately, ``--rounds``
times, best of each), so that the machine's background load lands on both sides:

* **solver** — the KS solver (n = 256, float32, batch ``--batch``, default 1024) in point-steps per second,
  alone and next to one busy process (a Python loop that keeps one core busy). Goal: the competitor cuts
  the throughput by at most 2.5x. For comparison the same solve with every operation split over all
  intra-op threads (the solver's behaviour before it split batches into parts), alone and contended.
* **training** — a shortened default run (``python train.py`` with ``trainer.max_steps=--steps``, one
  validation at the end, ``logger=none``; validation sets cached beforehand by a one-step run) alone,
  then two of them started together. Goal: each of the two finishes within 2.5x the solo wall time.
  ``--fixed-threads N`` adds two runs together with ``threads=N`` (the count torch picks by itself is
  the number of cores) for comparison.

``python -m benchmarks.contention [--batch 1024] [--steps 600] [--rounds 2] [--fixed-threads 2]``
(from the repository root). ``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from solvers.ks import KuramotoSivashinsky
from solvers.threads import live_cpus

ROOT = Path(__file__).resolve().parents[1]
BUSY = "while True: pass"


def busy() -> subprocess.Popen:
    """A competing process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", BUSY])


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def solver_rate(
    solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch: int, frames: int
) -> float:
    """KS point-steps per second of ``solve(u0, t)`` (best of 3 after a warm-up)."""
    ks = KuramotoSivashinsky(n=256, length=64.0, dt=0.25, nu=1.0, burn_in=0.0)
    u0 = ks.initial_condition(batch, generator=torch.Generator().manual_seed(0))
    t = torch.arange(frames + 1, dtype=torch.float64)  # output interval 1.0: 4 steps of 0.25 each
    solve(u0, t[:2])
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        solve(u0, t)
        best = max(best, batch * ks.n * 4 * frames / (time.perf_counter() - start))
    return best


def solver_figures(batch: int, frames: int, rounds: int) -> dict[str, float]:
    ks = KuramotoSivashinsky(n=256, length=64.0, dt=0.25, nu=1.0, burn_in=0.0)
    ways = {
        "parts": lambda u0, t: ks.solve(u0, t),
        # the integration itself, on all intra-op threads: how every solve ran before
        "all threads per operation": lambda u0, t: ks._integrate(u0, t, None),
    }
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, solve in ways.items():
            key = f"{name}, alone"
            best[key] = max(best.get(key, 0.0), solver_rate(solve, batch, frames))
            competitor = busy()
            try:
                time.sleep(0.2)
                key = f"{name}, next to a busy process"
                best[key] = max(best.get(key, 0.0), solver_rate(solve, batch, frames))
            finally:
                stop(competitor)
    return best


def train_command(tmp: Path, name: str, steps: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "logger=none",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"data.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={tmp / name}",
        *extra,
    ]


def run_together(commands: list[list[str]], logs: list[Path]) -> list[tuple[float, float]]:
    """Start ``commands`` together (output to ``logs``); (wall seconds, CPU seconds) of each."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["WANDB_MODE"] = "disabled"
    start = time.perf_counter()
    procs = []
    for command, log in zip(commands, logs, strict=True):
        with open(log, "w") as out:
            procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    results: dict[int, tuple[float, float]] = {}
    while len(results) < len(procs):
        pid, status, usage = os.wait4(-1, 0)  # whichever ends first, with its own CPU time
        results[pid] = (time.perf_counter() - start, usage.ru_utime + usage.ru_stime)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            tail = logs[[p.pid for p in procs].index(pid)].read_text()[-3000:]
            raise SystemExit(f"a training run failed (exit {code}):\n{tail}")
    for proc in procs:
        proc.returncode = 0  # reaped by wait4 above
    return [results[p.pid] for p in procs]


def training_figures(
    steps: int, rounds: int, fixed: int | None, tmp: Path
) -> dict[str, list[tuple[float, float]]]:
    run_together([train_command(tmp, "cache", 1, [])], [tmp / "cache.log"])  # validation sets, cached for all
    cases = {"solo": ([], 1), "two together": ([], 2)}
    if fixed is not None:
        cases[f"two together, threads={fixed}"] = ([f"threads={fixed}"], 2)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for r in range(rounds):
        for name, (extra, count) in cases.items():
            names = [
                f"{name}-{r}-{i}".replace(" ", "_").replace(",", "").replace("=", "") for i in range(count)
            ]
            commands = [train_command(tmp, n, steps, extra) for n in names]
            times[name].extend(run_together(commands, [tmp / f"{n}.log" for n in names]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=10, help="output frames per solve (4 steps each)")
    parser.add_argument("--steps", type=int, default=600, help="training steps of the shortened default run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fixed-threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one round")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.frames, args.steps, args.rounds = 512, 2, 2, 1
    cpus = live_cpus()
    print(
        f"# {platform.processor() or platform.machine()}, {cpus} CPU(s) available, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads; best of {args.rounds} alternating round(s)"
    )
    print(f"\nKS solver, n = 256, batch {args.batch}, float32 (point-steps/s)")
    rates = solver_figures(args.batch, args.frames, args.rounds)
    for name, rate in rates.items():
        print(f"  {name:<52} {rate:.3g}")
    for name in ("parts", "all threads per operation"):
        cut = rates[f"{name}, alone"] / rates[f"{name}, next to a busy process"]
        goal = "  (goal <= 2.5)" if name == "parts" else ""
        print(f"  {name}: a busy process cuts the throughput {cut:.2f}x{goal}")
    if args.skip_training:
        return
    print(
        f"\nShortened default run: python train.py logger=none trainer.max_steps={args.steps} "
        f"trainer.val_check_interval={args.steps} (wall s / CPU s per run)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        times = training_figures(args.steps, args.rounds, args.fixed_threads, Path(tmp))
    for name, runs in times.items():
        print(f"  {name:<32} " + "  ".join(f"{wall:.1f}/{cpu:.1f}" for wall, cpu in runs))
    solo = min(wall for wall, _ in times["solo"])
    for name, runs in times.items():
        if name == "solo":
            continue
        pairs = [max(runs[i][0], runs[i + 1][0]) for i in range(0, len(runs), 2)]
        goal = "  (goal <= 2.5)" if name == "two together" else ""
        print(f"  {name}: the slower of the two takes {min(pairs) / solo:.2f}x the solo time{goal}")


if __name__ == "__main__":
    main()
