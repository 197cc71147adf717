"""The error over the PDE parameters: coverage of the training range, tail tables and the curve / map figure."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle

from evaluation import registry
from evaluation.report.common import TIME_UNITS, Table, fmt, trained_models, with_units
from evaluation.report.style import ANCHOR_STYLE, log_ticks
from evaluation.report.verdicts import shown_label

PARAMETER_FIGURE = "Error over the PDE parameters"


def parameters(ds: xr.Dataset) -> list[str]:
    """The PDE parameters of the test trajectories (``param_<name>`` coordinates), in the solver's order."""
    return [str(name)[len("param_") :] for name in ds.coords if str(name).startswith("param_")]


def varying_parameters(ds: xr.Dataset) -> list[str]:
    """The parameters that take more than one value over the test set."""
    return [p for p in parameters(ds) if np.ptp(ds[f"param_{p}"].values) > 0]


def parameter_label(ds: xr.Dataset, name: str) -> str:
    """Axis label of a parameter: meaning, then config key and units (``viscosity ν`` / ``pde.nu (length
    units²/time unit)``) on a second line."""
    attrs = ds[f"param_{name}"].attrs
    units = f" ({attrs['units']})" if attrs.get("units") else ""
    return f"{attrs.get('long_name', name)}\n{attrs.get('config_key', name)}{units}"


def training_law(ds: xr.Dataset, name: str) -> str:
    """``uniform on [0.5, 1.5]``, ``log-uniform on [0.001, 0.05]`` or ``fixed at 1``."""
    attrs = ds[f"param_{name}"].attrs
    low, high = float(attrs["training_low"]), float(attrs["training_high"])
    if attrs["training_law"] == "fixed":
        return f"fixed at {low:g}"
    return f"{attrs['training_law']} on [{low:g}, {high:g}]"


def inside_training_range(ds: xr.Dataset) -> np.ndarray:
    """Per test trajectory: whether every parameter lies in its training range (a fixed one: at its value)."""
    inside = np.ones(ds.sizes["trajectory"], dtype=bool)
    for name in parameters(ds):
        coord = ds[f"param_{name}"]
        low, high = float(coord.attrs["training_low"]), float(coord.attrs["training_high"])
        tolerance = 1e-9 * max(abs(low), abs(high))
        inside &= (coord.values >= low - tolerance) & (coord.values <= high + tolerance)
    return inside


def parameter_quantities(ds: xr.Dataset, horizons: list[int]) -> list[tuple[str, str, dict, str]]:
    """What the parameter-space figure and the tail tables show, ``(variable, label, selection, title)``:
    the per-frame error averaged over the frames up to each horizon (FNO's convention), then the correlation
    time at the first threshold."""
    error, corr_time = registry.by_name("fno_rel_l2"), registry.by_name("corr_time")
    out = []
    for h in horizons:
        if 1 <= h <= ds.sizes["time"]:
            t = float(ds.time[h - 1])
            out.append(
                (
                    error.name,
                    f"{error.label},\nt = {with_units(t, TIME_UNITS)}",
                    {"time": ds.time.values[h - 1]},
                    f"{error.label} at t = {with_units(t, TIME_UNITS)} ({h} step{'s' * (h != 1)})",
                )
            )
    threshold = float(ds.threshold.values[0])
    label = f"{corr_time.label}\n@{threshold:g} ({corr_time.unit})"
    return [*out, (corr_time.name, label, {"threshold": threshold}, label.replace("\n", " "))]


def _trajectory_params(ds: xr.Dataset, trajectory: int) -> str:
    """``17 (nu = 0.53)``: a trajectory id with its varying parameters (all of them if none varies)."""
    names = varying_parameters(ds) or parameters(ds)
    values = ", ".join(f"{n} = {float(ds[f'param_{n}'].sel(trajectory=trajectory)):.4g}" for n in names)
    return f"{trajectory} ({values})" if values else str(trajectory)


TAIL_NOTE = (
    "The tail of each model's score over the test trajectories, on the bad side: median, p90 and p99 (the "
    "values that 50, 90 and 99 % of the trajectories do at least as well as: numpy's linear percentiles 50, "
    "90 and 99 of an error, 50, 10 and 1 of the correlation time) and the worst trajectory with its PDE "
    "parameters. A blown-up rollout counts as the worst value possible (inf)."
)


def _tail_cell(value: float) -> str:
    """A tail value; an infinite one is a rollout that blew up (:func:`~evaluation.metrics.tail`)."""
    return "inf (blow-up)" if math.isinf(value) else fmt(value)


