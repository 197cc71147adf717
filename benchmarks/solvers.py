"""Throughput of the pdestream solvers, side by side with exponax (JAX) on the same work.

Throughput is counted in grid-point-steps per second: ``batch * n^ndim * steps / seconds``, where
``steps`` are the solver's internal steps of size ``dt`` (the configured ``dt`` of ``conf/pde/<name>.yaml``;
solvers that split a step further under a CFL limit, like Burgers, do that work inside one step).
Each solver runs in float32 from its configured defaults with ``burn_in = 0``. The peers are exponax
steppers on the same domain, grid and ``dt``, batched with ``jax.vmap``, stepped with ``jax.lax.scan``
inside one ``jax.jit`` (compiled before timing, timed to ``block_until_ready``); exponax needs the
``bench`` extra (``pip install -e .[bench]``). Ratios are pdestream / exponax.

    python -m benchmarks.solvers                      # CPU, batches 1 64 1024 (from the repository root)
    python -m benchmarks.solvers --device cuda --batches 64 1024 4096
    python -m benchmarks.solvers --quick              # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf" / "pde"


@dataclass
class Peer:
    """An exponax stepper doing the same work as a pdestream solver."""

    label: str
    build: Callable[[Any], Any]
    """``build(solver)`` -> an exponax stepper for one state ``[C, *S]``."""


@dataclass
class Case:
    name: str
    target: str
    """``module.Class`` of the pdestream solver."""
    peers: list[Peer] = field(default_factory=list)


def _ks_peer(order: int) -> Peer:
    def build(solver: Any) -> Any:
        import exponax

        return exponax.stepper.KuramotoSivashinskyConservative(
            1, solver.length, solver.n, solver.dt, fourth_order_scale=solver.params["nu"].low, order=order
        )

    default = " (exponax default)" if order == 2 else " (same scheme)"
    return Peer(f"exponax KuramotoSivashinskyConservative ETDRK{order}{default}", build)


def _burgers_peer(solver: Any) -> Any:
    import exponax

    nu = solver.params["nu"]
    return exponax.stepper.Burgers(
        1, solver.length, solver.n, solver.dt, diffusivity=0.5 * (nu.low + nu.high)
    )


CASES = [
    Case("ks", "solvers.ks.KuramotoSivashinsky", [_ks_peer(4), _ks_peer(2)]),
    Case(
        "burgers",
        "solvers.burgers.Burgers",
        [Peer("exponax Burgers ETDRK2 (spectral; pdestream: WENO5 + SSP-RK3 CFL sub-steps)", _burgers_peer)],
    ),
    Case("navier_stokes", "solvers.navier_stokes.NavierStokes2D"),
]


def load_solver(case: Case, **overrides: Any) -> Any:
    """The solver built from ``conf/pde/<name>.yaml`` with ``burn_in = 0`` and ``overrides``; ``None`` (with a
    note) if absent."""
    module_name, class_name = case.target.rsplit(".", 1)
    path = CONF / f"{case.name}.yaml"
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        print(f"# {case.name}: skipped, {case.target} is not available ({error})")
        return None
    kwargs = OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.exists() else {}
    kwargs.pop("_target_", None)
    kwargs.update(burn_in=0.0, **overrides)
    return cls(**kwargs)


def best_time(run: Callable[[], None], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``run`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def time_pdestream(solver: Any, batch: int, steps: int, device: str, repeats: int) -> float:
    u0 = solver.initial_condition(batch, torch.Generator().manual_seed(0), device=device, dtype=torch.float32)
    horizon = [steps * solver.dt]

    def run() -> None:
        solver.solve(u0, horizon)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run()  # warm-up: FFT plans, allocator, coefficient code paths
    return best_time(run, repeats)


def calibrate_steps(solver: Any, batch: int, device: str, seconds: float) -> int:
    """Internal steps that take about ``seconds`` for this solver and batch (at least 2).

    The probe grows until it takes 50 ms, so that the per-call set-up does not dominate it.
    """
    probe = 2
    while (elapsed := time_pdestream(solver, batch, probe, device, repeats=1)) < 0.05 and probe < 5000:
        probe *= 4
    return max(2, min(20000, math.ceil(probe * seconds / elapsed)))


def time_exponax(stepper: Any, u0: torch.Tensor, steps: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    state = jnp.asarray(u0.cpu().numpy())
    batched = jax.vmap(stepper)

    @jax.jit
    def rollout(u: Any) -> Any:
        return jax.lax.scan(lambda carry, _: (batched(carry), None), u, None, length=steps)[0]

    rollout(state).block_until_ready()  # compile
    return best_time(lambda: rollout(state).block_until_ready(), repeats)


def exponax_status() -> str | None:
    """``None`` if exponax and jax import, else why not."""
    try:
        import exponax  # noqa: F401
        import jax  # noqa: F401
    except ImportError as error:
        return f"exponax/jax not installed ({error}); install the bench extra: pip install -e .[bench]"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024], help="batch sizes")
    parser.add_argument("--device", default="cpu", help="torch device for pdestream (cpu, cuda, cuda:1 ...)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--quick", action="store_true", help="short runs (~0.2 s each), one repeat")
    parser.add_argument(
        "--solvers", nargs="+", choices=[case.name for case in CASES], help="only these (default: all)"
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available to torch on this machine")
    seconds, repeats = (0.2, 1) if args.quick else (1.0, args.repeats)
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, float32")
    # All pdestream timings first, so that JAX's thread pool never competes with torch's threads.
    rows = []
    for case in CASES:
        if args.solvers and case.name not in args.solvers:
            continue
        solver = load_solver(case)
        if solver is None:
            continue
        for batch in args.batches:
            steps = calibrate_steps(solver, batch, args.device, seconds)
            elapsed = time_pdestream(solver, batch, steps, args.device, repeats)
            rows.append((case, solver, batch, steps, batch * solver.n**solver.ndim * steps / elapsed))
    missing = exponax_status()
    if missing:
        print(f"# peers skipped: {missing}")
    else:
        import jax

        print(f"# exponax on jax {jax.__version__}, backend {jax.default_backend()}")
    print(f"{'solver':<15}{'batch':>7}{'grid':>10}{'steps':>7}{'point-steps/s':>15}  vs exponax")
    for case, solver, batch, steps, rate in rows:
        grid = "x".join([str(solver.n)] * solver.ndim)
        print(f"{case.name:<15}{batch:>7}{grid:>10}{steps:>7}{rate:>15.3g}", flush=True)
        if missing:
            continue
        u0 = solver.initial_condition(batch, torch.Generator().manual_seed(0))
        for peer in case.peers:
            elapsed = time_exponax(peer.build(solver), u0, steps, repeats)
            peer_rate = batch * solver.n**solver.ndim * steps / elapsed
            print(f"{'':<39}{peer_rate:>15.3g}  ratio {rate / peer_rate:5.2f}  {peer.label}", flush=True)


if __name__ == "__main__":
    main()
