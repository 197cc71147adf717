"""Rollout metrics on trajectories ``[B, T, C, *S]``, per trajectory and per time step.

Pure torch, no model or data imports: used by validation during training and by ``evaluate.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor


def _flat(u: Tensor) -> Tensor:
    """``[B, T, C, *S] -> [B, T, C·S]``."""
    return u.flatten(2)


def mse(pred: Tensor, true: Tensor) -> Tensor:
    """Mean squared error over channels and space, ``[B, T]``."""
    return (_flat(pred) - _flat(true)).pow(2).mean(-1)


def relative_l2(pred: Tensor, true: Tensor, eps: float = 1e-12) -> Tensor:
    """nRMSE ``‖pred − true‖₂ / ‖true‖₂`` over channels and space, ``[B, T]``."""
    diff = (_flat(pred) - _flat(true)).norm(dim=-1)
    return diff / _flat(true).norm(dim=-1).clamp_min(eps)


def pearson(pred: Tensor, true: Tensor, eps: float = 1e-12) -> Tensor:
    """Pearson correlation between prediction and truth over channels and space, ``[B, T]``.

    A constant field has no defined correlation; it is given 0 (uncorrelated) rather than NaN.
    """
    p = _flat(pred) - _flat(pred).mean(-1, keepdim=True)
    q = _flat(true) - _flat(true).mean(-1, keepdim=True)
    denom = p.norm(dim=-1) * q.norm(dim=-1)
    return torch.where(denom > eps, (p * q).sum(-1) / denom.clamp_min(eps), torch.zeros_like(denom))


def _check_times(corr: Tensor, times: Tensor) -> Tensor:
    """``times`` as ``[B, T]`` for ``corr`` ``[B, T]``: lead times ``[T]`` shared by every trajectory, or
    ``[B, T]`` each trajectory's own (a per-trajectory time step)."""
    if corr.ndim != 2 or times.shape not in (corr.shape[1:], corr.shape):
        raise ValueError(
            f"corr must be [B, T] and times [T] or [B, T]; got {tuple(corr.shape)} and {tuple(times.shape)}"
        )
    return times.expand_as(corr)


def correlation_time(corr: Tensor, times: Tensor, threshold: float = 0.8) -> Tensor:
    """Time until the correlation first drops below ``threshold``, ``[B]`` in PDE time units.

    ``corr`` is ``[B, T]`` for predictions at ``times`` ``[T]``, or ``[B, T]`` when each trajectory has its
    own time step (time elapsed since the rollout started, increasing): each trajectory's crossing is
    measured in its own time. The result is the time of the last step *before* the first crossing: 0 when
    the very first prediction is already below the threshold, and the last time when it never drops
    below (the horizon, a lower bound). A NaN correlation counts as a crossing (a blown-up rollout).
    """
    times = _check_times(corr, times).to(corr.dtype)
    below = ~(corr >= threshold)  # NaN counts as below
    crossed = below.any(dim=1)
    first = below.to(torch.int64).argmax(dim=1, keepdim=True)
    before = torch.cat([times.new_zeros(len(times), 1), times], dim=1)  # before[:, k] = time of step k-1
    return torch.where(crossed, before.gather(1, first)[:, 0], times[:, -1])


def blowup_time(pred: Tensor, times: Tensor, threshold: float) -> Tensor:
    """Time of the first non-finite or ``|u| > threshold`` prediction, ``[B]``; ``inf`` if none.
    ``times`` are the lead times, ``[T]`` or each trajectory's ``[B, T]``."""
    flat = _flat(pred)
    bad = ~torch.isfinite(flat).all(-1) | (flat.abs().amax(-1) > threshold)
    first = bad.to(torch.int64).argmax(dim=1, keepdim=True)
    value = _check_times(bad, times).to(flat.dtype).gather(1, first)[:, 0]
    return torch.where(bad.any(dim=1), value, torch.full_like(value, float("inf")))


