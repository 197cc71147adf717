"""Reproducible trajectory generation: seeds, output times, divergence accounting, solver provenance.

Every trajectory is a pure function of ``(seed, split, index)``: its own ``torch.Generator`` (seeded
from a hash of the three) draws its PDE parameters and then its initial condition, so a trajectory
does not depend on which batch, worker or rank produced it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from solvers.base import DivergenceError, Solver
from solvers.errors import ConfigError, check_choice, check_number

SPLITS = ("train", "val", "test", "stats")


def trajectory_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed for trajectory ``index`` of ``split`` (BLAKE2b of ``"seed/split/index"``)."""
    check_choice("split", split, SPLITS)
    digest = hashlib.blake2b(f"{int(seed)}/{split}/{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def describe_solver(solver: Solver) -> dict[str, Any]:
    """Scalar settings of a solver and its parameter ranges: identifies the data it makes (cache keys, files)."""
    settings = {
        key: value
        for key, value in sorted(vars(solver).items())
        if not key.startswith("_") and isinstance(value, bool | int | float | str)
    }
    params = {
        name: [spec.low, spec.high, "log"] if spec.log else [spec.low, spec.high]
        for name, spec in solver.params.items()
    }
    return {
        "class": f"{type(solver).__module__}.{type(solver).__qualname__}",
        "ndim": solver.ndim,
        "channels": list(solver.channels),
        **settings,
        "params": params,
    }


def solver_summary(solver: Solver) -> str:
    """One line naming a solver's class, grid, step and parameter ranges (for error messages)."""
    info = describe_solver(solver)
    ranges = ", ".join(f"{k}={v}" for k, v in info["params"].items())
    length = "" if "length" in solver.params else f"length={solver.length:g}, "  # else among the ranges
    return f"{type(solver).__name__}(n={solver.n}, {length}dt={solver.dt:g}, {ranges})"


@dataclass
class DivergenceCounter:
    """Counts generated and diverged trajectories; stops when the diverged fraction gets too large.

    The check starts once ``min_count`` trajectories were attempted, so one unlucky batch at the
    start does not stop a run.
    """

    max_fraction: float
    attempted: int = 0
    diverged: int = 0
    min_count: int = 16
    last_message: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        check_number("max_divergence_fraction", self.max_fraction, low=0, high=1)

    @property
    def fraction(self) -> float:
        return self.diverged / max(self.attempted, 1)

    def update(self, made: Trajectories, solver: Solver) -> None:
        """Count a generated batch; raise :class:`ConfigError` naming the pde config if too many diverged."""
        self.attempted += made.attempted
        self.diverged += made.diverged
        if made.diverged:
            self.last_message = made.message
        if self.attempted >= self.min_count and self.fraction > self.max_fraction:
            raise ConfigError(
                f"{self.diverged} of {self.attempted} trajectories diverged ({self.fraction:.0%} > "
                f"max_divergence_fraction={self.max_fraction:g}): the pde config {solver_summary(solver)} "
                f"is unstable; reduce its dt, narrow its parameter ranges or shorten the rollout. "
                f"Last report: {self.last_message}"
            )


@dataclass
class Trajectories:
    """Generated trajectories: ``u`` ``[B, T, C, *S]``, ``params`` ``{name: [B]}``, ``index`` ``[B]``.

    ``attempted`` counts the trajectories asked for (diverged ones are not in ``u``); ``message``
    is the solver's divergence report, if any.
    """

    @property
    def diverged(self) -> int:
        return self.attempted - len(self.index)

    u: Tensor
    params: dict[str, Tensor]
    index: Tensor
    attempted: int
    message: str = ""


def generate_bytes(solver: Solver, batch: int, frames: int, dtype: torch.dtype = torch.float32) -> int:
    """About the peak memory (bytes) of :func:`generate` for ``batch`` trajectories of ``frames`` frames: the
    float64 initial conditions and the solve (:meth:`~solvers.base.Solver.solve_bytes`)."""
    initial = batch * len(solver.channels) * solver.n_solve**solver.ndim * 8
    return initial + solver.solve_bytes(batch, frames, dtype)


def generate(
    solver: Solver,
    seed: int,
    split: str,
    indices: Sequence[int],
    times: Tensor,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    draw_params: Callable[[torch.Generator, int], dict[str, Tensor]] | None = None,
) -> Trajectories:
    """Solve the trajectories ``indices`` of ``split`` at ``times``; diverged ones are dropped and counted.

    Parameters (float64) and initial conditions are drawn on the CPU from each trajectory's own
    generator, then the whole batch is integrated at once on ``device``. ``draw_params(generator, row)``
    replaces the solver's own parameter draw (the training stream's :class:`~data.sampling.ParameterSampler`);
    it must consume the generator as the solver does, so that the initial conditions stay the same.
    """
    params: list[dict[str, Tensor]] = []
    u0 = torch.empty(len(indices), len(solver.channels), *[solver.n_solve] * solver.ndim, dtype=torch.float64)
    for row, index in enumerate(indices):
        generator = torch.Generator().manual_seed(trajectory_seed(seed, split, index))
        params.append(
            solver.sample_params(1, generator) if draw_params is None else draw_params(generator, row)
        )
        u0[row] = solver.initial_condition(1, generator, device="cpu", dtype=torch.float64)[0]
    batch_params = {name: torch.cat([p[name] for p in params]) for name in solver.params}
    u0 = u0.to(device=device, dtype=dtype)
    index = torch.as_tensor(list(indices), dtype=torch.int64)
    try:
        u = solver.solve(u0, times, {k: v.to(device) for k, v in batch_params.items()})
        bad: list[int] = []
        message = ""
    except DivergenceError as error:
        u, bad, message = error.result, error.indices, str(error)
    if bad:
        keep = torch.ones(len(index), dtype=torch.bool)
        keep[bad] = False
        u = u[keep.to(u.device)]
        batch_params = {k: v[keep] for k, v in batch_params.items()}
        index = index[keep]
    return Trajectories(u=u, params=batch_params, index=index, attempted=len(indices), message=message)
