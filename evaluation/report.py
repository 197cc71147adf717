"""The evaluation report: ``metrics.nc``, PNG figures, ``report.md`` and a self-contained ``report.html``.

Everything shown is computed from the metrics dataset (:func:`training.pipeline.build_dataset`), so a
reader can redraw any figure from ``metrics.nc``; only the sample rollouts are passed separately.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from data.layouts import split_path
from evaluation import registry

Table = tuple[list[str], list[list[str]]]
TIME_UNITS = "time units"
LENGTH_UNITS = "length units"


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _fmt(x: float, digits: int = 3) -> str:
    """``digits`` significant digits; numbers from 1000 up as plain integers (``4750``, not ``4.75e+03``)."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def _with_ci(ci: xr.DataArray) -> str:
    mean, low, high = (float(ci.sel(stat=s)) for s in ("mean", "low", "high"))
    return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]" if math.isfinite(mean) else "—"


# ----------------------------------------------------------------------------- tables
SAME_AS_REFERENCE = 1e-3
"""A larger-step setting whose predictions differ from the reference's by at most this (relative L2, the
largest over trajectories and frames) gives the reference's result again."""
SAME_COST = 0.75
"""…and if it also takes at least this fraction of the reference's time, it is the same computation."""


def _ok_solvers(ds: xr.Dataset) -> list[str]:
    if "solver_setting" not in ds.coords:
        return []
    return [
        str(s) for s in ds.solver_setting.values if str(ds.solver_status.sel(solver_setting=s).item()) == "ok"
    ]


def trained_models(ds: xr.Dataset) -> list[str]:
    """The trained surrogates (not the untrained and persistence anchors)."""
    return [str(m) for m, kind in zip(ds.model.values, ds.kind.values, strict=True) if kind == "trained"]


def same_as_reference(ds: xr.Dataset) -> dict[str, str]:
    """Larger-step settings whose result is the reference's again, each with a note saying so: a solver
    that splits every step into stability-limited sub-steps (Burgers' CFL-safe sub-steps) computes the
    same thing whatever ``dt`` says — then the cost is the same too."""
    solvers = _ok_solvers(ds)
    if "reference" not in solvers:
        return {}
    reference = ds.sel(solver_setting="reference")
    same = {}
    for setting in solvers:
        s = ds.sel(solver_setting=setting)
        difference = float(s.solver_difference)
        if float(s.solver_dt) <= float(reference.solver_dt) or not difference <= SAME_AS_REFERENCE:
            continue
        cost = float(s.solver_seconds_per_step / reference.solver_seconds_per_step)
        same[setting] = (
            f"same result as the reference (differs by {_fmt(difference, 2)}) at {_fmt(cost, 2)}× its cost"
            + (
                ": the solver splits every step into stability-limited sub-steps, so the larger dt changes nothing"
                if cost >= SAME_COST
                else ""
            )
        )
    return same


def _equal_accuracy(ds: xr.Dataset, model: str) -> tuple[float, str]:
    """Speed-up over the cheapest stable solver setting whose mean correlation time (first threshold)
    is at least the model's, and that setting's label (``nan, ""`` when no setting qualifies)."""
    threshold = ds.threshold.values[0]
    target = float(ds.corr_time.sel(model=model, threshold=threshold).mean())
    best, label = math.inf, ""
    for setting in _ok_solvers(ds):
        reached = float(ds.solver_corr_time.sel(solver_setting=setting, threshold=threshold).mean())
        cost = float(ds.solver_seconds_per_step.sel(solver_setting=setting))
        if reached >= target and cost < best:
            best, label = cost, setting
    if not label:
        return math.nan, ""
    return best / float(ds.seconds_per_step.sel(model=model)), label


def _cost(repeats: xr.DataArray) -> tuple[float, float, float]:
    """Median, fastest and slowest time per step in ms."""
    values = 1e3 * repeats.values[np.isfinite(repeats.values)]
    return float(np.median(values)), float(values.min()), float(values.max())


def _ms(repeats: xr.DataArray) -> str:
    """Median time per step in ms with the fastest and slowest repeat: ``5.21 (5.05–5.60)``."""
    if not np.isfinite(repeats.values).any():
        return "—"
    median, low, high = _cost(repeats)
    return f"{_fmt(median)} ({_fmt(low)}–{_fmt(high)})"


