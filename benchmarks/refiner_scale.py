"""PDE-Refiner's refined quantity per equation: which ``difference_weight`` keeps the reference's signal-to-noise.

PDE-Refiner (Lippe et al. 2023; PDEArena ``configs/kuramotosivashinsky1d.yaml``) refines the raw one-step
increment over ``difference_weight = 0.3`` on its Kuramoto-Sivashinsky data (``pde=ks_lpsda``, the data
``experiment=ks_pde_refiner`` trains on). Its noise levels (0.086, 7.4e-3, 6.5e-4 for ``min_noise_std = 4e-7``)
are fixed, so what a refinement step resolves depends on that quantity's spread. For each PDE preset this
script solves a few trajectories at the preset's ``dt_out`` and prints the standard deviation of the raw
increment, of the refined quantity at ``difference_weight = 0.3``, and the ``difference_weight`` that gives
the spread of the KS set-up (``model.difference_weight=<value>`` on the command line):

    python -m benchmarks.refiner_scale                # 8 trajectories of 20 frames per PDE (CPU: minutes)
    python -m benchmarks.refiner_scale --quick        # a smoke run of seconds (small grids)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from data.timegrid import TimeGrid
from data.trajectories import generate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "refiner_scale.txt"
EXPERIMENT = "ks_pde_refiner"
"""PDEArena's KS set-up (its data ``pde=ks_lpsda``, a model step of ``data.frame_stride`` frames), whose
spread the other rows are matched to."""
PDES = ("ks", "burgers", "navier_stokes", "kolmogorov")
"""Presets measured at their own ``dt_out`` (their model step in ``python train.py pde=<name>``)."""
DIFFERENCE_WEIGHT = 0.3
"""PDEArena's KS ``difference_weight``."""


def increment_std(overrides: list[str], trajectories: int, frames: int, n: int | None) -> tuple[str, float]:
    """The PDE preset (``pde=<name>``) and the standard deviation of the model step's increment ``u(t + Δt) − u(t)`` (over
    trajectories, frames, channels and grid points) for the training config of ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    stride = cfg.data.get("frame_stride", 1)
    solver = instantiate(cfg.pde)
    if n is not None and solver.ndim == 2:  # the 1D presets keep their grids: a coarse KS grid diverges
        solver = instantiate(cfg.pde, n=n)
    times = TimeGrid.of_solver(solver, frames * stride).times()
    u = generate(solver, 0, "train", range(trajectories), times).u[:, ::stride]
    if len(u) == 0:
        raise RuntimeError(f"{' '.join(overrides)}: every trajectory diverged; nothing to measure")
    return f"pde={cfg.hydra.runtime.choices.pde}", float((u[:, 1:] - u[:, :-1]).double().std())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 trajectories, 4 frames, 2D on 16² grids")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    trajectories, frames, n = (2, 4, 16) if args.quick else (args.trajectories, args.frames, None)
    runs = [[f"experiment={EXPERIMENT}"], *([f"pde={pde}"] for pde in PDES)]
    stds = [increment_std(overrides, trajectories, frames, n) for overrides in runs]
    target = stds[0][1] / DIFFERENCE_WEIGHT
    lines = [
        f"# PDE-Refiner's refined quantity: {trajectories} trajectories x {frames} model steps per row"
        f"{f' (2D on {n}² grids)' if n else ''}; pde=ks_lpsda as experiment={EXPERIMENT} steps: 4 frames",
        f"# matched to experiment={EXPERIMENT} / {DIFFERENCE_WEIGHT} (PDEArena's KS set-up): refined std "
        f"{target:.3f}",
        f"{'data':<18} {'increment std':>14} {'refined std at 0.3':>19} {'difference_weight':>18}",
    ]
    for label, std in stds:
        lines.append(f"{label:<18} {std:>14.4f} {std / DIFFERENCE_WEIGHT:>19.3f} {std / target:>18.3g}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