def energy_spectrum(u: Tensor, ndim: int) -> Tensor:
    """Radially binned energy spectrum of ``[..., C, *S]`` (``ndim`` periodic axes of ``n`` points), ``[..., K]``.

    With ``û = DFT(u) / n^ndim`` (``rfftn``, ``norm="forward"``), ``E(k) = Σ_c Σ_{round(|k'|) = k} |û_c(k')|²``
    over integer wavenumbers ``k'`` (in units of ``2π / length``), for ``k = 0 … K - 1`` with
    ``K = n // 2 + 1``; corner modes with ``round(|k'|) > n / 2`` (2D) are left out. The half spectrum of
    ``rfftn`` counts each mode that stands for a conjugate pair twice, so in 1D Parseval holds exactly:
    ``Σ_k E(k) = Σ_c mean_x u_c²``, and ``a sin(2π k₀ x / L)`` gives ``E(k₀) = a² / 2``.
    """
    if ndim not in (1, 2) or u.ndim < ndim + 1:
        raise ValueError(
            f"energy_spectrum: ndim={ndim} must be 1 or 2 and u [..., C, *S]; got {tuple(u.shape)}"
        )
    n = u.shape[-1]
    dims = tuple(range(-ndim, 0))
    power = torch.fft.rfftn(u, dim=dims, norm="forward").abs().pow(2).sum(-ndim - 1)  # [..., *S_half]
    last = torch.fft.rfftfreq(n, d=1.0 / n).to(u.device)
    weight = torch.where((last == 0) | (last == n / 2), 1.0, 2.0).to(power.dtype)
    axes = [torch.fft.fftfreq(n, d=1.0 / n).to(u.device)] * (ndim - 1) + [last]
    radius = torch.stack(torch.meshgrid(*axes, indexing="ij")).pow(2).sum(0).sqrt()
    bins = radius.round().long().flatten()
    keep = bins < n // 2 + 1
    flat = (power * weight).flatten(-ndim)[..., keep]
    out = flat.new_zeros((*flat.shape[:-1], n // 2 + 1))
    return out.index_add_(-1, bins[keep], flat)


def band_edges(num_wavenumbers: int, num_bands: int = 3) -> list[tuple[int, int]]:
    """Split the wavenumbers ``1 … K - 1`` (the mean ``k = 0`` left out) into ``num_bands`` contiguous
    ranges ``[start, stop)`` of (nearly) equal width: low, mid, high for three bands."""
    resolved = num_wavenumbers - 1
    if num_bands < 1 or resolved < num_bands:
        raise ValueError(f"cannot split {resolved} wavenumbers into num_bands={num_bands} bands")
    cuts = [1 + round(i * resolved / num_bands) for i in range(num_bands + 1)]
    return list(itertools.pairwise(cuts))


def active_wavenumbers(true: Tensor, relative: float = 1e-10) -> int:
    """Wavenumbers ``0 … K_a − 1`` up to the last one whose mean true energy is ``>= relative`` × the total.

    Beyond it the truth holds only round-off (dealiased modes, exponentially damped tails), where a
    ratio of energies measures noise, not the surrogate.
    """
    mean = true.reshape(-1, true.shape[-1]).double().mean(0)
    keep = (mean >= relative * mean.sum()).nonzero().flatten()
    return int(keep.max()) + 1 if len(keep) else true.shape[-1]


def spectrum_band_error(
    pred: Tensor, true: Tensor, num_bands: int = 3, floor: float = 1e-12, relative: float = 1e-10
) -> Tensor:
    """Energy error per wavenumber band: ``log10(Σ_band E_pred / Σ_band E_true)``, ``[..., num_bands]``.

    ``pred`` and ``true`` are spectra ``[..., K]`` (:func:`energy_spectrum`). The bands split the
    wavenumbers where the truth holds energy (:func:`active_wavenumbers` with ``relative``) into low,
    mid and high thirds. 0 is a perfect band, +1 ten times too much energy, −1 ten times too little.
    Both band energies get ``floor`` times the true total energy added, so an empty band stays finite.
    """
    if pred.shape != true.shape:
        raise ValueError(f"spectra differ in shape: {tuple(pred.shape)} and {tuple(true.shape)}")
    eps = floor * true.sum(-1, keepdim=True)
    active = max(active_wavenumbers(true, relative), num_bands + 1)
    bands = band_edges(active, num_bands)
    p = torch.stack([pred[..., a:b].sum(-1) for a, b in bands], dim=-1)
    q = torch.stack([true[..., a:b].sum(-1) for a, b in bands], dim=-1)
    return torch.log10((p + eps) / (q + eps))


def bootstrap_ci(
    values: Tensor,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
    statistic: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """A statistic of the mean over trajectories (dim 0) and its percentile-bootstrap confidence interval.

    Trajectories are resampled with replacement ``num_resamples`` times (a seeded generator, so the
    interval is reproducible); the interval is the ``(1 ∓ confidence) / 2`` quantiles of the statistic of
    the resampled means. ``statistic`` maps means ``[R, *values.shape[1:]]`` to ``[R, *out]`` (e.g. the
    time the mean correlation stays above a threshold); ``None`` is the mean itself. Returns
    ``(value, low, high)``, each of shape ``out``; NaNs propagate.
    """
    if not 0 < confidence < 1 or num_resamples < 1 or values.ndim < 1 or len(values) < 1:
        raise ValueError(
            f"bootstrap_ci: need 0 < confidence < 1, num_resamples >= 1 and >= 1 trajectory; got "
            f"confidence={confidence}, num_resamples={num_resamples}, values {tuple(values.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(values), (num_resamples, len(values)), generator=generator)
    values = values.double()
    chunk = max(1, 2**24 // max(values.numel(), 1))  # resamples per gather: at most ~16M numbers at once
    means = torch.cat([values[part.to(values.device)].mean(1) for part in index.split(chunk)])
    mean = values.mean(0, keepdim=True)
    if statistic is not None:
        means, mean = statistic(means), statistic(mean)
    alpha = (1 - confidence) / 2
    quantiles = torch.tensor([alpha, 1 - alpha], dtype=means.dtype, device=means.device)
    low, high = torch.quantile(means, quantiles, dim=0)
    return mean[0], low, high


TAIL_PERCENTS = (50.0, 90.0, 99.0)
"""The percentiles of :func:`tail` (median, p90, p99); the worst value follows them."""


def tail(
    values: Tensor, higher_is_better: bool = False, percents: tuple[float, ...] = TAIL_PERCENTS
) -> tuple[Tensor, Tensor]:
    """The tail of a metric over trajectories (dim 0), on its bad side.

    Returns the ``percents``-th percentiles and the worst value stacked first, ``[len(percents) + 1, *rest]``,
    and the index of the worst trajectory, ``[*rest]``. For a lower-is-better metric the ``p``-th percentile
    is numpy's default (linear interpolation between the order statistics at ``p / 100 · (N − 1)``); for a
    higher-is-better one it is the ``(100 − p)``-th: in both cases the value that ``p`` % of the
    trajectories do at least as well as. A NaN (a rollout that blew up) counts as the worst value possible
    (±inf), so a blow-up shows in the tail instead of disappearing from it.
    """
    if values.ndim < 1 or len(values) < 1:
        raise ValueError(f"tail: need values [N >= 1, ...], got shape {tuple(values.shape)}")
    sign = -1.0 if higher_is_better else 1.0
    bad = (sign * values.double()).nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)
    ordered, order = bad.sort(dim=0, stable=True)
    last = len(bad) - 1
    out = []
    for p in percents:
        position = p / 100 * last
        low = math.floor(position)
        frac = position - low
        a, b = ordered[low], ordered[min(low + 1, last)]
        between = torch.where(torch.isinf(b), b, a + (b - a) * frac)
        out.append(a if frac == 0 else between)
    out.append(ordered[last])
    return sign * torch.stack(out), order[last]


def over_horizon(values: Tensor, dim: int = 1) -> Tensor:
    """Mean over the lead times up to each one along ``dim`` (``[B, T]``: dim 1): entry ``t`` averages steps
    ``1 … t`` (a per-step error reported as the papers report it, averaged over the predicted frames)."""
    steps = torch.arange(1, values.shape[dim] + 1, dtype=values.dtype, device=values.device)
    return values.cumsum(dim) / steps.reshape(-1, *[1] * (-dim - 1 if dim < 0 else values.ndim - dim - 1))


# --------------------------------------------------------------------------- published conventions
# The same rollout scored as the papers score it, so a number can be set beside theirs.


def _uniform_step(times: Tensor) -> float:
    """The step of evenly spaced prediction times ``times[..., k] = (k + 1) · step``; ``ValueError`` otherwise.

    For per-trajectory times ``[B, T]`` it is the mean of the trajectories' steps (their nominal step;
    exactly the common one when all are equal).
    """
    times = times.double().cpu().reshape(-1, times.shape[-1])
    steps = times[:, 0]
    expected = steps[:, None] * torch.arange(1, times.shape[1] + 1, dtype=torch.float64)
    if bool((steps <= 0).any()) or not torch.allclose(times, expected, rtol=1e-6, atol=0):
        raise ValueError(f"prediction times must be step, 2·step, …; got {times[0].tolist()[:4]}…")
    least = steps.min()
    return float(least + (steps - least).mean())


def pdearena_correlation_time(
    corr: Tensor, times: Tensor, threshold: float = 0.8, nan_as: float | None = None
) -> Tensor:
    """PDEArena's correlation time (PDE-Refiner, Lippe et al. 2023), a scalar in time units.

    The Pearson correlation ``corr`` ``[B, T]`` is first averaged over the trajectories, then
    :func:`time_above` the threshold (PDEArena's ``time_till_corr_lower``, ``pdearena/models/pderefiner.py``).
    As there, a blown-up rollout's NaN spreads into the mean, so no step after it counts; ``nan_as=-1.0``
    counts that trajectory's correlation as −1 instead (pdestream's ``corr_time_of_mean``). It differs from
    the mean of the per-trajectory :func:`correlation_time` whenever trajectories cross at different times.

    PDEArena averages the correlation per rollout *step* and counts steps, also when each trajectory has
    its own time step (its KS data: ``Δt_b = 4 T_b / 499``); so with per-trajectory ``times`` ``[B, T]`` the
    count is converted with the trajectories' mean step (the nominal one), not each trajectory's own.
    """
    _check_times(corr, times)
    corr = corr.double() if nan_as is None else corr.double().nan_to_num(nan=nan_as)
    return time_above(corr.mean(0), times, threshold)


def time_above(mean_corr: Tensor, times: Tensor, threshold: float) -> Tensor:
    """PDEArena's count: the number of steps of the mean correlation ``[..., T]`` strictly above
    ``threshold`` (also after a dip), times the step of the evenly spaced ``times`` ``[T]`` (``[B, T]``:
    the trajectories' mean step, :func:`_uniform_step`); ``[...]``."""
    return (mean_corr > threshold).sum(-1) * _uniform_step(times)


def relative_l2_block(pred: Tensor, true: Tensor, eps: float = 1e-12) -> Tensor:
    """Relative L2 error over the space-time block of the frames up to each lead time, ``[B, T]``.

    The FNO papers' ``test_l2_full`` (Li et al. 2021, ``fourier_2d_time.py``): ``‖pred − true‖₂ / ‖true‖₂``
    over every predicted frame ``1 … t``, channel and grid point at once; ``[:, -1]`` is the whole block.
    Their per-step figure ``test_l2_step`` is ``over_horizon(relative_l2(pred, true))``: the per-frame
    relative error averaged over the frames.
    """
    diff = (pred - true).flatten(2).pow(2).sum(-1).cumsum(1).sqrt()
    return diff / true.flatten(2).pow(2).sum(-1).cumsum(1).sqrt().clamp_min(eps)


def vrmse(pred: Tensor, true: Tensor, eps: float = 1e-7, correction: int = 1) -> Tensor:
    """The Well's variance-scaled RMSE (Ohana et al., NeurIPS 2024), ``[B, T]``.

    Per channel ``sqrt(mean_x (pred − true)² / (var_x true + eps))``, ``eps = 1e-7``, then averaged over the
    channels; 1 is the score of predicting the field's spatial mean. ``correction=1`` (the default) is The
    Well's code (``the_well/benchmark/metrics/spatial.py``: ``torch.std`` over space, the unbiased ``N − 1``
    variance), with which its published tables were computed; ``correction=0`` is the paper's formula (the
    population variance), ``(N − 1) / N`` of it: the scores differ by a factor ``√((N − 1) / N)``, 0.2 % at
    ``N = 256``.
    """
    diff = (pred - true).flatten(3).pow(2).mean(-1)
    return (diff / (true.flatten(3).var(-1, correction=correction) + eps)).sqrt().mean(-1)


def pdebench_nrmse(pred: Tensor, true: Tensor, eps: float = 1e-12) -> Tensor:
    """PDEBench's nRMSE (Takamoto et al., NeurIPS 2022), ``[B, T]``: per channel ``RMSE / RMS(true)`` over
    space, then averaged over the channels (PDEBench then averages over trajectories and time)."""
    diff = (pred - true).flatten(3).pow(2).mean(-1).sqrt()
    return (diff / true.flatten(3).pow(2).mean(-1).sqrt().clamp_min(eps)).mean(-1)


PDEBENCH_BANDS = (4, 12)
"""PDEBench's band limits ``iLow, iHigh``: low wavenumbers ``[0, 4)``, mid ``[4, 12)``, high ``[12, …)``."""


def pdebench_error_power(pred: Tensor, true: Tensor, lengths: tuple[float, ...]) -> Tensor:
    """The squared error spectrum behind PDEBench's fRMSE, per trajectory, ``[B, T, C, K]``.

    For ``[B, T, C, *S]`` on a domain of side ``lengths`` (one per axis): the error's DFT ``Δ̂`` (1D:
    ``rfft``; 2D: ``fftn``, with ``|Δ̂|²`` summed into the bins ``⌊√(i² + j²)⌋`` of the quadrant
    ``0 <= i < n_x/2, 0 <= j < n_y/2`` for bins below ``min(n_x, n_y)/2``), times ``(volume / points)²``.
    """
    ndim = pred.ndim - 3
    if ndim not in (1, 2) or len(lengths) != ndim:
        raise ValueError(
            f"pdebench_frmse: [B, T, C, *S] with 1 or 2 axes and one length each; got {ndim}, {lengths}"
        )
    diff = (pred - true).double()
    scale = (math.prod(lengths) / math.prod(diff.shape[3:])) ** 2
    if ndim == 1:
        return torch.fft.rfft(diff, dim=-1).abs().pow(2) * scale
    nx, ny = diff.shape[-2:]
    quadrant = torch.fft.fftn(diff, dim=(-2, -1)).abs().pow(2)[..., : nx // 2, : ny // 2]
    i, j = torch.meshgrid(torch.arange(nx // 2), torch.arange(ny // 2), indexing="ij")
    bins = (i.double().pow(2) + j.double().pow(2)).sqrt().floor().long().flatten()
    keep = bins < min(nx // 2, ny // 2)
    flat = quadrant.flatten(-2)[..., keep.to(diff.device)]
    power = flat.new_zeros((*flat.shape[:-1], min(nx // 2, ny // 2)))
    return power.index_add_(-1, bins[keep].to(diff.device), flat) * scale


def pdebench_bands(mean_power: Tensor) -> Tensor:
    """fRMSE in PDEBench's low / mid / high bands from the error power averaged over trajectories
    ``[..., T, C, K]`` (:func:`pdebench_error_power`): ``sqrt`` per wavenumber, the mean over the band's
    wavenumbers (:data:`PDEBENCH_BANDS`), then over the channels; ``[..., T, 3]``."""
    spectrum = mean_power.sqrt()
    low, high = PDEBENCH_BANDS
    bands = [spectrum[..., :low], spectrum[..., low:high], spectrum[..., high:]]
    return torch.stack([band.mean(-1) for band in bands], dim=-1).mean(-2)


def pdebench_frmse(pred: Tensor, true: Tensor, lengths: tuple[float, ...]) -> Tensor:
    """PDEBench's Fourier-space RMSE in its low / mid / high bands, ``[T, 3]`` (over all trajectories).

    ``sqrt`` of the trajectory mean of :func:`pdebench_error_power` — the error's DFT divided by the
    number of grid points and multiplied by the domain volume —, averaged over the wavenumbers of each
    band and over the channels (:func:`pdebench_bands`). These are PDEBench's conventions
    (``metric_func``), quadrant and volume factor included.
    """
    return pdebench_bands(pdebench_error_power(pred, true, lengths).mean(0))
