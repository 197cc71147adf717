"""The report's figures drawn from the metrics dataset: error and correlation vs lead time, spectra, cost vs accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from torch import Tensor

from evaluation.report.common import TIME_UNITS, ok_solvers, safe_name, timing_ms, trained_models
from evaluation.report.parameter_space import PARAMETER_FIGURE, figure_parameter_space, varying_parameters
from evaluation.report.samples import figure_samples
from evaluation.report.style import ANCHOR_STYLE, TIME_LABEL, log_ticks, save_figure
from evaluation.report.verdicts import (
    SPREAD_LIMIT,
    WARNING,
    mean_score,
    same_as_reference,
    shown_label,
    timing_problem,
    timing_rows,
)


def _curve(ax: plt.Axes, ds: xr.Dataset, key: str, ylabel: str) -> None:
    time = ds.time.values
    for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
        ci = ds[f"{key}_ci"].sel(model=model)
        if kind != "trained":
            ax.plot(
                time, ci.sel(stat="mean"), lw=1.2, label=shown_label(ds, model), **ANCHOR_STYLE[str(kind)]
            )
            continue
        line = ax.plot(time, ci.sel(stat="mean"), lw=1.8, label=shown_label(ds, model))[0]
        ax.fill_between(time, ci.sel(stat="low"), ci.sel(stat="high"), color=line.get_color(), alpha=0.25)
    for setting in ok_solvers(ds):
        curve = ds[f"solver_{key}"].sel(solver_setting=setting).mean("trajectory")
        valid = np.isfinite(curve.values)
        ax.plot(time[valid], curve.values[valid], "--", lw=1, label=f"solver {setting}")
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def figure_error(ds: xr.Dataset) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    _curve(ax, ds, "rel_l2", "nRMSE (mean over trajectories)")
    ax.set_yscale("log")
    ax.set_title("Relative L2 error vs lead time (band: 95% bootstrap CI)")
    return fig


def figure_correlation(ds: xr.Dataset) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    _curve(ax, ds, "corr", "Pearson correlation with the truth")
    for t in ds.threshold.values:
        ax.axhline(t, color="grey", ls=":", lw=0.8)
    ax.set_ylim(min(0.0, float(np.nanmin(ds.corr_ci.values))), 1.02)
    ax.set_title("Correlation with the truth vs lead time (band: 95% bootstrap CI)")
    return fig


def figure_spectra(ds: xr.Dataset) -> plt.Figure:
    """Energy spectra of the trained models, averaged over trajectories at the first, middle and last
    lead time."""
    length = ds.sizes["time"]
    picks = sorted({0, length // 2, length - 1})
    fig, axes = plt.subplots(
        1, len(picks), figsize=(4.2 * len(picks), 3.8), squeeze=False, layout="constrained"
    )
    k = ds.wavenumber.values[1:]
    for ax, i in zip(axes[0], picks, strict=True):
        true = ds.spectrum_true.isel(model=0, time=i).mean("trajectory").values[1:]
        ax.semilogy(k, true, "k", lw=2, label="truth")
        for model in trained_models(ds):
            pred = ds.spectrum_pred.sel(model=model).isel(time=i).mean("trajectory").values[1:]
            ax.semilogy(k, pred, lw=1, label=shown_label(ds, model))
        ax.set_title(f"lead time {float(ds.time[i]):g} {TIME_UNITS}", fontsize=10)
        ax.set_xlabel(f"wavenumber k (periods per domain length {ds.attrs['length']:g})")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("energy E(k), mean over trajectories")
    axes[0, 0].legend(fontsize=7)
    return fig


def _annotate(ax: plt.Axes, points: list[tuple[float, float, str]]) -> None:
    """Label points, moving a label down while its box (plus a small gap) would overlap one already placed
    (display pixels; a 7-point character is taken as 7 pixels wide)."""
    placed: list[tuple[float, float, float]] = []  # left, bottom, width of each label box
    for x, y, text in points:
        left, bottom = ax.transData.transform((x, y)) + np.array([5.0, 4.0])
        width = 7.0 * len(text) + 6.0

        def overlaps(bottom: float, left: float = left, width: float = width) -> bool:
            return any(
                abs(bottom - b) < 11 and left < other + w and other < left + width for other, b, w in placed
            )

        offset = 4.0
        while overlaps(bottom):
            offset -= 11
            bottom -= 11
        placed.append((left, bottom, width))
        box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}  # readable over lines
        ax.annotate(text, (x, y), fontsize=7, xytext=(5, offset), textcoords="offset points", bbox=box)


def _xerr(costs: list[tuple[float, float, float]]) -> np.ndarray:
    return np.array([[c[0] - c[1] for c in costs], [c[2] - c[0] for c in costs]])


def _hollow(ax: plt.Axes, points: list[tuple[float, float]], color: str) -> None:
    """Redraw ``points`` as hollow circles: their timings are unreliable."""
    if points:
        x, y = zip(*points, strict=True)
        ax.plot(x, y, "o", ls="none", ms=7, mfc="white", mec=color, mew=1.5, zorder=3)


def figure_cost_accuracy(ds: xr.Dataset) -> plt.Figure:
    """Correlation time and mean nRMSE against wall time per step: solver settings and the surrogates
    (bars: fastest to slowest timed repeat), the anchors' accuracy as horizontal lines. Larger steps that
    give the reference's result again are labelled so; points whose timings are unreliable
    (:func:`~evaluation.report.verdicts.timing_problem`) are hollow, and the title says so."""
    threshold = ds.threshold.values[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    solvers, same = ok_solvers(ds), same_as_reference(ds)
    series = (("n/", "solver: coarser grids", "grey"), ("×dt", "solver: larger steps", "tab:brown"))
    panels = (
        ("corr_time", f"correlation time @{threshold:g} ({TIME_UNITS})"),
        ("rel_l2", "mean nRMSE over the horizon"),
    )
    labels_of: dict[plt.Axes, list[tuple[float, float, str]]] = {}
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        ax.set_xscale("log")
        if key == "rel_l2":
            ax.set_yscale("log")
        labels = labels_of[ax] = []
        for tag, name, color in series:
            chosen = [s for s in solvers if s == "reference" or tag in s]
            if len(chosen) < 2:
                continue
            cost = [timing_ms(ds.solver_step_seconds.sel(solver_setting=s)) for s in chosen]
            value = [mean_score(ds, "solver_setting", s, key) for s in chosen]
            ax.errorbar(
                [c[0] for c in cost], value, xerr=_xerr(cost), fmt="o-", color=color, capsize=2, label=name
            )
            shaky = [bool(timing_problem(ds, ds.solver_step_seconds.sel(solver_setting=s))) for s in chosen]
            _hollow(ax, [(c[0], v) for c, v, bad in zip(cost, value, shaky, strict=True) if bad], color)
            labels += [
                (c[0], v, s + (" (= reference result)" if s in same else ""))
                for c, v, s in zip(cost, value, chosen, strict=True)
                if s != "reference"
            ]
        if "reference" in solvers:
            cost = timing_ms(ds.solver_step_seconds.sel(solver_setting="reference"))
            value = mean_score(ds, "solver_setting", "reference", key)
            if len(solvers) == 1:
                ax.errorbar(
                    [cost[0]], [value], xerr=_xerr([cost]), fmt="o", color="grey", capsize=2, label="solver"
                )
                if timing_problem(ds, ds.solver_step_seconds.sel(solver_setting="reference")):
                    _hollow(ax, [(cost[0], value)], "grey")
            labels.insert(0, (cost[0], value, "reference"))
        for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
            value = mean_score(ds, "model", str(model), key)
            if kind == "trained":
                cost = timing_ms(ds.step_seconds.sel(model=model))
                shaky = timing_problem(ds, ds.step_seconds.sel(model=model))
                label = shown_label(ds, model) + (f" ({WARNING} timing unreliable)" if shaky else "")
                ax.errorbar(
                    [cost[0]], [value], xerr=_xerr([cost]), fmt="*", ms=13, capsize=2, label=label,
                    **({"mfc": "white"} if shaky else {}),
                )  # fmt: skip
            else:
                ax.axhline(value, lw=1, label=shown_label(ds, model), **ANCHOR_STYLE[str(kind)])
        log_ticks(ax)
        ax.margins(x=0.08, y=0.1)  # room for the labels of points on the edges
        ax.set_xlabel(f"wall time per rollout step (ms, batch of {ds.attrs['batch_size']})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.canvas.draw()  # the label placement needs the final axis limits
    for ax, labels in labels_of.items():
        _annotate(ax, labels)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=8)
    title = f"Cost vs accuracy on {ds.attrs['timing_device']}"
    if any(timing_problem(ds, repeats) for repeats in timing_rows(ds).values()):
        title += (
            f"\n{WARNING} hollow markers: unreliable timings (slowest run > {SPREAD_LIMIT:g}× the fastest, or "
            "a busy machine); their costs may be wrong"
        )
    fig.suptitle(title, fontsize=10)
    return fig


def draw_figures(
    ds: xr.Dataset, samples: Mapping[str, tuple[Tensor | None, Tensor]], out: Path, horizons: list[int]
) -> dict[str, Path]:
    """Every figure of the report, written as PNG into ``out``; returns ``{caption: path}``."""
    figures = {
        "Error vs lead time": (figure_error, out / "error_vs_time.png"),
        "Correlation vs lead time": (figure_correlation, out / "correlation_vs_time.png"),
        "Energy spectra, truth vs prediction": (figure_spectra, out / "spectra.png"),
    }
    if varying_parameters(ds):
        draw = partial(figure_parameter_space, horizons=horizons)
        figures[PARAMETER_FIGURE] = (draw, out / "parameter_space.png")
    if "solver_setting" in ds.coords:
        figures["Cost vs accuracy"] = (figure_cost_accuracy, out / "cost_accuracy.png")
    paths = {}
    for caption, (draw, path) in figures.items():
        save_figure(draw(ds), path)
        paths[caption] = path
    channel = ds.attrs["channels"].split(", ")[0]
    for label, (pred, true) in samples.items():
        if pred is None:
            continue
        path = out / f"samples_{safe_name(label)}.png"
        times = ds.time.values[: pred.shape[1]]
        save_figure(
            figure_samples(pred, true, times, shown_label(ds, label), ds.attrs["length"], channel), path
        )
        paths[f"Sample rollouts: {label}"] = path
    return paths
