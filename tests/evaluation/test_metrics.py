import math

import pytest
import torch

from evaluation import metrics
from evaluation.rollout import rollout, rollout_steps


def traj(values):
    """[B, T, C=1, X] from nested lists [B][T][X]."""
    return torch.tensor(values, dtype=torch.float64)[:, :, None]


def test_mse_and_relative_l2_by_hand():
    true = traj([[[3.0, 4.0], [1.0, 0.0]]])
    pred = traj([[[3.0, 0.0], [1.0, 1.0]]])
    assert torch.allclose(metrics.mse(pred, true), torch.tensor([[8.0, 0.5]], dtype=torch.float64))
    # ‖(0, 4)‖ / ‖(3, 4)‖ = 4 / 5 ; ‖(0, 1)‖ / ‖(1, 0)‖ = 1
    assert torch.allclose(metrics.relative_l2(pred, true), torch.tensor([[0.8, 1.0]], dtype=torch.float64))


def test_pearson_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    true = traj([[x.tolist(), x.tolist(), x.tolist()]])
    pred = traj([[(2 * x + 1).tolist(), (-x).tolist(), [1.0, -1.0, -1.0, 1.0]]])
    corr = metrics.pearson(pred, true)[0]
    # perfect, anti-correlated, and (1,-1,-1,1)·(-1.5,-.5,.5,1.5) = 0 → uncorrelated
    assert torch.allclose(corr, torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64), atol=1e-12)


def test_pearson_of_constant_field_is_zero_not_nan():
    true = traj([[[1.0, 2.0, 3.0]]])
    pred = traj([[[5.0, 5.0, 5.0]]])
    assert metrics.pearson(pred, true).item() == 0.0


TIMES = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)


@pytest.mark.parametrize(
    ("corr", "expected"),
    [
        ([0.99, 0.95, 0.85, 0.81], 2.0),  # never crosses: the horizon
        ([0.70, 0.95, 0.95, 0.95], 0.0),  # crosses at the first step
        ([0.99, 0.90, 0.79, 0.95], 1.0),  # first crossing counts, recovery ignored
        ([0.99, 0.80, 0.70, 0.60], 1.0),  # exactly at the threshold is not below
        ([0.99, math.nan, 0.99, 0.99], 0.5),  # a NaN (blow-up) is a crossing
    ],
)
def test_correlation_time_edge_cases(corr, expected):
    value = metrics.correlation_time(torch.tensor([corr], dtype=torch.float64), TIMES, 0.8)
    assert value.item() == pytest.approx(expected)


def test_correlation_time_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="corr must be"):
        metrics.correlation_time(torch.ones(2, 3), TIMES, 0.8)


def test_blowup_time():
    pred = traj(
        [[[1.0], [2.0], [math.inf], [1.0]], [[1.0], [1.0], [1.0], [1.0]], [[1.0], [50.0], [1.0], [1.0]]]
    )
    value = metrics.blowup_time(pred, TIMES, threshold=10.0)
    assert value.tolist() == [1.5, math.inf, 1.0]


