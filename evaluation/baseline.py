"""The classical solver as a baseline: its cost-accuracy curve over coarser grids and larger steps.

From the state at which the surrogate's rollout starts, the solver is run at its reference settings
(grid ``n``, internal step ``dt``), on coarser grids ``n / r`` (the start state truncated spectrally,
the result interpolated spectrally back to ``n``) and with larger internal steps ``f · dt`` (outputs
every ``max(1, ceil(f·dt / dt_out))`` frames). Each setting's error against the test truth and its wall
time per rollout step give one point of the curve that the surrogate is placed on. The solves that give
the error are not timed; each setting carries a ``job`` that solves the first batch again, timed with the
surrogates by :func:`evaluation.timing.time_interleaved`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from data.config import SOLVER_TARGETS, build_from_config
from evaluation.metrics import relative_l2
from evaluation.timing import median_seconds
from solvers.base import DivergenceError, spectral_resample
from solvers.errors import ConfigError


@dataclass
class SolverRun:
    """One solver setting: its prediction of the test truth and its cost.

    ``pred`` is ``[N, len(index), C, *S]`` on the reference grid at the rollout frames ``index``
    (``None`` if the setting was unstable or impossible). ``job(frames)`` gives the timed unit: a solve
    of the first batch of ``batch_size`` trajectories over at least ``frames`` rollout frames (or the
    whole horizon), and the number of frames it covers (``None`` unless the setting ran); ``seconds``
    holds the wall time per rollout step of each timed repeat.
    """

    label: str
    n: int
    dt: float
    index: list[int]
    pred: Tensor | None = None
    status: str = "ok"
    job: Callable[[int], tuple[Callable[[], Tensor], int]] | None = field(default=None, repr=False)
    seconds: list[float] = field(default_factory=list)

    @property
    def seconds_per_step(self) -> float:
        """Median wall time per rollout step over the timed repeats (NaN before timing)."""
        return median_seconds(self.seconds)


def settings(
    pde: Mapping[str, Any], coarsen: Sequence[int], dt_factors: Sequence[int]
) -> list[tuple[str, int, float]]:
    """``(label, n, dt)`` of the reference and of each coarser grid / larger step; ``n`` is the solve grid."""
    n, dt = int(pde.get("n_solve") or pde["n"]), float(pde["dt"])
    out = [("reference", n, dt)]
    out += [(f"n/{r}", n // int(r), dt) for r in coarsen]
    out += [(f"{f}×dt", n, dt * float(f)) for f in dt_factors]
    return out


def run_solver(
    pde: Mapping[str, Any],
    start: Tensor,
    params: Mapping[str, Tensor],
    dt_out: float,
    steps: int,
    batch_size: int,
    coarsen: Sequence[int] = (2, 4),
    dt_factors: Sequence[int] = (2, 4),
    progress: Callable[[str], None] | None = None,
) -> list[SolverRun]:
    """Solve from ``start`` ``[N, C, *S]`` (the last history frame) for ``steps`` rollout steps of ``dt_out``.

    ``pde`` is the resolved solver config (``_target_`` + constructor keys); the burn-in is dropped
    (the start state is already past it). Settings whose constructor refuses them (``ConfigError``,
    e.g. a step above the stability limit) or whose trajectories blow up (``DivergenceError``) are
    marked unstable; a larger step is not tried once a smaller one was unstable. The runs are not
    timed here: time their ``job`` (see :class:`SolverRun`).
    """
    ndim, n_ref = start.ndim - 2, start.shape[-1]
    runs: list[SolverRun] = []
    step_unstable = False
    for label, n, dt in settings(pde, coarsen, dt_factors):
        stride = max(1, math.ceil(dt / dt_out - 1e-9))
        run = SolverRun(label, n, dt, list(range(stride - 1, steps, stride)))
        runs.append(run)
        if label.endswith("dt") and step_unstable:
            run.status = "not run (a smaller step was unstable)"
            continue
        if progress is not None:
            progress(label)
        try:
            # coarser grids solve and store on n; the reference and larger steps keep the data's grids
            grid = (
                {"n": n} | ({"n_solve": None} if "n_solve" in pde else {}) if label.startswith("n/") else {}
            )
            # explicit output times: a larger step need not divide the data's dt_out
            step = {"dt": dt, "dt_out": None, "burn_in": 0.0}
            solver = build_from_config({**pde, **grid, **step}, SOLVER_TARGETS, "pde")
        except ValueError as error:  # ConfigError included
            run.status = f"unstable or impossible: {error}"
            step_unstable |= label.endswith("dt")
            continue
        times = torch.tensor([0.0, *[(i + 1) * dt_out for i in run.index]], dtype=torch.float64)
        u0 = spectral_resample(start, n, ndim)
        try:
            run.pred = spectral_resample(_solve(solver, u0, params, times, batch_size), n_ref, ndim)
        except (DivergenceError, ConfigError) as error:
            run.status = f"unstable: {str(error).split(';')[0]}"
            step_unstable |= label.endswith("dt")
            continue
        first = {k: v[:batch_size] for k, v in params.items()}
        run.job = partial(_timed_solve, solver, u0[:batch_size], first, times, run.index)
    return runs


def _timed_solve(
    solver: Any, u0: Tensor, params: Mapping[str, Tensor], times: Tensor, index: list[int], frames: int
) -> tuple[Callable[[], Tensor], int]:
    """A solve over the outputs up to the first one at or after rollout frame ``frames`` (all if fewer),
    and the number of rollout frames it covers."""
    count = next((i + 1 for i, frame in enumerate(index) if frame + 1 >= frames), len(index))
    return partial(solver.solve, u0, times[: count + 1], params), index[count - 1] + 1


def _solve(solver: Any, u0: Tensor, params: Mapping[str, Tensor], times: Tensor, batch_size: int) -> Tensor:
    """The solution at ``times[1:]`` ``[N, T, C, *S_n]``, solved ``batch_size`` trajectories at a time."""
    outputs = []
    for first in range(0, len(u0), batch_size):
        part = slice(first, first + batch_size)
        outputs.append(solver.solve(u0[part], times, {k: v[part] for k, v in params.items()})[:, 1:])
    return torch.cat(outputs)


def difference_from_reference(runs: Sequence[SolverRun]) -> list[float]:
    """Per run, the largest relative L2 difference between its prediction and the reference run's at the
    same frames (0 for the reference, NaN where either has no prediction)."""
    reference = next((r for r in runs if r.label == "reference" and r.pred is not None), None)
    out = []
    for run in runs:
        if reference is None or run.pred is None:
            out.append(math.nan)
            continue
        base = reference.pred[:, run.index].double()
        out.append(float(relative_l2(run.pred.double(), base).max()))
    return out
