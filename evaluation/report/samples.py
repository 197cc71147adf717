"""Sample rollouts: truth, prediction and error as space-time plots, profiles or 2D snapshots."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from evaluation.report.common import LENGTH_UNITS, TIME_UNITS
from evaluation.report.style import ERROR_CMAP, FIELD_CMAP, TIME_LABEL


def figure_samples(
    pred: Tensor, true: Tensor, times: np.ndarray, label: str, length: float, channel: str
) -> plt.Figure:
    """Truth, prediction and error of sample rollouts. 1D: space-time plots per sample, or profiles where
    there is one lead time (an operator task); 2D: snapshots of the first sample. Truth and prediction share
    the truth's colour range (prediction values outside it are drawn yellow above, green below, with arrows
    on the colour bar); the error has its own symmetric scale."""
    pred = pred.float().numpy()[:, :, 0]
    true = true[:, : pred.shape[1]].float().numpy()[:, :, 0]
    dx = length / pred.shape[-1]
    space = (-0.5 * dx, length - 0.5 * dx)  # grid points x_i = i L / n, at the pixel centres
    if pred.ndim == 3 and pred.shape[1] == 1:  # [P, 1, X]: truth and prediction as curves, the error below
        fig, axes = plt.subplots(
            2, len(pred), figsize=(6 * len(pred), 5.5), squeeze=False, sharex=True, layout="constrained"
        )
        x = np.arange(pred.shape[-1]) * dx
        for col, (p, t) in enumerate(zip(pred[:, 0], true[:, 0], strict=True)):
            axes[0, col].plot(x, t, "k", lw=2, label="truth")
            axes[0, col].plot(x, p, "C1", lw=1, label="prediction")
            axes[0, col].set_title(f"trajectory {col}, lead time {times[0]:g} {TIME_UNITS}", fontsize=9)
            axes[1, col].plot(x, p - t, "C3", lw=1)
            axes[1, col].set_xlabel(f"x ({LENGTH_UNITS})")
            for ax in axes[:, col]:
                ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel(channel)
        axes[1, 0].set_ylabel(f"prediction − truth ({channel})")
        axes[0, 0].legend(fontsize=8)
    elif pred.ndim == 3:  # [P, T, X]
        fig, axes = plt.subplots(
            len(pred), 3, figsize=(12, 3.4 * len(pred)), squeeze=False, layout="constrained"
        )
        half = 0.5 * (times[1] - times[0]) if len(times) > 1 else 0.5
        extent = (*space, times[0] - half, times[-1] + half)
        for row, (p, t) in enumerate(zip(pred, true, strict=True)):
            _field_images(axes[row], t, p, extent, channel, aspect="auto")
            for ax in axes[row]:
                ax.set_xlabel(f"x ({LENGTH_UNITS})")
            axes[row, 0].set_ylabel(f"trajectory {row}\n{TIME_LABEL}")
    else:  # [P, T, X, Y]: columns are lead times; rows truth, prediction, error
        cols = sorted({0, len(times) // 4, len(times) // 2, len(times) - 1})
        fig, axes = plt.subplots(
            3, len(cols), figsize=(3.3 * len(cols) + 1.5, 9.5), squeeze=False, layout="constrained"
        )
        images = [_field_images(axes[:, j], true[0, i].T, pred[0, i].T, (*space, *space), channel) for j, i in
                  enumerate(cols)]  # fmt: skip
        for j, i in enumerate(cols):
            names = ("truth", "prediction", "error (own scale)")
            for row, name in enumerate(names):
                note = images[j] if row == 1 else ""
                axes[row, j].set_title(f"{name}, t = {times[i]:g}{note}", fontsize=8 if note else 9)
                axes[row, j].set_xlabel(f"x ({LENGTH_UNITS})", fontsize=8)
        for row in range(3):
            axes[row, 0].set_ylabel(f"y ({LENGTH_UNITS})", fontsize=8)
    fig.suptitle(f"{label}: sample rollouts ({channel})")
    return fig


def _field_images(
    axes: np.ndarray, truth: np.ndarray, pred: np.ndarray, extent: tuple, channel: str, aspect: str = "equal"
) -> str:
    """Truth and prediction on the truth's symmetric range, the error on its own, each with a labelled
    colour bar (arrows where the prediction leaves the truth's range); returns a note on how much of the
    prediction lies outside that range (empty if none)."""
    vmax = float(np.nanmax(np.abs(truth))) or 1.0
    error = pred - truth
    emax = float(np.nanmax(np.abs(error))) or 1.0
    above, below = bool((pred > vmax).any()), bool((pred < -vmax).any())
    extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get((above, below), "neither")
    style = {"aspect": aspect, "extent": extent, "origin": "lower"}
    for ax, field, name in zip(axes[:2], (truth, pred), ("truth", "prediction"), strict=True):
        im = ax.imshow(field, cmap=FIELD_CMAP, vmin=-vmax, vmax=vmax, **style)
        plt.colorbar(im, ax=ax, extend=extend if name == "prediction" else "neither", label=channel)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    im = axes[2].imshow(error, cmap=ERROR_CMAP, vmin=-emax, vmax=emax, **style)
    plt.colorbar(im, ax=axes[2], label=f"prediction − truth ({channel})")
    axes[2].set_title("error (own scale)", fontsize=9)
    axes[2].tick_params(labelsize=7)
    outside = float(np.mean(np.abs(pred) > vmax))
    if outside:
        axes[1].set_title(
            f"prediction: {100 * outside:.2g}% outside the truth's range (yellow/green)", fontsize=8
        )
    return f"\n{100 * outside:.2g}% outside the truth's range (yellow/green)" if outside else ""
