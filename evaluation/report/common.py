"""What every part of the report shares: number and unit formatting, the rows a dataset holds."""

from __future__ import annotations

import math
import re

import numpy as np
import xarray as xr

from evaluation import registry

Table = tuple[list[str], list[list[str]]]
TIME_UNITS = "time units"
LENGTH_UNITS = "length units"


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def fmt(x: float, digits: int = 3) -> str:
    """``digits`` significant digits; numbers from 1000 up as plain integers (``4750``, not ``4.75e+03``)."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def with_ci(ci: xr.DataArray) -> str:
    mean, low, high = (float(ci.sel(stat=s)) for s in ("mean", "low", "high"))
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]" if math.isfinite(mean) else "—"


def ok_solvers(ds: xr.Dataset) -> list[str]:
    if "solver_setting" not in ds.coords:
        return []
    return [
        str(s) for s in ds.solver_setting.values if str(ds.solver_status.sel(solver_setting=s).item()) == "ok"
    ]


def trained_models(ds: xr.Dataset) -> list[str]:
    """The trained surrogates (not the untrained and persistence anchors)."""
    return [str(m) for m, kind in zip(ds.model.values, ds.kind.values, strict=True) if kind == "trained"]


def timing_ms(repeats: xr.DataArray) -> tuple[float, float, float]:
    """Median, fastest and slowest time per step in ms."""
    values = 1e3 * repeats.values[np.isfinite(repeats.values)]
    return float(np.median(values)), float(values.min()), float(values.max())


def with_units(value: float, units: str) -> str:
    """``2 time units``, ``1 time unit``."""
    return f"{value:g} {units[:-1] if value == 1 else units}"


def ndim_of(ds: xr.Dataset) -> int | None:
    """The number of space dimensions of the test data (``None`` for a dataset that does not record it)."""
    ndim = ds.attrs.get("ndim")
    return None if ndim is None else int(ndim)


def unit_of(ds: xr.Dataset, unit: str) -> str:
    """A metric's unit as shown for this dataset's grid (``length units^d`` with d filled in)."""
    return registry.unit_in(unit, ndim_of(ds))
