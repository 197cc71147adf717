"""Rollout metrics on trajectories ``[B, T, C, *S]``, per trajectory and per time step.

Pure torch, no model or data imports: used by validation during training and by ``evaluate.py``.
"""

from __future__ import annotations

import itertools

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


def correlation_time(corr: Tensor, times: Tensor, threshold: float = 0.8) -> Tensor:
    """Time until the correlation first drops below ``threshold``, ``[B]`` in PDE time units.

    ``corr`` is ``[B, T]`` for predictions at ``times`` ``[T]`` (time elapsed since the rollout
    started, increasing). The result is the time of the last step *before* the first crossing: 0 when
    the very first prediction is already below the threshold, and ``times[-1]`` when it never drops
    below (the horizon, a lower bound). A NaN correlation counts as a crossing (a blown-up rollout).
    """
    if corr.ndim != 2 or times.shape != corr.shape[1:]:
        raise ValueError(
            f"corr must be [B, T] and times [T]; got {tuple(corr.shape)} and {tuple(times.shape)}"
        )
    below = ~(corr >= threshold)  # NaN counts as below
    crossed = below.any(dim=1)
    first = below.to(torch.int64).argmax(dim=1)
    before = torch.cat([times.new_zeros(1), times]).to(corr.dtype)  # before[k] = time of step k-1
    return torch.where(crossed, before[first], times[-1].to(corr.dtype))


def blowup_time(pred: Tensor, times: Tensor, threshold: float) -> Tensor:
    """Time of the first non-finite or ``|u| > threshold`` prediction, ``[B]``; ``inf`` if none."""
    flat = _flat(pred)
    bad = ~torch.isfinite(flat).all(-1) | (flat.abs().amax(-1) > threshold)
    first = bad.to(torch.int64).argmax(dim=1)
    value = times.to(flat.dtype)[first]
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
    values: Tensor, confidence: float = 0.95, num_resamples: int = 1000, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean over trajectories (dim 0) and its percentile-bootstrap confidence interval.

    Trajectories are resampled with replacement ``num_resamples`` times (a seeded generator, so the
    interval is reproducible); the interval is the ``(1 ∓ confidence) / 2`` quantiles of the resampled
    means. Returns ``(mean, low, high)``, each of shape ``values.shape[1:]``; NaNs propagate.
    """
    if not 0 < confidence < 1 or num_resamples < 1 or values.ndim < 1 or len(values) < 1:
        raise ValueError(
            f"bootstrap_ci: need 0 < confidence < 1, num_resamples >= 1 and >= 1 trajectory; got "
            f"confidence={confidence}, num_resamples={num_resamples}, values {tuple(values.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(values), (num_resamples, len(values)), generator=generator)
    means = values.double()[index.to(values.device)].mean(1)
    alpha = (1 - confidence) / 2
    quantiles = torch.tensor([alpha, 1 - alpha], dtype=means.dtype, device=means.device)
    low, high = torch.quantile(means, quantiles, dim=0)
    return values.double().mean(0), low, high