def tail_tables(ds: xr.Dataset, horizons: list[int]) -> list[tuple[str, Table]]:
    """Per quantity of :func:`parameter_quantities`: mean, median, p90, p99 and worst over the test
    trajectories of every model and anchor, and the worst trajectory; ``[(title, table)]``."""
    tables = []
    for name, _, sel, title in parameter_quantities(ds, horizons):
        if f"{name}_tail" not in ds:
            continue
        header = ["row", "mean", *(str(s) for s in ds["tail"].values), "worst trajectory (parameters)"]
        rows = []
        for model in ds.model.values:
            tail = ds[f"{name}_tail"].sel(model=model, **sel)
            worst = int(ds[f"{name}_worst_trajectory"].sel(model=model, **sel))
            mean = float(ds[name].sel(model=model, **sel).mean())
            cells = [_tail_cell(float(tail.sel(tail=s))) for s in ds["tail"].values]
            rows.append(
                [
                    shown_label(ds, model),
                    fmt(mean),
                    *cells,
                    _trajectory_params(ds, worst) if worst >= 0 else "—",
                ]
            )
        tables.append((title, (header, rows)))
    return tables


def parameter_coverage(ds: xr.Dataset) -> str:
    """Which PDE parameters vary over the test set, where its trajectories were drawn from and how many lie
    inside the training range; why there is no parameter-space figure when none varies."""
    names = parameters(ds)
    varying = varying_parameters(ds)
    if not varying:
        fixed = ", ".join(f"{n} = {float(ds[f'param_{n}'].values[0]):g}" for n in names)
        why = (
            f"every PDE parameter is the same for all test trajectories ({fixed})"
            if names
            else "the PDE has no parameters"
        )
        return f"No figure of the error over the PDE parameters: {why}."
    count = ds.sizes["trajectory"]
    laws = "; ".join(f"{n}: {training_law(ds, n)}" for n in names)
    return (
        f"Varying over the {count} test trajectories: {', '.join(varying)}. Training distribution (the "
        f"checkpoint's pde config): {laws}. Test set: {ds.attrs.get('test_draw', 'origin not recorded')}; "
        f"{int(inside_training_range(ds).sum())} of {count} test trajectories lie inside the training range "
        "of every parameter."
    )


def parameter_caption(ds: xr.Dataset) -> str:
    """The caption of the parameter-space figure: what it shows, then :func:`parameter_coverage`."""
    if len(varying_parameters(ds)) == 2:
        shown = (
            "per trained model, the binned mean over the two varying parameters (blank: no test trajectory "
            "in the cell); dots: the test trajectories; dashed box: the training range"
        )
    else:
        shown = (
            "per varying parameter, the binned mean of each row (band: mean ± 1.96 standard errors for the "
            "trained models), dots single trajectories; shaded: the training range, where the training "
            "density is constant on the axis shown (a log axis for a log-uniform parameter)"
        )
    return f"{PARAMETER_FIGURE}: {shown}. {parameter_coverage(ds)}"


def _edges(values: np.ndarray, bins: int, log: bool) -> np.ndarray:
    """``bins + 1`` bin edges over the range of ``values`` (evenly spaced in log for a log axis)."""
    low, high = float(values.min()), float(values.max())
    if log:
        return np.geomspace(low, high, bins + 1)
    return np.linspace(low, high, bins + 1)


