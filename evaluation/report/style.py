"""Shared look of the report's figures: colours, anchor line styles, log ticks, saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from evaluation.report.common import TIME_UNITS

TIME_LABEL = f"lead time ({TIME_UNITS})"
ANCHOR_STYLE = {"untrained": {"color": "0.45", "ls": ":"}, "persistence": {"color": "k", "ls": "-."}}
FIELD_CMAP = plt.get_cmap("RdBu_r").with_extremes(over="yellow", under="lime")
ERROR_CMAP = plt.get_cmap("PuOr_r")


def save_figure(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def log_ticks(ax: plt.Axes, axis: str = "x") -> None:
    """Readable log-scale ticks on ``axis``: 1, 2, 5 per decade as plain numbers, no minor labels."""
    scale = ax.xaxis if axis == "x" else ax.yaxis
    scale.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    scale.set_minor_formatter(NullFormatter())