def _speedup(solver: xr.DataArray, model: xr.DataArray) -> str:
    """Ratio of median times, with the range from the extreme repeats: ``0.13× (0.11–0.15)``."""
    s, m = solver.values[np.isfinite(solver.values)], model.values[np.isfinite(model.values)]
    if not s.size or not m.size:
        return "—"
    ratio = float(np.median(s) / np.median(m))
    return f"{_fmt(ratio)}× ({_fmt(s.min() / m.max())}–{_fmt(s.max() / m.min())})"


ANCHOR_NOTE = {"untrained": "— (anchor: untrained)", "persistence": "— (anchor: no model)"}


def summary_table(ds: xr.Dataset, horizons: list[int]) -> Table:
    """The headline: one row per model and anchor with size, correlation times, error at fixed horizons,
    spectrum, blow-ups, cost (median and range over the timed repeats) and speed. Every registered metric
    is in :func:`metric_tables`."""
    steps = [h for h in horizons if 1 <= h <= ds.sizes["time"]]
    corr_time, rel_l2 = registry.by_name("corr_time"), registry.by_name("rel_l2")
    header = ["model", "params"]
    header += [f"{corr_time.label} @{t:g} ({TIME_UNITS})" for t in ds.threshold.values]
    header += [f"{rel_l2.label} @t={float(ds.time[h - 1]):g}" for h in steps]
    header += [f"spectrum err. {b}" for b in ds.band.values]
    header += ["blow-ups", "ms/step (min–max)", "speed-up vs solver", "speed-up at equal accuracy"]
    reference = (
        ds.solver_step_seconds.sel(solver_setting="reference") if "reference" in _ok_solvers(ds) else None
    )
    rows = []
    for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
        m = ds.sel(model=model)
        params = int(m.num_parameters)
        row = [str(model), f"{params:,}" if params else "—"]
        row += [_with_ci(m.corr_time_ci.sel(threshold=t)) for t in ds.threshold.values]
        row += [_with_ci(m.rel_l2_ci.isel(time=h - 1)) for h in steps]
        row += [f"{float(m.spectrum_band_error.sel(band=b).mean()):+.2f}" for b in ds.band.values]
        blown = np.isfinite(m.blowup_time.values)
        row.append(
            f"{int(blown.sum())}/{blown.size}"
            + (f" (first t={m.blowup_time.values[blown].min():g})" if blown.any() else "")
        )
        if kind != "trained":
            rows.append([*row, "—", "—", ANCHOR_NOTE[str(kind)]])
            continue
        speedup, setting = _equal_accuracy(ds, model)
        row += [_ms(m.step_seconds), _speedup(reference, m.step_seconds) if reference is not None else "—"]
        row.append(f"{_fmt(speedup)}× (vs {setting})" if setting else "— (no solver setting is as accurate)")
        rows.append(row)
    return header, rows


def _rows(ds: xr.Dataset) -> list[tuple[str, str, str]]:
    """``(row label, dimension, coordinate)`` of every model, anchor and stable solver setting."""
    rows = [(str(m), "model", str(m)) for m in ds.model.values]
    return rows + [(f"solver {s}", "solver_setting", s) for s in _ok_solvers(ds)]


def _columns(ds: xr.Dataset, metric: registry.Metric) -> list[tuple[str, dict[str, object]]]:
    """``(header, selection)`` of each column of ``metric`` besides time: one per threshold or own label."""
    columns = [("", {})]
    for dim in metric.dims:
        if dim == "time":
            continue
        labels = ds[dim].values
        suffix = (lambda v: f" @{v:g}") if dim == "threshold" else (lambda v: f" {v}")
        columns = [(head + suffix(v), {**sel, dim: v}) for head, sel in columns for v in labels]
    return columns


def _cell(ds: xr.Dataset, metric: registry.Metric, dim: str, row: str, sel: dict, step: int | None) -> str:
    """``metric`` of one row (value and 95% interval), at lead step ``step`` for a per-step metric."""
    name = f"{metric.name}_ci" if dim == "model" else f"solver_{metric.name}_ci"
    if name not in ds:
        return "—"
    ci = ds[name].sel({dim: row, **sel})
    return _with_ci(ci if step is None else ci.isel(time=step - 1))


