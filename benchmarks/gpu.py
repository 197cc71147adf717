"""Ready for a GPU: solver throughput against the memory-bandwidth roofline, and the published set-ups' training
steps in bf16 autocast.

Solvers: KS at batch 4096 × 256 and 2D Navier-Stokes at 64 × 256², from ``conf/pde/``, float32. The bytes a step
moves are counted, not guessed: every tensor operation of a solve is intercepted (a ``TorchDispatchMode``) and
its inputs and outputs are summed, the traffic of the solver's operations as they run, one kernel each, no
fusion. The roofline is the device's measured copy bandwidth (read + write of a 1 GiB buffer); a solver's
fraction is ``bytes per step × steps per second / roofline``. Models: every experiment of
``conf/experiment/`` (the published set-ups: network, grid and batch size), one training step (forward and
backward under ``torch.autocast(bfloat16)``, Adam) timed after warm-up; peak memory is CUDA's
``max_memory_allocated`` (on the CPU the growth of the process's maximum resident set).

    python -m benchmarks.gpu                       # on a GPU, under 5 minutes; writes benchmarks/results/gpu.json
    python -m benchmarks.gpu --tiny --device cpu   # a smoke run: 32-point grids, batch 2 (the tests run this)
    python -m benchmarks.gpu --experiments ns_fno ks_unet
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks.solvers import CASES, calibrate_steps, load_solver, time_pdestream
from evaluation.timing import device_description, synchronize
from training.checkpoint import build_network
from training.run import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gpu.json"
SOLVERS = {"ks": (4096, None), "navier_stokes": (64, 256)}
"""Solver batch and grid (``None``: the preset's) of the full run."""
TINY_SOLVERS = {"ks": (8, 64), "navier_stokes": (2, 32)}
TINY_GRID = 32
"""``--tiny``: the grid of every model (each published network, on 32 points per axis, batch 2)."""


class CountBytes(TorchDispatchMode):
    """Sums the bytes of every tensor operation's inputs and outputs while active."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def copy_bandwidth(device: str, mib: int, repeats: int = 10) -> float:
    """Bytes per second of ``y.copy_(x)`` (one read and one write of each byte), the fastest of ``repeats``."""
    x = torch.empty(mib * 2**18, device=device).fill_(1.0)
    y = torch.empty_like(x)
    best = math.inf
    for _ in range(repeats + 1):
        synchronize(torch.device(device))
        start = time.perf_counter()
        y.copy_(x)
        synchronize(torch.device(device))
        best = min(best, time.perf_counter() - start)
    return 2 * x.numel() * x.element_size() / best


def solver_row(name: str, batch: int, n: int | None, device: str, seconds: float, roofline: float) -> dict:
    case = next(c for c in CASES if c.name == name)
    solver = load_solver(case, **({} if n is None else {"n": n}))
    steps = calibrate_steps(solver, batch, device, seconds)
    elapsed = time_pdestream(solver, batch, steps, device, repeats=3)
    u0 = solver.initial_condition(batch, torch.Generator().manual_seed(0), device=device, dtype=torch.float32)
    counted = CountBytes()
    with counted:
        solver.solve(u0, [2 * solver.dt])
    with CountBytes() as once:
        solver.solve(u0, [solver.dt])
    per_step = counted.bytes - once.bytes  # the second step's traffic, without the solve's set-up
    rate = steps / elapsed
    points = batch * solver.n**solver.ndim
    return {
        "solver": name,
        "batch": batch,
        "grid": f"{solver.n}^{solver.ndim}",
        "steps_per_s": rate,
        "point_steps_per_s": points * rate,
        "bytes_per_step": per_step,
        "state_bytes": points * 4,
        "bandwidth": per_step * rate,
        "roofline_fraction": per_step * rate / roofline,
    }


def experiment_config(name: str, tiny: bool) -> dict[str, Any]:
    """The model, PDE and batch size of ``experiment=<name>`` (``--tiny``: a 32-point grid, batch 2)."""
    overrides = [f"experiment={name}", "logger=none"]
    if tiny:
        overrides += [f"pde.n={TINY_GRID}", "data.batch_size=2"]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "pde")} | {
        "batch_size": int(cfg.data.batch_size)
    }


def model_row(name: str, device: str, steps: int, tiny: bool) -> dict[str, Any]:
    """One training step of the experiment's network at its batch size and grid, bf16 autocast, Adam."""
    cfg = experiment_config(name, tiny)
    model, batch = cfg["model"], cfg["batch_size"]
    torch.manual_seed(0)
    net = build_network(model).to(device)
    shape = (model["channels"], *(int(cfg["pde"]["n"]),) * model["ndim"])
    x = torch.randn(batch, model["time_history"], *shape, device=device)
    y = torch.randn(batch, model["time_future"], *shape, device=device)
    cond = torch.randn(batch, model["cond_dim"], device=device) if model.get("cond_dim") else None
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_of: Callable[[], torch.Tensor] = (
        (lambda: net.loss(x, y, cond))
        if hasattr(net, "loss")
        else (lambda: (net(x, cond) - y).square().mean())
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            loss = loss_of()
        loss.float().mean().backward()  # the refiner's loss is per sample
        optimizer.step()

    cuda = device.startswith("cuda")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    warmup = 1 if tiny else 2  # kernels chosen, optimizer state allocated
    for i in range(steps + warmup):
        synchronize(torch.device(device))
        start = time.perf_counter()
        step()
        synchronize(torch.device(device))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() - base
        if cuda
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024
    )
    return {
        "experiment": name,
        "model": model.get("name"),
        "params": sum(p.numel() for p in net.parameters()),
        "batch": batch,
        "grid": f"{shape[1]}^{model['ndim']}",
        "steps_per_s": 1 / statistics.median(times),
        "peak_mib": peak / 2**20,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"device: {results['device']} · copy bandwidth (roofline) {results['roofline'] / 1e9:.0f} GB/s",
        "",
        f"{'solver':<14}{'batch':>6}{'grid':>8}{'steps/s':>10}{'MB/step':>10}{'GB/s':>8}{'roofline':>10}",
    ]
    for r in results["solvers"]:
        lines.append(
            f"{r['solver']:<14}{r['batch']:>6}{r['grid']:>8}{r['steps_per_s']:>10.1f}"
            f"{r['bytes_per_step'] / 1e6:>10.1f}{r['bandwidth'] / 1e9:>8.1f}{r['roofline_fraction']:>10.1%}"
        )
    lines += [
        "",
        f"{'experiment':<20}{'model':<16}{'params':>13}{'batch':>6}{'grid':>8}{'steps/s':>9}{'peak MiB':>10}",
    ]
    for r in results["models"]:
        lines.append(
            f"{r['experiment']:<20}{r['model']:<16}{r['params']:>13,}{r['batch']:>6}{r['grid']:>8}"
            f"{r['steps_per_s']:>9.2f}{r['peak_mib']:>10.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="small grids and batches: a smoke run of seconds")
    parser.add_argument("--out", type=Path, default=OUT)
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    parser.add_argument("--experiments", nargs="+", choices=experiments, default=experiments)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = args.device
    roofline = copy_bandwidth(device, 16 if args.tiny else 1024)
    results: dict[str, Any] = {
        "device": device_description(torch.device(device)),
        "tiny": args.tiny,
        "roofline": roofline,
        "solvers": [],
        "models": [],
    }
    for solver, (batch, n) in (TINY_SOLVERS if args.tiny else SOLVERS).items():
        results["solvers"].append(solver_row(solver, batch, n, device, 0.2 if args.tiny else 5.0, roofline))
    for experiment in args.experiments:
        results["models"].append(model_row(experiment, device, 1 if args.tiny else 10, args.tiny))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
