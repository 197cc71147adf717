"""The report's figures: physical units on every axis, labelled colour bars, honest colour ranges."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from evaluation.report import figure_samples


def _colorbars(fig: plt.Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_space_time_plot_has_physical_axes_and_labelled_colour_bars():
    x = torch.arange(64) * 64.0 / 64
    true = torch.sin(2 * math.pi * x / 64).expand(2, 10, 1, 64).clone()
    pred = 0.5 * true
    times = 0.5 * np.arange(1, 11)
    fig = figure_samples(pred, true, times, "m", 64.0, "u")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (length units)" and ax.get_ylabel().endswith("lead time (time units)")
    assert ax.get_xlim() == pytest.approx((-0.5, 63.5))  # grid points 0, 1, …, 63 at the pixel centres
    assert ax.get_ylim() == pytest.approx((0.25, 5.25))
    labels = [cb.get_ylabel() for cb in _colorbars(fig)]
    assert labels == ["u", "u", "prediction − truth (u)"] * 2
    images = [ax.images[0] for ax in fig.axes if ax.images]
    truth, prediction, error = images[:3]
    assert truth.get_clim() == prediction.get_clim() == pytest.approx((-1, 1))
    assert error.get_clim() == pytest.approx((-0.5, 0.5))  # the error on its own symmetric scale
    plt.close(fig)


def test_one_lead_time_is_drawn_as_profiles_with_the_error_below():
    """An operator task (one output frame) has no time axis to image: curves of truth and prediction."""
    x = torch.arange(32) * 2 * math.pi / 32
    true = torch.sin(x).expand(2, 1, 1, 32).clone()
    pred = true + 0.1
    fig = figure_samples(pred, true, np.array([1.0]), "m", 2 * math.pi, "u")
    top, bottom = fig.axes[0], fig.axes[2]  # trajectory 0: the curves, its error below
    (truth, prediction), error = top.lines, bottom.lines[0]
    assert np.allclose(truth.get_ydata(), true[0, 0, 0])
    assert np.allclose(prediction.get_ydata(), pred[0, 0, 0])
    assert np.allclose(error.get_ydata(), 0.1) and error.get_xdata()[1] == pytest.approx(2 * math.pi / 32)
    assert top.get_ylabel() == "u" and bottom.get_ylabel() == "prediction − truth (u)"
    assert bottom.get_xlabel() == "x (length units)" and not _colorbars(fig)
    plt.close(fig)


def test_saturating_prediction_keeps_the_truths_colour_range_and_is_marked():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(1, 8, 1, 16, 16, generator=g)
    pred = 3 * true  # far outside the truth's range
    fig = figure_samples(pred, true, np.arange(1.0, 9.0), "m", 1.0, "vorticity")
    axes = [ax for ax in fig.axes if ax.images]  # rows truth, prediction, error of 4 snapshots
    assert axes[0].get_xlabel() == "x (length units)" and axes[0].get_ylabel() == "y (length units)"
    assert axes[0].get_xlim() == pytest.approx((-1 / 32, 1 - 1 / 32))
    vmax = float(true[0, 0].abs().max())
    truth, prediction, error = axes[0].images[0], axes[4].images[0], axes[8].images[0]
    assert truth.get_clim() == prediction.get_clim() == pytest.approx((-vmax, vmax))
    assert error.get_clim() == pytest.approx((-2 * vmax, 2 * vmax))
    assert "outside the truth's range" in axes[4].get_title()
    bars = _colorbars(fig)
    assert [cb.get_ylabel() for cb in bars[:3]] == [
        "vorticity",
        "vorticity",
        "prediction − truth (vorticity)",
    ]
    assert prediction.colorbar.extend == "both" and truth.colorbar.extend == "neither"
    assert prediction.cmap.get_over()[:3] == pytest.approx((1, 1, 0))  # yellow above the range
    plt.close(fig)
