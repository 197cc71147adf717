"""What the report concludes from the numbers: anchors beaten or not, timings to trust, the solver setting
of equal accuracy, settings that repeat the reference, and a plain-language verdict per model."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from evaluation.report.common import TIME_UNITS, fmt, ok_solvers, trained_models

SAME_AS_REFERENCE = 1e-3
"""A larger-step setting whose predictions differ from the reference's by at most this (relative L2, the
largest over trajectories and frames) gives the reference's result again."""
SAME_COST = 0.75
"""…and if it also takes at least this fraction of the reference's time, it is the same computation."""


def same_as_reference(ds: xr.Dataset) -> dict[str, str]:
    """Larger-step settings whose result is the reference's again, each with a note saying so: a solver
    that splits every step into stability-limited sub-steps (Burgers' CFL-safe sub-steps) computes the
    same thing whatever ``dt`` says — then the cost is the same too."""
    solvers = ok_solvers(ds)
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
            f"same result as the reference (differs by {fmt(difference, 2)}) at {fmt(cost, 2)}× its cost"
            + (
                ": the solver splits every step into stability-limited sub-steps, so the larger dt changes nothing"
                if cost >= SAME_COST
                else ""
            )
        )
    return same


def equal_accuracy(ds: xr.Dataset, model: str) -> tuple[float, str]:
    """Speed-up over the cheapest stable solver setting whose mean correlation time (first threshold)
    is at least the model's, and that setting's label (``nan, ""`` when no setting qualifies)."""
    threshold = ds.threshold.values[0]
    target = float(ds.corr_time.sel(model=model, threshold=threshold).mean())
    best, label = math.inf, ""
    for setting in ok_solvers(ds):
        reached = float(ds.solver_corr_time.sel(solver_setting=setting, threshold=threshold).mean())
        cost = float(ds.solver_seconds_per_step.sel(solver_setting=setting))
        if reached >= target and cost < best:
            best, label = cost, setting
    if not label:
        return math.nan, ""
    return best / float(ds.seconds_per_step.sel(model=model)), label


# ----------------------------------------------------------------------------- timings to trust
SPREAD_LIMIT = 1.5
"""Timed repeats whose slowest run took more than this many times the fastest are flagged unreliable: the
median of such runs says more about the machine's load than about the computation."""
WARNING = "⚠"


def timing_spread(repeats: xr.DataArray) -> float:
    """Slowest over fastest timed repeat (NaN when nothing was timed)."""
    values = repeats.values[np.isfinite(repeats.values)]
    return float(values.max() / values.min()) if values.size and values.min() > 0 else math.nan


def machine_busy(ds: xr.Dataset) -> str:
    """Why the machine counts as busy during the timings ("" if it did not): the 1-minute load average read
    right after them exceeded the CPU cores the process may use (it counts the evaluation's own threads, so
    above the cores something else competed for them)."""
    load, cores = ds.attrs.get("timing_load"), ds.attrs.get("timing_cores")
    if load is None or cores is None or not float(load) > float(cores):
        return ""
    return f"the machine was busy (load average {float(load):.3g} over {int(cores)} usable cores)"


def timing_problem(ds: xr.Dataset, repeats: xr.DataArray) -> str:
    """Why the timing ``repeats`` of one row are unreliable ("" if they are not): their spread exceeds
    :data:`SPREAD_LIMIT`, or :func:`machine_busy`."""
    reasons = []
    spread = timing_spread(repeats)
    if spread > SPREAD_LIMIT:
        reasons.append(f"slowest run {fmt(spread, 2)}× the fastest")
    busy = machine_busy(ds)
    if busy and math.isfinite(spread):
        reasons.append(busy)
    return "; ".join(reasons)