def test_rollout_feeds_predictions_back():
    # predictor: next frame = last frame + 1 (time_future = 1), and a 2-frame one (time_future = 2)
    history = torch.zeros(2, 3, 1, 4)
    out = rollout(lambda w: w[:, -1:] + 1, history, steps=5)
    assert out.shape == (2, 5, 1, 4)
    assert torch.equal(out[0, :, 0, 0], torch.arange(1.0, 6.0))
    out2 = rollout(lambda w: torch.cat([w[:, -1:] + 1, w[:, -1:] + 2], dim=1), history, steps=2)
    assert torch.equal(out2[1, :, 0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_rollout_steps():
    assert rollout_steps(20, 4, 1) == 16
    assert rollout_steps(20, 4, 3) == 5
    with pytest.raises(ValueError, match="too short"):
        rollout_steps(4, 4, 1)


# ----------------------------------------------------------------------------- spectra and bootstrap
def _grid(n, length):
    return torch.arange(n, dtype=torch.float64) * length / n


def test_energy_spectrum_1d_single_modes_and_parseval():
    n, length = 64, 10.0
    x = _grid(n, length)
    u = 1.5 + 0.7 * torch.sin(2 * math.pi * 5 * x / length) + 0.2 * torch.cos(2 * math.pi * 12 * x / length)
    spectrum = metrics.energy_spectrum(u[None, None, None], ndim=1)[0, 0]
    assert spectrum.shape == (n // 2 + 1,)
    expected = torch.zeros(n // 2 + 1, dtype=torch.float64)
    expected[0], expected[5], expected[12] = 1.5**2, 0.7**2 / 2, 0.2**2 / 2
    assert torch.allclose(spectrum, expected, atol=1e-12)
    noise = torch.randn(3, 2, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    total = metrics.energy_spectrum(noise[:, None], ndim=1).sum(-1)[:, 0]
    assert torch.allclose(total, noise.pow(2).mean(-1).sum(-1))  # Parseval, channels summed


def test_energy_spectrum_2d_radial_binning():
    n, length = 32, 2.0
    x, y = torch.meshgrid(_grid(n, length), _grid(n, length), indexing="ij")
    u = 0.5 * torch.sin(2 * math.pi * (3 * x + 4 * y) / length) + 0.3 * torch.cos(
        2 * math.pi * 2 * y / length
    )
    spectrum = metrics.energy_spectrum(u[None, None], ndim=2)[0]
    expected = torch.zeros(n // 2 + 1, dtype=torch.float64)
    expected[5], expected[2] = 0.5**2 / 2, 0.3**2 / 2  # |(3, 4)| = 5
    assert torch.allclose(spectrum, expected, atol=1e-12)


def test_band_edges_cover_resolved_wavenumbers():
    assert metrics.band_edges(10, 3) == [(1, 4), (4, 7), (7, 10)]
    assert metrics.band_edges(129, 3) == [(1, 44), (44, 86), (86, 129)]
    with pytest.raises(ValueError, match="num_bands"):
        metrics.band_edges(3, 3)


def test_spectrum_band_error_by_hand():
    true = torch.tensor([5.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0], dtype=torch.float64)
    pred = torch.tensor([9.0, 1.0, 1.0, 0.2, 0.2, 40.0, 40.0], dtype=torch.float64)
    error = metrics.spectrum_band_error(pred, true, num_bands=3, floor=0.0)
    # bands [1,3) [3,5) [5,7): equal, ten times too little, ten times too much; k=0 ignored
    assert torch.allclose(error, torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64))
    empty = metrics.spectrum_band_error(torch.ones(7), torch.zeros(7).index_fill(0, torch.tensor([1]), 1.0))
    assert bool(torch.isfinite(empty).all())


def test_spectrum_bands_ignore_modes_where_the_truth_has_no_energy():
    # truth: energy on k = 1..6, round-off (1e-30) on k = 7..12 (e.g. dealiased); the prediction has
    # small noise there, which must not count as a (huge) relative error
    true = torch.cat([torch.tensor([0.0, 8, 4, 2, 2, 1, 1]), torch.full((6,), 1e-30)]).double()
    pred = true.clone()
    pred[7:] = 1e-6
    assert metrics.active_wavenumbers(true) == 7
    error = metrics.spectrum_band_error(pred, true, num_bands=3)
    assert torch.allclose(error, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    pred[5:7] *= 10  # ten times too much energy at the top of the active range: the high band
    error = metrics.spectrum_band_error(pred, true, num_bands=3)
    assert error[2].item() == pytest.approx(1.0) and abs(error[0].item()) < 1e-12


def test_bootstrap_ci_by_hand():
    # two trajectories 0 and 1: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    mean, low, high = metrics.bootstrap_ci(torch.tensor([0.0, 1.0]), confidence=0.95, num_resamples=4000)
    assert (mean.item(), low.item(), high.item()) == (0.5, 0.0, 1.0)
    _, low, high = metrics.bootstrap_ci(torch.tensor([0.0, 1.0]), confidence=0.4, num_resamples=4000)
    assert (low.item(), high.item()) == (0.5, 0.5)
    mean, low, high = metrics.bootstrap_ci(torch.full((5, 3), 2.0))
    assert torch.equal(low, torch.full((3,), 2.0, dtype=torch.float64)) and torch.equal(high, low)


def test_bootstrap_ci_width_and_seed():
    values = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean, low, high = metrics.bootstrap_ci(values, 0.95, 2000, seed=3)
    expected = 2 * 1.96 * values.std().item() / math.sqrt(len(values))  # normal approximation
    assert (high - low).item() == pytest.approx(expected, rel=0.15)
    assert low < mean < high
    again = metrics.bootstrap_ci(values, 0.95, 2000, seed=3)
    assert again[1] == low and again[2] == high
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_ci(values, confidence=1.5)


# --------------------------------------------------------------------------- published conventions
def test_pdearena_correlation_time_averages_over_trajectories_first():
    corr = torch.tensor([[0.9, 0.85, 0.7], [0.9, 0.7, 0.9]], dtype=torch.float64)
    times = torch.tensor([0.8, 1.6, 2.4], dtype=torch.float64)
    # mean correlation 0.9, 0.775, 0.8: one step strictly above 0.8 → 0.8 time units
    assert metrics.pdearena_correlation_time(corr, times, 0.8).item() == pytest.approx(0.8)
    # the per-trajectory convention: crossings after 1.6 and 0.8 → mean 1.2
    assert metrics.correlation_time(corr, times, 0.8).mean().item() == pytest.approx(1.2)
    # PDEArena counts every step above the threshold, also after a dip
    assert metrics.pdearena_correlation_time(corr, times, 0.75).item() == pytest.approx(2.4)
    with pytest.raises(ValueError, match="step"):
        metrics.pdearena_correlation_time(corr, torch.tensor([0.8, 1.6, 3.0]), 0.8)


def test_fno_relative_l2_per_frame_and_over_the_block():
    true = traj([[[3.0, 4.0], [1.0, 0.0]]])
    pred = traj([[[3.0, 0.0], [1.0, 1.0]]])
    # per frame 4/5 and 1 → the papers' per-step figure over two frames 0.9; over the first frame 0.8
    per_frame = metrics.over_horizon(metrics.relative_l2(pred, true))
    torch.testing.assert_close(per_frame, torch.tensor([[0.8, 0.9]], dtype=torch.float64))
    # the block up to frame 1: ‖(0,4)‖ / ‖(3,4)‖; up to frame 2: ‖(0,4,0,1)‖ / ‖(3,4,1,0)‖
    block = metrics.relative_l2_block(pred, true)
    torch.testing.assert_close(block, torch.tensor([[0.8, math.sqrt(17 / 26)]], dtype=torch.float64))


def test_pdearena_and_per_trajectory_correlation_times_differ_by_averaging_order():
    # trajectory 0 stays at 0.9; trajectory 1 drops to 0.5 at once: each crosses on its own time, the mean
    # correlation 0.7 is below 0.8 from the first step
    corr = torch.tensor([[0.9, 0.9, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    per_trajectory = metrics.correlation_time(corr, TIMES, 0.8)
    assert per_trajectory.tolist() == [2.0, 0.0] and per_trajectory.mean().item() == 1.0
    assert metrics.pdearena_correlation_time(corr, TIMES, 0.8).item() == 0.0
    assert metrics.pdearena_correlation_time(corr, TIMES, 0.6).item() == 2.0


def test_bootstrap_ci_of_a_statistic_of_the_mean():
    # two trajectories 0 and 1, statistic 2·mean²: resampled means 0, 0.5, 1 → 0, 0.5, 2
    values = torch.tensor([0.0, 1.0])
    value, low, high = metrics.bootstrap_ci(values, 0.95, 4000, statistic=lambda m: 2 * m.pow(2))
    assert (value.item(), low.item(), high.item()) == (0.5, 0.0, 2.0)
    _, low, high = metrics.bootstrap_ci(values, 0.4, 4000, statistic=lambda m: 2 * m.pow(2))
    assert (low.item(), high.item()) == (0.5, 0.5)


def test_vrmse_by_hand():
    true = traj([[[1.0, 3.0, 1.0, 3.0]]])  # mean 2, population variance 1, unbiased variance 4/3
    assert metrics.vrmse(true + 0.5, true).item() == pytest.approx(0.5 / math.sqrt(4 / 3), rel=1e-6)
    assert metrics.vrmse(true + 0.5, true, correction=0).item() == pytest.approx(0.5, rel=1e-6)
    assert metrics.vrmse(torch.full_like(true, 2.0), true, correction=0).item() == pytest.approx(
        1.0, rel=1e-6
    )


@pytest.mark.parametrize("ndim", [1, 2])
def test_vrmse_is_the_wells_own_code(ndim):
    """The Well 1.2.0's ``VRMSE.eval`` (``the_well/benchmark/metrics/spatial.py``) on channels-last fields,
    averaged over the fields: pdestream's ``vrmse`` to float round-off."""
    from types import SimpleNamespace

    from the_well.benchmark.metrics.spatial import VRMSE

    generator = torch.Generator().manual_seed(0)
    true = torch.randn(3, 4, 2, *(16,) * ndim, generator=generator, dtype=torch.float64)  # [B, T, C, *S]
    pred = true + 0.3 * torch.randn(true.shape, generator=generator, dtype=torch.float64)
    theirs = VRMSE.eval(pred.movedim(2, -1), true.movedim(2, -1), SimpleNamespace(n_spatial_dims=ndim))
    torch.testing.assert_close(metrics.vrmse(pred, true), theirs.mean(-1), rtol=1e-12, atol=0)


def pdearena_time_till_corr_lower(corr: torch.Tensor, threshold: float) -> torch.Tensor:
    """PDEArena's count (``pdearena/models/pderefiner.py`` ``validation_epoch_end``, commit 78a8b03): the
    correlation ``[B, T]`` stacked over batches, averaged over them, then ``(mean > threshold).float().sum()``."""
    corr_timesteps = corr.mean(0)
    return (corr_timesteps > threshold).float().sum()


def test_pdearena_correlation_time_lets_a_blown_up_trajectory_stop_the_count_as_the_reference():
    """One of four trajectories blows up (NaN) after 5 of 20 steps: the reference's mean is NaN from there, so
    only 5 steps count; ``nan_as=-1`` (``corr_time_of_mean``) keeps counting while the mean stays above."""
    corr = torch.full((4, 20), 0.95, dtype=torch.float64)
    corr[0, 5:] = math.nan
    times = 0.8 * torch.arange(1, 21, dtype=torch.float64)
    for threshold in (0.3, 0.8):
        expected = pdearena_time_till_corr_lower(corr, threshold).item() * 0.8
        assert metrics.pdearena_correlation_time(corr, times, threshold).item() == pytest.approx(expected)
    assert metrics.pdearena_correlation_time(corr, times, 0.3).item() == pytest.approx(4.0)
    # (3 · 0.95 − 1) / 4 = 0.4625 > 0.3 at every step; < 0.8 after the blow-up
    assert metrics.pdearena_correlation_time(corr, times, 0.3, nan_as=-1.0).item() == pytest.approx(16.0)
    assert metrics.pdearena_correlation_time(corr, times, 0.8, nan_as=-1.0).item() == pytest.approx(4.0)


def test_pdebench_nrmse_is_per_channel_then_averaged():
    true = torch.tensor([[[[1.0, 1.0], [100.0, 100.0]]]], dtype=torch.float64)  # [B, T, C=2, X=2]
    pred = true + torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]], dtype=torch.float64)
    # channel errors 1/1 and 1/100; a norm over both channels would give ~0.014
    assert metrics.pdebench_nrmse(pred, true).item() == pytest.approx((1 + 0.01) / 2)


@pytest.mark.parametrize(("k", "band"), [(2, 0), (5, 1), (20, 2)])
def test_pdebench_frmse_bands_in_1d(k, band):
    n, length, a = 64, 3.0, 0.7
    x = torch.arange(n, dtype=torch.float64) * length / n
    error = a * torch.sin(2 * math.pi * k * x / length)
    true = torch.zeros(2, 1, 1, n, dtype=torch.float64)
    # |rfft|_k = a n / 2 → a L / 2 after the 1/n · L scaling, averaged over the band's wavenumbers
    widths = [4, 8, n // 2 + 1 - 12]
    expected = torch.zeros(3, dtype=torch.float64)
    expected[band] = a * length / 2 / widths[band]
    got = metrics.pdebench_frmse(true + error, true, (length,))
    assert got.shape == (1, 3)
    torch.testing.assert_close(got[0], expected)


def test_pdebench_frmse_bins_the_first_quadrant_in_2d():
    n, a = 32, 2.0
    x = torch.arange(n, dtype=torch.float64) / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    error = a * torch.cos(
        2 * math.pi * (3 * X + 4 * Y)
    )  # |k| = 5: mid band; only (3, 4) lies in the quadrant
    true = torch.zeros(1, 1, 1, n, n, dtype=torch.float64)
    got = metrics.pdebench_frmse(true + error, true, (1.0, 1.0))[0]
    # |fftn| at (3, 4) = a n² / 2; / n² · 1 → a / 2 in bin 5, mean over the 8 mid bins
    torch.testing.assert_close(got, torch.tensor([0.0, a / 2 / 8, 0.0], dtype=torch.float64))


def test_pdebench_frmse_averages_the_channels_at_every_step():
    n, length = 32, 2.0
    x = torch.arange(n, dtype=torch.float64) * length / n
    wave = torch.sin(2 * math.pi * 2 * x / length)  # k = 2: the low band
    amplitude = torch.tensor([[1.0, 3.0], [2.0, 0.0]], dtype=torch.float64)  # [T, C]
    error = (amplitude[:, :, None] * wave).expand(3, 2, 2, n)
    got = metrics.pdebench_frmse(error, torch.zeros_like(error), (length,))
    # per channel a L / 2 in one of the 4 low wavenumbers, then the mean over the two channels
    low = amplitude.mean(1) * length / 2 / 4
    torch.testing.assert_close(got, torch.stack([low, 0 * low, 0 * low], -1), atol=1e-12, rtol=1e-9)


def test_times_per_trajectory_are_each_trajectorys_own():
    """Trajectories with steps 0.9 and 1.1: each crossing is in its own time; PDEArena counts steps of the
    mean correlation and converts them with the mean step (1.0)."""
    corr = torch.tensor([[0.9, 0.85, 0.7], [0.9, 0.7, 0.9]], dtype=torch.float64)
    times = torch.tensor([[0.9, 1.8, 2.7], [1.1, 2.2, 3.3]], dtype=torch.float64)
    assert metrics.correlation_time(corr, times, 0.8).tolist() == pytest.approx([1.8, 1.1])
    assert metrics.correlation_time(corr, times, 0.5).tolist() == pytest.approx([2.7, 3.3])  # the horizons
    assert metrics.pdearena_correlation_time(corr, times, 0.8).item() == pytest.approx(1.0)
    assert metrics.pdearena_correlation_time(corr, times, 0.75).item() == pytest.approx(3.0)
    pred = traj([[[1.0], [20.0], [1.0]], [[1.0], [1.0], [math.nan]]])
    assert metrics.blowup_time(pred, times, threshold=10.0).tolist() == pytest.approx([1.8, 3.3])
    with pytest.raises(ValueError, match=r"times \[T\] or \[B, T\]"):
        metrics.correlation_time(corr, times[:1], 0.8)


def test_pdearena_step_is_exact_when_every_trajectory_shares_it():
    times = torch.tensor([0.1, 0.2], dtype=torch.float64).expand(3, 2)
    assert metrics._uniform_step(times) == 0.1  # not 0.1 up to the rounding of a mean