EVERY_METRIC_NOTE = (
    "Every registered metric (defined in the protocol) for every model, anchor and stable solver setting. "
    "— marks a value that is not defined for the row: a solver setting with a larger step has no output at "
    "lead times between its steps, and an average over the frames up to t needs every frame."
)


def metric_tables(ds: xr.Dataset, horizons: list[int]) -> list[tuple[str, Table]]:
    """Every metric of :mod:`evaluation.registry` for every model, anchor and stable solver setting: one
    table of the metrics without a lead time (correlation times), one per horizon of the per-step ones;
    ``[(title, table)]``."""
    present = [m for m in registry.METRICS if f"{m.name}_ci" in ds]
    timeless = [m for m in present if "time" not in m.dims]
    timed = [m for m in present if "time" in m.dims]
    tables = []
    blocks = [("Over the whole rollout", timeless, None)]
    blocks += [
        (f"At lead time t = {_units(float(ds.time[h - 1]), TIME_UNITS)} ({h} step{'s' * (h != 1)})", timed, h)
        for h in horizons
        if 1 <= h <= ds.sizes["time"]
    ]
    for title, chosen, step in blocks:
        if not chosen:
            continue
        columns = [(metric, head, sel) for metric in chosen for head, sel in _columns(ds, metric)]
        header = ["row", *(f"{m.label}{head}" + (f" ({m.unit})" if m.unit else "") for m, head, _ in columns)]
        rows = [
            [label, *(_cell(ds, m, dim, coord, sel, step) for m, _, sel in columns)]
            for label, dim, coord in _rows(ds)
        ]
        tables.append((title, (header, rows)))
    return tables


def definitions(ds: xr.Dataset) -> list[str]:
    """One line per registered metric in ``ds``: label, name, kind, direction, unit, definition, convention."""
    lines = []
    for m in registry.METRICS:
        if f"{m.name}_ci" not in ds:
            continue
        unit = f", {m.unit}" if m.unit else ", dimensionless"
        lines.append(
            f"{m.label} ({m.name}; {m.kind}; {m.better} is better{unit}): {m.definition}. Convention: {m.convention}."
        )
    return lines


def _training_data(config: Mapping) -> str:
    """Where a model's training data came from: the online stream, a fixed pool of it, or a file."""
    data = config["data"]
    if not str(data["_target_"]).endswith("OnlineDataModule"):
        layout = data.get("format", "pdestream")
        how = "its layout detected from the file" if layout == "auto" else f"{layout} layout"
        return f"offline: windows of the training rows of {split_path(data['paths'], 'train')} ({how})"
    buffer = data.get("buffer") or {}
    pool = data.get("pool_size")
    source = (
        f"a fixed pool of {pool} trajectories from the solver stream, cycled"
        if pool
        else "online: solvers stream new trajectories"
    )
    return (
        f"{source} of {data.get('frames')} frames, PDE parameters drawn {data.get('sampling', 'uniform')}ly, "
        f"into a {buffer.get('policy')} buffer of {buffer.get('capacity')} windows"
    )


def _pde_line(pde: Mapping) -> str:
    """The PDE, its grids (solved, stored), domain, internal step and parameters (ranges as given)."""
    name = str(pde["_target_"]).rsplit(".", 1)[-1]
    n = pde["n"]
    solve = pde.get("n_solve") or n
    skip = {"_target_", "n", "n_solve", "length", "dt", "burn_in", "blowup"}
    others = ", ".join(f"{k} = {v}" for k, v in pde.items() if k not in skip)
    length = pde["length"]
    side = f"{length:g}" if isinstance(length, int | float) else f"{list(length)} (one per trajectory)"
    if "dt" not in pde:  # data described, not solved (pde=external)
        return f"{name} data on a domain of length {side}, {n} points per axis (pde.n); {others}"
    return (
        f"{name} on a periodic domain of length {side}: solved on {solve} points per axis "
        f"(pde.n_solve), stored on {n} (pde.n); internal step {pde['dt']:g}, burn-in {pde.get('burn_in', 0):g} "
        f"{TIME_UNITS} dropped; {others}"
    )


