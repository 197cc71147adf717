"""How much the solve grid matters for the FNO Navier-Stokes data set: 64² solves against 256² solves.

The FNO data set (Li et al., ICLR 2021) is solved at 256² and stored at 64² (every 4th point). This script
draws the same initial vorticity on the 256² grid, solves it once at 256² (stored at 64², the data set)
and once at 64² and 128² from the same start (spectrally truncated), and prints the relative L2
distance of each to the data set at the stored frames t = 1, 2, …, T:

    python -m benchmarks.ns_resolution                   # ν = 1e-5, T = 20, 4 trajectories (CPU: minutes)
    python -m benchmarks.ns_resolution --nu 1e-3 --horizon 50
    python -m benchmarks.ns_resolution --quick           # a smoke run of seconds (16² vs 64²)
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.solvers import CONF
from solvers.base import spectral_resample


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖a − b‖ / ‖b‖`` per trajectory and frame, over the spatial axes: ``[B, T]``."""
    return (a - b).flatten(2).norm(dim=-1) / b.flatten(2).norm(dim=-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nu", type=float, default=1e-5)
    parser.add_argument("--horizon", type=int, default=20, help="last stored time T (frames at 1 … T)")
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--stored", type=int, default=64, help="grid of the stored frames")
    parser.add_argument("--fine", type=int, default=256, help="grid the data set is solved on")
    parser.add_argument("--quick", action="store_true", help="16² stored, 64² fine, T = 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.stored, args.fine, args.horizon = 16, 64, 2
    config = OmegaConf.load(CONF / "navier_stokes.yaml")
    config.nu = args.nu
    times = torch.arange(0, args.horizon + 1, dtype=torch.float64)
    data_solver = instantiate(config, n=args.stored, n_solve=args.fine)
    w0 = data_solver.initial_condition(
        args.trajectories, torch.Generator().manual_seed(0), dtype=torch.float64
    )
    tic = time.perf_counter()
    data = data_solver.solve(w0, times)[:, 1:]
    print(
        f"# nu={args.nu:g}, {args.trajectories} trajectories, data set: solved at {args.fine}², stored at "
        f"{args.stored}² ({time.perf_counter() - tic:.0f} s); float64, CFL sub-steps at Courant number "
        f"{config.cfl:g}"
    )
    grids = [g for g in (args.stored, 2 * args.stored) if g < args.fine]
    shown = sorted({1, *range(5, args.horizon + 1, 5), args.horizon})
    print("solve grid  " + "  ".join(f"t={t:<7d}" for t in shown) + "  (relative L2 to the data set, mean)")
    for grid in grids:
        solver = instantiate(config, n=args.stored, n_solve=grid)
        out = solver.solve(spectral_resample(w0, grid, 2), times)[:, 1:]
        error = relative_l2(out, data).mean(dim=0)
        print(f"{grid:>4d}²       " + "  ".join(f"{error[t - 1].item():<9.2e}" for t in shown))


if __name__ == "__main__":
    main()