def binned(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y`` per bin of ``x`` (the last bin closed; NaN when empty) and its standard error (NaN
    below two values)."""
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    mean, error = np.full(len(edges) - 1, np.nan), np.full(len(edges) - 1, np.nan)
    for b in range(len(edges) - 1):
        chosen = y[index == b]
        if len(chosen):
            mean[b] = chosen.mean()
        if len(chosen) > 1:
            error[b] = chosen.std(ddof=1) / np.sqrt(len(chosen))
    return mean, error


def _is_error(variable: str) -> bool:
    """A lower-is-better metric: drawn on a log axis."""
    return registry.by_name(variable).better == registry.LOWER


def _is_log(ds: xr.Dataset, name: str) -> bool:
    return ds[f"param_{name}"].attrs.get("training_law") == "log-uniform"


def _training_span(ax: plt.Axes, ds: xr.Dataset, name: str) -> None:
    """The training range of ``name`` shaded along x (a fixed training value: a line)."""
    attrs = ds[f"param_{name}"].attrs
    low, high = float(attrs["training_low"]), float(attrs["training_high"])
    label = f"training: {training_law(ds, name)}"
    if low == high:
        ax.axvline(low, color="tab:green", lw=1, ls="--", label=label)
    else:
        ax.axvspan(low, high, color="tab:green", alpha=0.1, lw=0, label=label)


def _parameter_curves(ds: xr.Dataset, quantities: list[tuple[str, str, dict, str]]) -> plt.Figure:
    """One row per varying parameter, one column per quantity: each trajectory's value, the binned mean
    with its band per trained model, the anchors' binned means."""
    varying = varying_parameters(ds)
    bins = int(np.clip(round(np.sqrt(ds.sizes["trajectory"])), 2, 12))
    fig, axes = plt.subplots(
        len(varying), len(quantities), figsize=(4.4 * len(quantities), 3.6 * len(varying)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for row, name in enumerate(varying):
        x = ds[f"param_{name}"].values
        log = _is_log(ds, name)
        edges = _edges(x, bins, log)
        centres = np.sqrt(edges[:-1] * edges[1:]) if log else 0.5 * (edges[:-1] + edges[1:])
        for ax, (variable, label, sel, _) in zip(axes[row], quantities, strict=True):
            _training_span(ax, ds, name)
            for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
                y = ds[variable].sel(model=model, **sel).values
                mean, error = binned(x, y, edges)
                if kind != "trained":
                    ax.plot(centres, mean, lw=1.2, label=shown_label(ds, model), **ANCHOR_STYLE[str(kind)])
                    continue
                line = ax.plot(centres, mean, "o-", lw=1.8, ms=3, label=shown_label(ds, model))[0]
                color = line.get_color()
                ax.fill_between(centres, mean - 1.96 * error, mean + 1.96 * error, color=color, alpha=0.2)
                ax.scatter(x, y, s=10, color=color, alpha=0.5, lw=0)
            if log:
                ax.set_xscale("log")
                log_ticks(ax)
            if _is_error(variable):
                ax.set_yscale("log")
            ax.set_xlabel(parameter_label(ds, name), fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.grid(alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=8)
    return fig


def _parameter_maps(ds: xr.Dataset, quantities: list[tuple[str, str, dict, str]]) -> plt.Figure:
    """Two varying parameters: per trained model (rows) and quantity (columns) the binned mean over the
    2D parameter space, the test trajectories as dots and the training range as a dashed box."""
    first, second = varying_parameters(ds)
    models = trained_models(ds)
    bins = int(np.clip(round(np.sqrt(ds.sizes["trajectory"] / 3)), 2, 8))
    x, y = ds[f"param_{first}"].values, ds[f"param_{second}"].values
    x_edges, y_edges = _edges(x, bins, _is_log(ds, first)), _edges(y, bins, _is_log(ds, second))
    cell = (np.clip(np.searchsorted(x_edges, x, side="right") - 1, 0, bins - 1)) * bins + np.clip(
        np.searchsorted(y_edges, y, side="right") - 1, 0, bins - 1
    )
    fig, axes = plt.subplots(
        len(models), len(quantities), figsize=(4.6 * len(quantities), 3.8 * len(models)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for row, model in enumerate(models):
        for ax, (variable, label, sel, _) in zip(axes[row], quantities, strict=True):
            values = ds[variable].sel(model=model, **sel).values
            mean, _ = binned(cell.astype(float), values, np.arange(bins * bins + 1, dtype=float))
            grid = mean.reshape(bins, bins).T  # rows: the second parameter
            positive = grid[np.isfinite(grid) & (grid > 0)]
            norm = LogNorm() if _is_error(variable) and positive.size else None
            mesh = ax.pcolormesh(x_edges, y_edges, grid, cmap="viridis", norm=norm)
            plt.colorbar(mesh, ax=ax, label=label)
            ax.scatter(x, y, s=6, color="k", alpha=0.5, lw=0)
            attrs_x, attrs_y = ds[f"param_{first}"].attrs, ds[f"param_{second}"].attrs
            low_x, high_x = float(attrs_x["training_low"]), float(attrs_x["training_high"])
            low_y, high_y = float(attrs_y["training_low"]), float(attrs_y["training_high"])
            box = Rectangle((low_x, low_y), high_x - low_x, high_y - low_y, fill=False, ls="--", ec="tab:red")
            ax.add_patch(box)
            for axis, name in (("x", first), ("y", second)):
                if _is_log(ds, name):
                    getattr(ax, f"set_{axis}scale")("log")
                    log_ticks(ax, axis)
            ax.set_xlabel(parameter_label(ds, first), fontsize=8)
            ax.set_ylabel(parameter_label(ds, second), fontsize=8)
            ax.set_title(shown_label(ds, model), fontsize=9)
    return fig


def figure_parameter_space(ds: xr.Dataset, horizons: list[int]) -> plt.Figure:
    """The error (FNO's horizon-averaged relative L2 at each horizon) and the correlation time over the
    varying PDE parameters: a map for two of them, curves otherwise (one row per parameter); the
    training distribution overlaid. Only drawn when a parameter varies (:func:`varying_parameters`)."""
    quantities = parameter_quantities(ds, horizons)
    if len(varying_parameters(ds)) == 2:
        fig = _parameter_maps(ds, quantities)
    else:
        fig = _parameter_curves(ds, quantities)
    inside = inside_training_range(ds)
    fig.suptitle(
        f"{PARAMETER_FIGURE}: {ds.sizes['trajectory']} test trajectories, {int(inside.sum())} inside the "
        "training range",
        fontsize=10,
    )
    return fig