def protocol_card(ds: xr.Dataset) -> tuple[list[str], Table]:
    """What was evaluated, read from the checkpoints' stored run configs: the data (PDE, resolution solved
    and stored, frames, step, test trajectories), and per trained model its class, size, input/target
    frames, training data and training steps. Returns ``(lines, per-model table)``."""
    configs = OmegaConf.to_container(OmegaConf.create(ds.attrs["model_configs"]))
    networks = dict(line.split(": ", 1) for line in ds.attrs["networks"].splitlines())
    first = next(iter(configs.values()))
    lines = [
        f"PDE: {_pde_line(first['pde'])}.",
        f"Test data: {ds.attrs['test_data']}, at the model step Δt = {_units(ds.attrs['dt'], TIME_UNITS)}; "
        + (
            "an operator task: each model maps its input frame(s) to the frame Δt later, no rollout."
            if ds.sizes["time"] == 1
            else f"rollouts of {ds.sizes['time']} steps after the input frames (lead time up to "
            f"{_units(float(ds.time[-1]), TIME_UNITS)})."
        ),
    ]
    header = [
        "model", "network", "params", "input / target frames", "training data", "batch",
        "training steps (max_steps)", "training windows drawn (max_steps × batch, per device)",
    ]  # fmt: skip
    rows = []
    for label, config in configs.items():
        model, trainer = config["model"], config.get("trainer") or {}
        steps, batch = trainer.get("max_steps"), config["data"].get("batch_size")
        params = int(ds.num_parameters.sel(model=label)) if label in ds.model else 0
        seen = f"{steps * batch:,}" if isinstance(steps, int) and isinstance(batch, int) else "—"
        rows.append(
            [
                label,
                f"{networks[label]} (preset {model.get('name', '—')})",
                f"{params:,}" if params else "—",
                f"{model.get('time_history')} / {model.get('time_future')}",
                _training_data(config),
                str(batch),
                str(steps),
                seen,
            ]
        )
    return lines, (header, rows)


def solver_table(ds: xr.Dataset) -> Table:
    """One row per solver setting: grid, step, cost, correlation time, mean error, status."""
    threshold = ds.threshold.values[0]
    header = [
        "solver setting", "n", "dt", "ms/step (min–max)", f"corr. time @{threshold:g} ({TIME_UNITS})",
        "mean nRMSE", "status",
    ]  # fmt: skip
    same = same_as_reference(ds)
    rows = []
    for setting in ds.solver_setting.values:
        s = ds.sel(solver_setting=setting)
        status = str(s.solver_status.item())
        if setting in same:
            status += f"; {same[str(setting)]}"
        rows.append(
            [
                str(setting),
                str(int(s.solver_n)),
                f"{float(s.solver_dt):g}",
                _ms(s.solver_step_seconds),
                _fmt(float(s.solver_corr_time.sel(threshold=threshold).mean())),
                _fmt(float(s.solver_rel_l2.mean())),
                status,
            ]
        )
    return header, rows


def reference_note(ds: xr.Dataset) -> str:
    """What the reference setting's own error against the stored test data means."""
    if "reference" not in _ok_solvers(ds):
        return ""
    error = ds.solver_rel_l2.sel(solver_setting="reference").mean("trajectory").values
    valid = error[np.isfinite(error)]
    first, last = _fmt(float(valid[0]), 2), _fmt(float(valid[-1]), 2)
    text = (
        "The reference setting repeats the solve that made the test data (same grid n and step dt), "
        "restarted from the stored last input frame; its nRMSE against the test data "
        f"({first} after one step, {last} at the horizon) is therefore not a discretisation error. "
    )
    if float(valid[0]) < 1e-4:
        return text + (
            "It is float32 round-off (the stored frame, a different batch and thread count change the order "
            "of operations) grown by the dynamics over the horizon: the floor below which no error is "
            "meaningful."
        )
    return text + (
        "It is larger than round-off: the test data were not made with this checkpoint's solver settings "
        "(another test_path, precision or time step), so the solver rows measure against that difference too."
    )


# ----------------------------------------------------------------------------- the parameter space
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