def timing_rows(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """The timed repeats of every trained model and stable solver setting (``solver <setting>``)."""
    rows = {m: ds.step_seconds.sel(model=m) for m in trained_models(ds)}
    return rows | {f"solver {s}": ds.solver_step_seconds.sel(solver_setting=s) for s in ok_solvers(ds)}


def timing_note(ds: xr.Dataset) -> str:
    """One sentence on the timings that are flagged (empty when every timing is reliable)."""
    if not any(timing_problem(ds, repeats) for repeats in timing_rows(ds).values()):
        return ""
    busy = machine_busy(ds)
    spread = [
        f"{name} ({fmt(timing_spread(repeats), 2)}×)"
        for name, repeats in timing_rows(ds).items()
        if timing_spread(repeats) > SPREAD_LIMIT
    ]
    text = f"{WARNING} Unreliable timings (marked {WARNING}): "
    text += f"{busy}, so every timing is suspect" if busy else ""
    text += "; " if busy and spread else ""
    text += (
        f"slowest over fastest timed run above {SPREAD_LIMIT:g}× for {', '.join(spread)}" if spread else ""
    )
    return text + ". Re-run the evaluation on a quiet machine before quoting costs or speed-ups."


# ----------------------------------------------------------------------------- anchors beaten
def _mean(ds: xr.Dataset, name: str, model: str, **sel: object) -> float:
    return float(ds[name].sel(model=model, **sel).mean(skipna=True)) if name in ds else math.nan


def beats(ds: xr.Dataset, model: str, anchor: str) -> bool:
    """Whether ``model`` is better than ``anchor``: a longer mean correlation time (first threshold), or at an
    equal one (both saturated at the horizon, or both zero) a lower mean nRMSE over the horizon. A dataset
    without these metrics judges nothing (True)."""
    threshold = ds.threshold.values[0] if "threshold" in ds.coords else None
    ours, theirs = (_mean(ds, "corr_time", m, threshold=threshold) for m in (model, anchor))
    if math.isfinite(ours) and math.isfinite(theirs) and not math.isclose(ours, theirs, rel_tol=1e-9):
        return ours > theirs
    ours, theirs = (_mean(ds, "rel_l2", m) for m in (model, anchor))
    return not (math.isfinite(ours) and math.isfinite(theirs)) or ours < theirs


def anchors_of(ds: xr.Dataset, model: str) -> list[str]:
    """The anchors ``model`` is held against: its untrained self and persistence, where the report has them."""
    rows = dict(zip((str(m) for m in ds.model.values), (str(k) for k in ds.kind.values), strict=True))
    return [
        row
        for row, kind in rows.items()
        if kind == "persistence" or (kind == "untrained" and row == f"{model} (untrained)")
    ]


def unbeaten_anchors(ds: xr.Dataset, model: str) -> list[str]:
    """The anchors a trained ``model`` does not beat (:func:`beats`); none for an anchor row itself."""
    if model not in trained_models(ds):
        return []
    return [anchor for anchor in anchors_of(ds, model) if not beats(ds, model, anchor)]


def _anchor_name(anchor: str) -> str:
    return "its untrained self" if anchor.endswith(" (untrained)") else anchor


def shown_label(ds: xr.Dataset, model: str) -> str:
    """A row's label wherever its numbers appear: a model that does not beat an anchor carries the warning
    (``unet-small ⚠ no better than persistence``)."""
    unbeaten = unbeaten_anchors(ds, str(model))
    if not unbeaten:
        return str(model)
    return f"{model} {WARNING} no better than {' or '.join(_anchor_name(a) for a in unbeaten)}"


# ----------------------------------------------------------------------------- the verdict
def mean_score(ds: xr.Dataset, dim: str, row: str, key: str = "corr_time") -> float:
    """Mean correlation time at the first threshold (``key="corr_time"``) or mean nRMSE (``"rel_l2"``) of a
    model (``dim="model"``) or solver setting (``"solver_setting"``) over trajectories and lead times."""
    values = ds[("solver_" if dim == "solver_setting" else "") + key].sel({dim: row})
    return float((values.sel(threshold=ds.threshold.values[0]) if key == "corr_time" else values).mean())


def _anchor_numbers(ds: xr.Dataset, model: str, anchors: list[str]) -> str:
    """``correlation time @0.8: 5.75 vs persistence 4.5 time units; mean nRMSE 0.52 vs 0.71``."""
    threshold = ds.threshold.values[0]
    times = ", ".join(f"{_anchor_name(a)} {fmt(mean_score(ds, 'model', a))}" for a in anchors)
    text = f"correlation time @{threshold:g}: {fmt(mean_score(ds, 'model', model))} vs {times} {TIME_UNITS}"
    if "rel_l2" in ds:
        errors = ", ".join(fmt(_mean(ds, "rel_l2", a), 2) for a in anchors)
        text += f"; mean nRMSE {fmt(_mean(ds, 'rel_l2', model), 2)} vs {errors}"
    return text


def verdict(ds: xr.Dataset, model: str) -> str:
    """A plain-language verdict on one trained model, ``<model>: …``: does it beat its anchors (persistence,
    untrained), how accurate is it next to the classical solver, and what does it cost next to it."""
    anchors, unbeaten = anchors_of(ds, model), unbeaten_anchors(ds, model)
    if unbeaten:
        names = " or ".join(_anchor_name(a) for a in unbeaten)
        sentences = [
            f"{WARNING} {model}: no better than {names} ({_anchor_numbers(ds, model, anchors)}). It has learnt "
            "nothing useful here: its cost and speed-ups mean nothing."
        ]
    elif anchors:
        names = " and ".join(_anchor_name(a) for a in anchors)
        sentences = [f"{model}: beats {names} ({_anchor_numbers(ds, model, anchors)})."]
    else:
        sentences = [
            f"{model}: no anchors were scored (anchors.untrained and anchors.persistence are false)."
        ]
    if "reference" in ok_solvers(ds):
        ours, reference = mean_score(ds, "model", model), mean_score(ds, "solver_setting", "reference")
        speedup, setting = equal_accuracy(ds, model)
        if ours >= reference:
            accuracy = f"as accurate as the reference solver ({fmt(reference)} {TIME_UNITS})"
        elif setting:
            accuracy = (
                f"less accurate than the reference solver ({fmt(reference)} {TIME_UNITS}), as accurate as "
                f"solver {setting}"
            )
        else:
            accuracy = (
                f"less accurate than every stable solver setting (reference {fmt(reference)} {TIME_UNITS})"
            )
        model_ms = ds.step_seconds.sel(model=model)
        solver_ms = ds.solver_step_seconds.sel(solver_setting="reference")
        ratio = float(np.nanmedian(solver_ms.values) / np.nanmedian(model_ms.values))
        cost = f"{fmt(ratio)}× faster" if ratio >= 1 else f"{fmt(1 / ratio)}× slower"
        cost += " than the reference"
        if setting:
            cost += f", {fmt(speedup)}× the speed of solver {setting} at equal accuracy"
        shaky = timing_problem(ds, model_ms) or timing_problem(ds, solver_ms)
        sentences.append(
            f"Against the classical solver: {accuracy}; {cost}"
            + (f" ({WARNING} timings unreliable: {shaky})." if shaky else ".")
        )
    return " ".join(sentences)
