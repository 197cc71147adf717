"""Every rollout metric pdestream reports, declared once: validation, ``metrics.nc`` and the report iterate it.

A :class:`Metric` names its function, its kind, which way is better, its unit, a one-line definition and the
convention it follows (with the paper it comes from). Adding a metric is one entry in :data:`METRICS`;
validation during training computes the entries with ``validation=True`` (cheap ones), logged as
``val/<name>``. Pure torch, like :mod:`evaluation.metrics`.

Kinds:

* :data:`PER_STEP` — one value per trajectory and lead time, ``[B, T]``; ``cumulative`` ones are over the
  lead times up to ``t`` (the papers' horizon averages); reported at fixed horizons, mean over trajectories;
* :data:`PER_TRAJECTORY` — one value per trajectory, ``[B]`` (``[B, H]`` per correlation threshold),
  mean over trajectories;
* :data:`PER_MODEL` — one value per model from all trajectories at once: ``compute`` gives per-trajectory
  data ``[B, …]`` and ``of_mean`` the value from its mean over trajectories (so the bootstrap resamples
  trajectories and recomputes the value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from evaluation import metrics

PER_STEP, PER_TRAJECTORY, PER_MODEL = "per step", "per trajectory", "per model"
KINDS = (PER_STEP, PER_TRAJECTORY, PER_MODEL)
LOWER, HIGHER = "lower", "higher"
TIME_UNITS = "time units"
VOLUME_UNITS = "length units^d"
"""A metric unit's volume factor; :func:`unit_in` writes it for the grid's number of space dimensions d."""


@dataclass(frozen=True)
class Scope:
    """What a metric needs besides the fields: lead times ``[T]``, or ``[B, T]`` when each trajectory has its
    own time step (evenly spaced, in time units), the correlation thresholds and the domain side per axis
    (``None`` where unknown, as in validation)."""

    times: Tensor
    thresholds: tuple[float, ...]
    lengths: tuple[float, ...] | None = None


@dataclass
class Rollout:
    """Predicted and true trajectories ``[B, T, C, *S]`` at the lead times of ``scope``."""

    pred: Tensor
    true: Tensor
    scope: Scope

    @cached_property
    def corr(self) -> Tensor:
        """Pearson correlation ``[B, T]``, shared by every metric that needs it."""
        return metrics.pearson(self.pred, self.true)


@dataclass(frozen=True)
class Metric:
    """One metric: ``compute(rollout)`` and how to read, store and show it.

    ``dims`` are the value's dimensions besides ``model`` and ``trajectory`` (``time``, ``threshold``, or a
    dimension of its own with labels in ``coords``).
    """

    name: str
    label: str
    kind: str
    better: str
    unit: str
    definition: str
    convention: str
    compute: Callable[[Rollout], Tensor]
    dims: tuple[str, ...] = ("time",)
    of_mean: Callable[[Tensor, Scope], Tensor] | None = None
    cumulative: bool = False
    validation: bool = False
    coords: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.better not in (LOWER, HIGHER):
            raise ValueError(
                f"metric {self.name}: kind={self.kind!r} must be one of {', '.join(KINDS)} and "
                f"better={self.better!r} one of {LOWER}, {HIGHER}"
            )
        if (self.kind == PER_MODEL) != (self.of_mean is not None):
            raise ValueError(f"metric {self.name}: of_mean is required for kind {PER_MODEL} and only for it")

    @property
    def thresholded(self) -> bool:
        return "threshold" in self.dims


def _mse(r: Rollout) -> Tensor:
    return metrics.mse(r.pred, r.true)


def _rel_l2(r: Rollout) -> Tensor:
    return metrics.relative_l2(r.pred, r.true)


def _corr(r: Rollout) -> Tensor:
    return r.corr


def _corr_time(r: Rollout) -> Tensor:
    times = r.scope.times.to(device=r.corr.device, dtype=r.corr.dtype)
    return torch.stack([metrics.correlation_time(r.corr, times, t) for t in r.scope.thresholds], -1)


def _corr_for_mean(r: Rollout) -> Tensor:
    """The correlation PDEArena averages, a blown-up rollout's NaN included (it spreads into the mean), as
    :func:`~evaluation.metrics.pdearena_correlation_time`."""
    return r.corr.double()


def _corr_nan_as_minus_one(r: Rollout) -> Tensor:
    """The correlation averaged for ``corr_time_of_mean``: a NaN (blown-up rollout) counts as −1."""
    return r.corr.double().nan_to_num(nan=-1.0)


def _pdearena_of_mean(mean_corr: Tensor, scope: Scope) -> Tensor:
    return torch.stack([metrics.time_above(mean_corr, scope.times, t) for t in scope.thresholds], -1)


def _fno_frames(r: Rollout) -> Tensor:
    return metrics.over_horizon(metrics.relative_l2(r.pred, r.true))


def _fno_block(r: Rollout) -> Tensor:
    return metrics.relative_l2_block(r.pred, r.true)


def _vrmse(r: Rollout) -> Tensor:
    return metrics.vrmse(r.pred, r.true)


def _pdebench_nrmse(r: Rollout) -> Tensor:
    return metrics.over_horizon(metrics.pdebench_nrmse(r.pred, r.true))


def _pdebench_power(r: Rollout) -> Tensor:
    if r.scope.lengths is None:
        raise ValueError("pdebench_frmse needs the domain lengths (Scope.lengths)")
    return metrics.pdebench_error_power(r.pred, r.true, r.scope.lengths)


def _pdebench_frmse_of_mean(mean_power: Tensor, scope: Scope) -> Tensor:
    return metrics.over_horizon(metrics.pdebench_bands(mean_power), dim=-2)


METRICS: list[Metric] = [
    Metric(
        "mse", "MSE", PER_STEP, LOWER, "field units²",
        "mean squared error over channels and grid points at lead time t",
        "pdestream", _mse, validation=True,
    ),
    Metric(
        "rel_l2", "rel. L2 (frame t)", PER_STEP, LOWER, "",
        "‖pred − true‖₂ / ‖true‖₂ over channels and grid points of the frame at lead time t (nRMSE)",
        "the per-frame relative L2 error of the FNO papers (Li et al., ICLR 2021)", _rel_l2, validation=True,
    ),
    Metric(
        "corr", "correlation", PER_STEP, HIGHER, "",
        "Pearson correlation between prediction and truth over channels and grid points at lead time t",
        "PDEArena / PDE-Refiner (Lippe et al., NeurIPS 2023)", _corr,
    ),
    Metric(
        "fno_rel_l2", "FNO rel. L2 (frames ≤ t)", PER_STEP, LOWER, "",
        "per-frame relative L2 error averaged over the frames up to lead time t",
        "FNO test_l2_step (Li et al., ICLR 2021, fourier_2d_time.py)", _fno_frames, cumulative=True,
    ),
    Metric(
        "fno_rel_l2_block", "FNO rel. L2 block (≤ t)", PER_STEP, LOWER, "",
        "‖pred − true‖₂ / ‖true‖₂ over the whole space-time block of the frames up to lead time t",
        "FNO test_l2_full (Li et al., ICLR 2021, fourier_2d_time.py)", _fno_block, cumulative=True,
    ),
    Metric(
        "vrmse", "VRMSE (frame t)", PER_STEP, LOWER, "",
        "per channel sqrt(mean (pred − true)² / (spatial variance of the truth + 1e-7)), mean over channels; "
        "the variance is unbiased (N − 1), as The Well's code computes it (its paper writes the population "
        "variance, whose scores are √(N/(N − 1)) larger)",
        "The Well (Ohana et al., NeurIPS 2024 Datasets and Benchmarks), the_well/benchmark/metrics/spatial.py",
        _vrmse,
    ),
    Metric(
        "pdebench_nrmse", "PDEBench nRMSE (≤ t)", PER_STEP, LOWER, "",
        "per channel RMSE / RMS of the truth over space, mean over channels, averaged over the frames up to t",
        "PDEBench nRMSE (Takamoto et al., NeurIPS 2022 Datasets and Benchmarks)", _pdebench_nrmse,
        cumulative=True,
    ),
    Metric(
        "pdebench_frmse", "PDEBench fRMSE (≤ t)", PER_MODEL, LOWER, f"field units × {VOLUME_UNITS}",
        "sqrt of the trajectory mean of the error's squared Fourier amplitude (× volume / points), mean "
        "over the wavenumbers of the band (low k < 4, mid 4 ≤ k < 12, high k ≥ 12) and channels, averaged "
        "over the frames up to t",
        "PDEBench fRMSE (Takamoto et al., NeurIPS 2022), iLow = 4, iHigh = 12", _pdebench_power,
        dims=("time", "pdebench_band"), of_mean=_pdebench_frmse_of_mean, cumulative=True,
        coords={"pdebench_band": ["low", "mid", "high"]},
    ),
    Metric(
        "corr_time", "corr. time (mean of per-trajectory)", PER_TRAJECTORY, HIGHER, TIME_UNITS,
        "lead time before each trajectory's correlation first drops below the threshold (the horizon if "
        "never), in that trajectory's own time steps, averaged over trajectories",
        "pdestream (validation checkpoint selection)", _corr_time, dims=("threshold",), validation=True,
    ),
    Metric(
        "pdearena_corr_time", "corr. time (PDEArena: of the mean correlation)", PER_MODEL, HIGHER, TIME_UNITS,
        "the correlation averaged over trajectories first; the number of steps it is above the threshold × dt "
        "(the trajectories' mean dt where each has its own)",
        "PDEArena time_till_corr_lower (PDE-Refiner, Lippe et al., NeurIPS 2023); a blown-up trajectory's NaN "
        "makes the mean NaN, and a NaN step does not count", _corr_for_mean,
        dims=("threshold",), of_mean=_pdearena_of_mean, validation=True,
    ),
    Metric(
        "corr_time_of_mean", "corr. time (of the mean correlation, NaN as −1)", PER_MODEL, HIGHER, TIME_UNITS,
        "as pdearena_corr_time, but a blown-up trajectory's correlation counts as −1 from the step it blows up, "
        "so the other trajectories still count",
        "pdestream (PDEArena's count, robust to a blown-up trajectory)", _corr_nan_as_minus_one,
        dims=("threshold",), of_mean=_pdearena_of_mean,
    ),
]  # fmt: skip
"""The metrics, in the order of the report's tables."""


def validation_metrics() -> list[Metric]:
    """The metrics validation computes during training (``validation=True``)."""
    return [m for m in METRICS if m.validation]


def unit_in(unit: str, ndim: int | None) -> str:
    """``unit`` with the space dimensions filled in: ``field units × length units`` in 1D, ``… length units²``
    in 2D; unchanged when ``ndim`` is unknown."""
    if ndim is None or VOLUME_UNITS not in unit:
        return unit
    power = "" if int(ndim) == 1 else str(int(ndim)).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return unit.replace(VOLUME_UNITS, f"length units{power}")


def by_name(name: str) -> Metric:
    for metric in METRICS:
        if metric.name == name:
            return metric
    raise KeyError(f"no metric {name!r}; registered: {', '.join(m.name for m in METRICS)}")
