"""The report's tables: summary, every metric, the protocol card and the classical solver settings."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr
from omegaconf import OmegaConf

from data.layouts import split_path
from evaluation import registry
from evaluation.report.common import (
    TIME_UNITS,
    Table,
    fmt,
    ok_solvers,
    timing_ms,
    unit_of,
    with_ci,
    with_units,
)
from evaluation.report.verdicts import WARNING, equal_accuracy, same_as_reference, shown_label, timing_problem


def _flag(ds: xr.Dataset, text: str, *repeats: xr.DataArray) -> str:
    """``text`` marked ⚠ when any of the timings it comes from is unreliable (:func:`timing_problem`)."""
    return f"{text} {WARNING}" if any(timing_problem(ds, r) for r in repeats) else text


def _ms(ds: xr.Dataset, repeats: xr.DataArray) -> str:
    """Median time per step in ms with the fastest and slowest repeat: ``5.21 (5.05–5.60)``, ⚠ if unreliable."""
    if not np.isfinite(repeats.values).any():
        return "—"
    median, low, high = timing_ms(repeats)
    return _flag(ds, f"{fmt(median)} ({fmt(low)}–{fmt(high)})", repeats)


def _speedup(ds: xr.Dataset, solver: xr.DataArray, model: xr.DataArray) -> str:
    """Ratio of median times, with the range from the extreme repeats: ``0.13× (0.11–0.15)``, ⚠ if either
    timing is unreliable."""
    s, m = solver.values[np.isfinite(solver.values)], model.values[np.isfinite(model.values)]
    if not s.size or not m.size:
        return "—"
    ratio = float(np.median(s) / np.median(m))
    return _flag(ds, f"{fmt(ratio)}× ({fmt(s.min() / m.max())}–{fmt(s.max() / m.min())})", solver, model)


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
        ds.solver_step_seconds.sel(solver_setting="reference") if "reference" in ok_solvers(ds) else None
    )
    rows = []
    for model, kind in zip(ds.model.values, ds.kind.values, strict=True):
        m = ds.sel(model=model)
        params = int(m.num_parameters)
        row = [shown_label(ds, model), f"{params:,}" if params else "—"]
        row += [with_ci(m.corr_time_ci.sel(threshold=t)) for t in ds.threshold.values]
        row += [with_ci(m.rel_l2_ci.isel(time=h - 1)) for h in steps]
        row += [f"{float(m.spectrum_band_error.sel(band=b).mean()):+.2f}" for b in ds.band.values]
        blown = np.isfinite(m.blowup_time.values)
        row.append(
            f"{int(blown.sum())}/{blown.size}"
            + (f" (first t={m.blowup_time.values[blown].min():g})" if blown.any() else "")
        )
        if kind != "trained":
            rows.append([*row, "—", "—", ANCHOR_NOTE[str(kind)]])
            continue
        speedup, setting = equal_accuracy(ds, model)
        row += [
            _ms(ds, m.step_seconds),
            _speedup(ds, reference, m.step_seconds) if reference is not None else "—",
        ]
        if setting:
            solver = ds.solver_step_seconds.sel(solver_setting=setting)
            row.append(_flag(ds, f"{fmt(speedup)}× (vs {setting})", solver, m.step_seconds))
        else:
            row.append("— (no solver setting is as accurate)")
        rows.append(row)
    return header, rows


def _rows(ds: xr.Dataset) -> list[tuple[str, str, str]]:
    """``(row label, dimension, coordinate)`` of every model, anchor and stable solver setting."""
    rows = [(shown_label(ds, m), "model", str(m)) for m in ds.model.values]
    return rows + [(f"solver {s}", "solver_setting", s) for s in ok_solvers(ds)]


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
    return with_ci(ci if step is None else ci.isel(time=step - 1))


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
        (
            f"At lead time t = {with_units(float(ds.time[h - 1]), TIME_UNITS)} ({h} step{'s' * (h != 1)})",
            timed,
            h,
        )
        for h in horizons
        if 1 <= h <= ds.sizes["time"]
    ]
    for title, chosen, step in blocks:
        if not chosen:
            continue
        columns = [(metric, head, sel) for metric in chosen for head, sel in _columns(ds, metric)]
        header = [
            "row",
            *(f"{m.label}{head}" + (f" ({unit_of(ds, m.unit)})" if m.unit else "") for m, head, _ in columns),
        ]
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
        unit = f", {unit_of(ds, m.unit)}" if m.unit else ", dimensionless"
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
        f"Test data: {ds.attrs['test_data']}, at the model step Δt = {with_units(ds.attrs['dt'], TIME_UNITS)}; "
        + (
            "an operator task: each model maps its input frame(s) to the frame Δt later, no rollout."
            if ds.sizes["time"] == 1
            else f"rollouts of {ds.sizes['time']} steps after the input frames (lead time up to "
            f"{with_units(float(ds.time[-1]), TIME_UNITS)})."
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
                _ms(ds, s.solver_step_seconds),
                fmt(float(s.solver_corr_time.sel(threshold=threshold).mean())),
                fmt(float(s.solver_rel_l2.mean())),
                status,
            ]
        )
    return header, rows


def reference_note(ds: xr.Dataset) -> str:
    """What the reference setting's own error against the stored test data means."""
    if "reference" not in ok_solvers(ds):
        return ""
    error = ds.solver_rel_l2.sel(solver_setting="reference").mean("trajectory").values
    valid = error[np.isfinite(error)]
    first, last = fmt(float(valid[0]), 2), fmt(float(valid[-1]), 2)
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
