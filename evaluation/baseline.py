"""The classical solver as a baseline: its cost-accuracy curve over coarser grids and larger steps.

From the state at which the surrogate's rollout starts, the solver is run at its reference settings
(grid ``n``, internal step ``dt``), on coarser grids ``n / r`` (the start state truncated spectrally,
the result interpolated spectrally back to ``n``) and with larger internal steps ``f · dt`` (outputs
every ``max(1, ceil(f·dt / dt_out))`` frames). Each setting's error against the test truth and its wall
time per rollout step give one point of the curve that the surrogate is placed on.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from data.config import SOLVER_TARGETS, build_from_config
from solvers.base import ConfigError, DivergenceError


def spectral_resample(u: Tensor, n: int, ndim: int) -> Tensor:
    """Band-limited interpolation of a periodic field ``[..., *S]`` (``ndim`` axes) onto ``n`` points per axis.

    Fourier coefficients (``rfftn``, amplitude-normalised) with ``|k| < min(n, n_old) / 2`` are kept and
    the rest dropped (downsampling) or zero (upsampling); the Nyquist mode of the smaller grid is dropped,
    so a trigonometric polynomial of degree ``< min(n, n_old) / 2`` is reproduced exactly.
    """
    old = u.shape[-1]
    if n == old:
        return u
    dims = tuple(range(-ndim, 0))
    coeffs = torch.fft.rfftn(u, dim=dims, norm="forward")
    half = min(n, old) // 2
    out = coeffs.new_zeros((*coeffs.shape[:-ndim], *([n] * (ndim - 1)), n // 2 + 1))
    if ndim == 1:
        out[..., :half] = coeffs[..., :half]
    else:
        out[..., :half, :half] = coeffs[..., :half, :half]
        out[..., n - half + 1 :, :half] = coeffs[..., old - half + 1 :, :half]
    return torch.fft.irfftn(out, s=[n] * ndim, dim=dims, norm="forward")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the computation."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SolverRun:
    """One solver setting: its prediction of the test truth and its cost.

    ``pred`` is ``[N, len(index), C, *S]`` on the reference grid at the rollout frames ``index``
    (``None`` if the setting was unstable or impossible); ``seconds_per_step`` is the wall time per
    rollout step (one ``dt_out`` of PDE time) for a batch of ``batch_size`` trajectories.
    """

    label: str
    n: int
    dt: float
    index: list[int]
    pred: Tensor | None = None
    seconds_per_step: float = math.nan
    status: str = "ok"


def settings(
    pde: Mapping[str, Any], coarsen: Sequence[int], dt_factors: Sequence[int]
) -> list[tuple[str, int, float]]:
    """``(label, n, dt)`` of the reference and of each coarser grid / larger step."""
    n, dt = int(pde["n"]), float(pde["dt"])
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
    marked unstable; a larger step is not tried once a smaller one was unstable.
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
            solver = build_from_config({**pde, "n": n, "dt": dt, "burn_in": 0.0}, SOLVER_TARGETS, "pde")
        except ValueError as error:  # ConfigError included
            run.status = f"unstable or impossible: {error}"
            step_unstable |= label.endswith("dt")
            continue
        times = torch.tensor([0.0, *[(i + 1) * dt_out for i in run.index]], dtype=torch.float64)
        try:
            run.pred, run.seconds_per_step = _solve_timed(solver, start, params, times, batch_size, n, ndim)
        except (DivergenceError, ConfigError) as error:
            run.status = f"unstable: {str(error).split(';')[0]}"
            step_unstable |= label.endswith("dt")
            continue
        run.pred = spectral_resample(run.pred, n_ref, ndim)
        run.seconds_per_step /= steps
    return runs


def _solve_timed(
    solver: Any,
    start: Tensor,
    params: Mapping[str, Tensor],
    times: Tensor,
    batch_size: int,
    n: int,
    ndim: int,
) -> tuple[Tensor, float]:
    """The solution at ``times[1:]`` ``[N, T, C, *S_n]`` and the median wall time of one batch's solve."""
    u0 = spectral_resample(start, n, ndim)
    batches = range(0, len(u0), batch_size)
    solver.solve(u0[:batch_size], times[:2], {k: v[:batch_size] for k, v in params.items()})  # warm-up
    outputs, elapsed = [], []
    for first in batches:
        part = slice(first, first + batch_size)
        synchronize(u0.device)
        tic = time.perf_counter()
        result = solver.solve(u0[part], times, {k: v[part] for k, v in params.items()})
        synchronize(u0.device)
        elapsed.append(time.perf_counter() - tic)
        outputs.append(result[:, 1:])
    return torch.cat(outputs), statistics.median(elapsed)