def _training_law(ds: xr.Dataset, name: str) -> str:
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
                    f"{error.label},\nt = {_units(t, TIME_UNITS)}",
                    {"time": ds.time.values[h - 1]},
                    f"{error.label} at t = {_units(t, TIME_UNITS)} ({h} step{'s' * (h != 1)})",
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
    return "inf (blow-up)" if math.isinf(value) else _fmt(value)


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
                [str(model), _fmt(mean), *cells, _trajectory_params(ds, worst) if worst >= 0 else "—"]
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
    laws = "; ".join(f"{n}: {_training_law(ds, n)}" for n in names)
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


# ----------------------------------------------------------------------------- figures
TIME_LABEL = f"lead time ({TIME_UNITS})"
ANCHOR_STYLE = {"untrained": {"color": "0.45", "ls": ":"}, "persistence": {"color": "k", "ls": "-."}}
FIELD_CMAP = plt.get_cmap("RdBu_r").with_extremes(over="yellow", under="lime")
ERROR_CMAP = plt.get_cmap("PuOr_r")


def save_figure(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _curve(ax: plt.Axes, ds: xr.Dataset, key: str, ylabel: str) -> None:
    time = ds.time.values
    for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
        ci = ds[f"{key}_ci"].sel(model=model)
        if kind != "trained":
            ax.plot(time, ci.sel(stat="mean"), lw=1.2, label=str(model), **ANCHOR_STYLE[str(kind)])
            continue
        line = ax.plot(time, ci.sel(stat="mean"), lw=1.8, label=str(model))[0]
        ax.fill_between(time, ci.sel(stat="low"), ci.sel(stat="high"), color=line.get_color(), alpha=0.25)
    for setting in _ok_solvers(ds):
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
            ax.semilogy(k, pred, lw=1, label=model)
        ax.set_title(f"lead time {float(ds.time[i]):g} {TIME_UNITS}", fontsize=10)
        ax.set_xlabel(f"wavenumber k (periods per domain length {ds.attrs['length']:g})")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("energy E(k), mean over trajectories")
    axes[0, 0].legend(fontsize=7)
    return fig


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


def _log_ticks(ax: plt.Axes, axis: str = "x") -> None:
    """Readable log-scale ticks on ``axis``: 1, 2, 5 per decade as plain numbers, no minor labels."""
    scale = ax.xaxis if axis == "x" else ax.yaxis
    scale.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    scale.set_minor_formatter(NullFormatter())


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


def _value(ds: xr.Dataset, dim: str, name: str, key: str, threshold: float) -> float:
    """Mean correlation time (``key="corr_time"``) or mean nRMSE of a model or solver setting."""
    prefix = "solver_" if dim == "solver_setting" else ""
    values = ds[prefix + key].sel({dim: name})
    return float((values.sel(threshold=threshold) if key == "corr_time" else values).mean())


def figure_cost_accuracy(ds: xr.Dataset) -> plt.Figure:
    """Correlation time and mean nRMSE against wall time per step: solver settings and the surrogates
    (bars: fastest to slowest timed repeat), the anchors' accuracy as horizontal lines. Larger steps that
    give the reference's result again are labelled so."""
    threshold = ds.threshold.values[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    solvers, same = _ok_solvers(ds), same_as_reference(ds)
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
            cost = [_cost(ds.solver_step_seconds.sel(solver_setting=s)) for s in chosen]
            value = [_value(ds, "solver_setting", s, key, threshold) for s in chosen]
            ax.errorbar(
                [c[0] for c in cost], value, xerr=_xerr(cost), fmt="o-", color=color, capsize=2, label=name
            )
            labels += [
                (c[0], v, s + (" (= reference result)" if s in same else ""))
                for c, v, s in zip(cost, value, chosen, strict=True)
                if s != "reference"
            ]
        if "reference" in solvers:
            cost = _cost(ds.solver_step_seconds.sel(solver_setting="reference"))
            value = _value(ds, "solver_setting", "reference", key, threshold)
            if len(solvers) == 1:
                ax.errorbar(
                    [cost[0]], [value], xerr=_xerr([cost]), fmt="o", color="grey", capsize=2, label="solver"
                )
            labels.insert(0, (cost[0], value, "reference"))
        for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
            value = _value(ds, "model", str(model), key, threshold)
            if kind == "trained":
                cost = _cost(ds.step_seconds.sel(model=model))
                ax.errorbar(
                    [cost[0]], [value], xerr=_xerr([cost]), fmt="*", ms=13, capsize=2, label=str(model)
                )
            else:
                ax.axhline(value, lw=1, label=str(model), **ANCHOR_STYLE[str(kind)])
        _log_ticks(ax)
        ax.margins(x=0.08, y=0.1)  # room for the labels of points on the edges
        ax.set_xlabel(f"wall time per rollout step (ms, batch of {ds.attrs['batch_size']})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.canvas.draw()  # the label placement needs the final axis limits
    for ax, labels in labels_of.items():
        _annotate(ax, labels)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=8)
    fig.suptitle(f"Cost vs accuracy on {ds.attrs['timing_device']}", fontsize=10)
    return fig


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
    label = f"training: {_training_law(ds, name)}"
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
                    ax.plot(centres, mean, lw=1.2, label=str(model), **ANCHOR_STYLE[str(kind)])
                    continue
                line = ax.plot(centres, mean, "o-", lw=1.8, ms=3, label=str(model))[0]
                color = line.get_color()
                ax.fill_between(centres, mean - 1.96 * error, mean + 1.96 * error, color=color, alpha=0.2)
                ax.scatter(x, y, s=10, color=color, alpha=0.5, lw=0)
            if log:
                ax.set_xscale("log")
                _log_ticks(ax)
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
                    _log_ticks(ax, axis)
            ax.set_xlabel(parameter_label(ds, first), fontsize=8)
            ax.set_ylabel(parameter_label(ds, second), fontsize=8)
            ax.set_title(str(model), fontsize=9)
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
        save_figure(figure_samples(pred, true, times, label, ds.attrs["length"], channel), path)
        paths[f"Sample rollouts: {label}"] = path
    return paths


# ----------------------------------------------------------------------------- documents
def _md_table(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}"
    "td:first-child,th:first-child,td:last-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
    "pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.8em}"
    ".card{border:1px solid #bbb;background:#fafafa;padding:0.5em 1.5em;margin:1em 0}.card li{margin:0.2em 0}"
)


def _units(value: float, units: str) -> str:
    """``2 time units``, ``1 time unit``."""
    return f"{value:g} {units[:-1] if value == 1 else units}"


def _intro(ds: xr.Dataset) -> list[str]:
    repeats = ds.sizes["repeat"]
    return [
        f"{ds.sizes['trajectory']} test trajectories, rollouts of {ds.sizes['time']} steps of dt = "
        f"{_units(ds.attrs['dt'], TIME_UNITS)} (lead time up to {_units(float(ds.time[-1]), TIME_UNITS)}), on a "
        f"periodic domain of length {_units(ds.attrs['length'], LENGTH_UNITS)}. Times are in the PDE's "
        f"{TIME_UNITS}, lengths in its {LENGTH_UNITS}.",
        "Means over trajectories with 95% percentile-bootstrap confidence intervals in brackets (a per-model "
        "metric: its value, and the interval of its values over resampled sets of trajectories); each metric "
        "is defined in the protocol above. Spectrum error: log10 of predicted over true energy per wavenumber band (0 is exact). "
        "Anchors: each network untrained (freshly initialised weights behind its trained normalisation, the "
        "score training started from) and persistence (the last input frame repeated); a model that does not "
        "beat them has learnt nothing useful.",
        f"Timings: wall clock per rollout step for a batch of {ds.attrs['batch_size']} trajectories on "
        f"{ds.attrs['timing_device']}; median of {repeats} timed runs after {ds.attrs['timing_warmup']} untimed "
        "warm-up run(s), the models and solver settings timed in turns so that a change of machine load hits "
        "all alike; in brackets the fastest and slowest run. Speed-up vs solver: the ratio of medians (range "
        "from the extreme runs). Speed-up at equal accuracy: against the cheapest solver setting whose mean "
        "correlation time is at least the model's.",
    ]


def write_documents(ds: xr.Dataset, figures: Mapping[str, Path], out: Path, horizons: list[int]) -> None:
    """``report.md`` (relative image links) and ``report.html`` (images embedded, no external resources)."""
    summary = summary_table(ds, horizons)
    solvers = solver_table(ds) if "solver_setting" in ds.coords else None
    configs = (
        ("Evaluation config", ds.attrs["evaluation_config"]),
        ("Model configs", ds.attrs["model_configs"]),
    )
    intro = _intro(ds)
    card, card_table = protocol_card(ds)
    tables = metric_tables(ds, horizons)
    tails = tail_tables(ds, horizons)
    parameter = parameter_coverage(ds)
    captions = {PARAMETER_FIGURE: parameter_caption(ds)}
    defined = definitions(ds)
    md = ["# Surrogate evaluation report", "", "## Protocol", "", *(f"- {line}" for line in card), ""]
    md += [_md_table(card_table), "", "Metrics:", "", *(f"- {line}" for line in defined), ""]
    md += [*intro, "", "## Summary", "", _md_table(summary), ""]
    md += ["## Every metric", "", EVERY_METRIC_NOTE, ""]
    md += [f"### {title}\n\n{_md_table(table)}\n" for title, table in tables]
    md += ["## Tail over the test trajectories", "", TAIL_NOTE, "", parameter, ""]
    md += [f"### {title}\n\n{_md_table(table)}\n" for title, table in tails]
    note = reference_note(ds) if solvers else ""
    if solvers:
        md += ["## Classical solver settings", "", _md_table(solvers), "", note, ""]
    elif "solver_note" in ds.attrs:
        md += ["## Classical solver settings", "", ds.attrs["solver_note"], ""]
    md += ["## Figures", ""]
    for caption, path in figures.items():
        md += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
        md += [captions[caption], ""] if caption in captions else []
    md += [f"## {title}\n\n```yaml\n{text}```\n" for title, text in configs]
    (out / "report.md").write_text("\n".join(md))

    items = "".join(f"<li>{html.escape(line)}</li>" for line in card)
    metric_items = "".join(f"<li>{html.escape(line)}</li>" for line in defined)
    parts = [
        '<h1>Surrogate evaluation report</h1><section class="card"><h2>Protocol</h2>'
        f"<ul>{items}</ul>{_html_table(card_table)}<p>Metrics:</p><ul>{metric_items}</ul></section>"
    ]
    parts.append("".join(f"<p>{html.escape(p)}</p>" for p in intro))
    parts.append(f"<h2>Summary</h2>{_html_table(summary)}")
    parts.append(f"<h2>Every metric</h2><p>{html.escape(EVERY_METRIC_NOTE)}</p>")
    parts += [f"<h3>{html.escape(title)}</h3>{_html_table(table)}" for title, table in tables]
    parts.append(
        f"<h2>Tail over the test trajectories</h2><p>{html.escape(TAIL_NOTE)}</p><p>{html.escape(parameter)}</p>"
    )
    parts += [f"<h3>{html.escape(title)}</h3>{_html_table(table)}" for title, table in tails]
    if solvers:
        parts.append(f"<h2>Classical solver settings</h2>{_html_table(solvers)}<p>{html.escape(note)}</p>")
    elif "solver_note" in ds.attrs:
        parts.append(f"<h2>Classical solver settings</h2><p>{html.escape(ds.attrs['solver_note'])}</p>")
    parts.append("<h2>Figures</h2>")
    for caption, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f'<h3>{html.escape(caption)}</h3><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        )
        if caption in captions:
            parts.append(f"<p>{html.escape(captions[caption])}</p>")
    parts += [f"<h2>{title}</h2><pre>{html.escape(text)}</pre>" for title, text in configs]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Surrogate evaluation report</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    (out / "report.html").write_text(page)


def write_report(
    ds: xr.Dataset, samples: Mapping[str, tuple[Tensor | None, Tensor]], out: Path, cfg: DictConfig
) -> dict[str, Path]:
    """Write ``metrics.nc``, the figures, ``report.md`` and ``report.html`` into ``out``; returns the figures."""
    ds.to_netcdf(out / "metrics.nc", engine="h5netcdf")
    figures = draw_figures(ds, samples, out, list(cfg.horizons))
    write_documents(ds, figures, out, list(cfg.horizons))
    return figures
