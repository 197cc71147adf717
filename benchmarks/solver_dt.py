"""How large may a preset's internal step ``dt`` be? Its error against a fine reference, beside float32 round-off.

For each ``dt`` the preset (``conf/pde/<name>.yaml``, its burn-in kept) solves the same ``--trajectories`` starts
and parameters in float64 over ``--frames`` frames ``dt_out`` apart. The error is the largest relative L2 distance,
over trajectories and over the frames after the first, to the solve at ``--reference``. The float32 rows solve
every ``dt`` again in the dtype of generated training data: their error is what the stored data carries, with
float32 round-off as its floor, which a smaller temporal error cannot improve on. Time is per trajectory and frame,
for the whole batch on this process's threads.

    python -m benchmarks.solver_dt          # navier_stokes: benchmarks/results/solver_dt_navier_stokes.txt
    python -m benchmarks.solver_dt --pde kolmogorov --dts 0.01 0.02 0.05 0.1 --reference 0.002
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from data.config import SOLVER_TARGETS, build_from_config
from solvers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HEADER = f"{'dt':>8s}  {'dtype':8s} {'max rel. L2 error':>18s} {'ms per trajectory-frame':>24s}"


def row(dt: float, dtype: torch.dtype, error: float, ms: float, preset: bool) -> str:
    """One line of the table; the preset's ``dt`` is marked."""
    name = str(dtype).removeprefix("torch.")
    return f"{dt:>8g}  {name:8s} {error:>18.2e} {ms:>24.2f}" + ("  preset" if preset else "")


def parse(text: str) -> list[dict[str, object]]:
    """The rows of a results file: ``dt``, ``dtype``, ``error``, ``ms`` and ``preset``."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or fields[0] == "dt":
            continue
        rows.append(
            {
                "dt": float(fields[0]),
                "dtype": fields[1],
                "error": float(fields[2]),
                "ms": float(fields[3]),
                "preset": fields[-1] == "preset",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pde", default="navier_stokes", help="a preset of conf/pde/")
    parser.add_argument("--dts", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--reference", type=float, default=0.005, help="dt of the reference solve")
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument(
        "--out", type=Path, help="results file (default: benchmarks/results/solver_dt_<pde>.txt)"
    )
    args = parser.parse_args(argv)
    path = ROOT / "conf" / "pde" / f"{args.pde}.yaml"
    if not path.exists():
        allowed = sorted(p.stem for p in path.parent.glob("*.yaml"))
        parser.error(f"--pde {args.pde}: no such preset; allowed: {', '.join(allowed)}")
    if args.trajectories < 1 or args.frames < 2:
        parser.error(f"need --trajectories >= 1 and --frames >= 2, got {args.trajectories}, {args.frames}")
    if min(*args.dts, args.reference) <= 0:
        parser.error(f"--dts {args.dts} and --reference {args.reference}: every step must be > 0")
    preset = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    generator = torch.Generator().manual_seed(0)
    try:
        solver = build_from_config(preset, SOLVER_TARGETS, "pde")
        u0 = solver.initial_condition(args.trajectories, generator, dtype=torch.float64)
    except ConfigError as error:  # e.g. pde=external: files, no solver to draw starts from
        parser.error(f"--pde {args.pde}: {error}")
    params = solver.sample_params(args.trajectories, generator)
    times = torch.arange(args.frames, dtype=torch.float64) * float(preset["dt_out"])

    def solve(dt: float, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
        at_dt = build_from_config({**preset, "dt": dt, "dt_out": None}, SOLVER_TARGETS, "pde")
        start = time.perf_counter()
        u = at_dt.solve(u0.to(dtype), times.to(dtype), params)
        seconds = time.perf_counter() - start
        return u.double(), seconds * 1e3 / (args.trajectories * (args.frames - 1))

    reference, _ = solve(args.reference, torch.float64)

    def error(u: torch.Tensor) -> float:
        distance = (u - reference)[:, 1:].flatten(2).norm(dim=2)
        return (distance / reference[:, 1:].flatten(2).norm(dim=2)).max().item()

    preset_dt = float(preset["dt"])
    lines = [
        f"# {args.pde} (conf/pde/{args.pde}.yaml): {args.trajectories} trajectories, {args.frames} frames "
        f"{preset['dt_out']:g} apart, reference dt {args.reference:g}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"# python -m benchmarks.solver_dt --pde {args.pde}",
        HEADER,
    ]
    for dtype, dt in itertools.product((torch.float64, torch.float32), sorted({*args.dts, preset_dt})):
        u, ms = solve(dt, dtype)
        lines.append(row(dt, dtype, error(u), ms, dt == preset_dt))
        print(lines[-1], flush=True)
    out = args.out or RESULTS / f"solver_dt_{args.pde}.txt"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
