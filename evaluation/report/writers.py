"""The documents: ``report.md`` (relative image links) and a self-contained ``report.html``; ``write_report``."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path

import xarray as xr
from omegaconf import DictConfig
from torch import Tensor

from evaluation.report.common import LENGTH_UNITS, TIME_UNITS, Table, trained_models, unit_of, with_units
from evaluation.report.figures import draw_figures
from evaluation.report.parameter_space import (
    PARAMETER_FIGURE,
    TAIL_NOTE,
    parameter_caption,
    parameter_coverage,
    tail_tables,
)
from evaluation.report.tables import (
    EVERY_METRIC_NOTE,
    definitions,
    metric_tables,
    protocol_card,
    reference_note,
    solver_table,
    summary_table,
)
from evaluation.report.verdicts import SPREAD_LIMIT, WARNING, timing_note, verdict

Block = tuple[str, object]
"""One piece of a document, written alike to Markdown and HTML: ``("h1" | "h2" | "h3", text)``, ``("p", text)``,
``("items", [lines])``, ``("verdicts", [lines])``, ``("table", Table)``, ``("image", (caption, path))``,
``("code", text)``."""


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


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown, images linked by file name (beside ``report.md``)."""
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {content}")
        elif kind == "p":
            out.append(str(content))
        elif kind in ("items", "verdicts"):
            out.append("\n".join(f"- {line}" for line in content))
        elif kind == "table":
            out.append(_md_table(content))
        elif kind == "image":
            caption, path = content
            out.append(f"![{caption}]({path.name})")
        elif kind == "code":
            out.append(f"```yaml\n{content}```")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (images embedded as base64, no external resources)."""
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "items":
            out.append(f"<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in content)}</ul>")
        elif kind == "verdicts":  # "<model>: …" with the model in bold
            lines = (line.partition(": ") for line in content)
            items = "".join(f"<li><b>{html.escape(a)}</b>: {html.escape(c)}</li>" for a, _, c in lines)
            out.append(f'<ul class="verdicts">{items}</ul>')
        elif kind == "table":
            out.append(_html_table(content))
        elif kind == "image":
            caption, path = content
            data = base64.b64encode(path.read_bytes()).decode()
            out.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">')
        elif kind == "code":
            out.append(f"<pre>{html.escape(str(content))}</pre>")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(out)}</body></html>"
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}"
    "td:first-child,th:first-child,td:last-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
    "pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.8em}"
    ".verdicts{border:1px solid #bbb;background:#fafafa;padding:0.5em 1.5em 0.5em 2.5em;margin:1em 0}"
    ".verdicts li{margin:0.3em 0}"
)
TITLE = "Surrogate evaluation report"


def _scope(ds: xr.Dataset) -> str:
    """What was evaluated, in one sentence."""
    return (
        f"{ds.sizes['trajectory']} test trajectories, rollouts of {ds.sizes['time']} steps of dt = "
        f"{with_units(ds.attrs['dt'], TIME_UNITS)} (lead time up to {with_units(float(ds.time[-1]), TIME_UNITS)}), "
        f"on a periodic domain of length {with_units(ds.attrs['length'], LENGTH_UNITS)}. Times are in the PDE's "
        f"{TIME_UNITS}, lengths in its {LENGTH_UNITS}."
    )


def _reading(ds: xr.Dataset) -> list[str]:
    """How to read the summary table: intervals, anchors, timings and what flags them."""
    repeats = ds.sizes["repeat"]
    return [
        "Means over trajectories with 95% percentile-bootstrap confidence intervals in brackets (a per-model "
        "metric: its value, and the interval of its values over resampled sets of trajectories); each metric "
        "is defined in the protocol below. Spectrum error: log10 of predicted over true energy per wavenumber "
        "band (0 is exact).",
        "Anchors: each network untrained (freshly initialised weights behind its trained normalisation, the "
        "score training started from) and persistence (the last input frame repeated); a model that does not "
        f"beat them has learnt nothing useful and is marked {WARNING} wherever it appears (it beats an anchor "
        "with a longer mean correlation time at the first threshold, or at an equal one a lower mean nRMSE).",
        f"Timings: wall clock per rollout step for a batch of {ds.attrs['batch_size']} trajectories on "
        f"{ds.attrs['timing_device']}; median of {repeats} timed runs after {ds.attrs['timing_warmup']} untimed "
        "warm-up run(s), the models and solver settings timed in turns so that a change of machine load hits "
        "all alike; in brackets the fastest and slowest run. Speed-up vs solver: the ratio of medians (range "
        "from the extreme runs). Speed-up at equal accuracy: against the cheapest solver setting whose mean "
        f"correlation time is at least the model's. {WARNING} marks an unreliable timing: its slowest run took "
        f"more than {SPREAD_LIMIT:g}× its fastest, or the machine was busy (the 1-minute load average after the "
        "timings above the CPU cores the evaluation may use).",
    ]


def document(ds: xr.Dataset, figures: Mapping[str, Path], horizons: list[int]) -> list[Block]:
    """The report, answer first: the verdicts and the summary table, then the protocol and the metric
    definitions, every metric, the tails, the solver settings, the figures and the configs."""
    card, card_table = protocol_card(ds)
    blocks: list[Block] = [("h1", TITLE), ("h2", "Summary"), ("p", _scope(ds))]
    blocks.append(("verdicts", [verdict(ds, model) for model in trained_models(ds)]))
    if note := timing_note(ds):
        blocks.append(("p", note))
    blocks.append(("table", summary_table(ds, horizons)))
    blocks += [("p", line) for line in _reading(ds)]
    blocks += [("h2", "Protocol"), ("items", card), ("table", card_table)]
    blocks += [("p", "Metrics:"), ("items", definitions(ds))]
    blocks += [("h2", "Every metric"), ("p", EVERY_METRIC_NOTE)]
    for title, table in metric_tables(ds, horizons):
        blocks += [("h3", title), ("table", table)]
    blocks += [("h2", "Tail over the test trajectories"), ("p", TAIL_NOTE), ("p", parameter_coverage(ds))]
    for title, table in tail_tables(ds, horizons):
        blocks += [("h3", title), ("table", table)]
    if "solver_setting" in ds.coords:
        blocks += [
            ("h2", "Classical solver settings"),
            ("table", solver_table(ds)),
            ("p", reference_note(ds)),
        ]
    elif "solver_note" in ds.attrs:
        blocks += [("h2", "Classical solver settings"), ("p", ds.attrs["solver_note"])]
    blocks.append(("h2", "Figures"))
    captions = {PARAMETER_FIGURE: parameter_caption(ds)}
    for caption, path in figures.items():
        blocks += [("h3", caption), ("image", (caption, path))]
        blocks += [("p", captions[caption])] if caption in captions else []
    for title, name in (("Evaluation config", "evaluation_config"), ("Model configs", "model_configs")):
        blocks += [("h2", title), ("code", ds.attrs[name])]
    return [(kind, content) for kind, content in blocks if content != ""]


def write_documents(ds: xr.Dataset, figures: Mapping[str, Path], out: Path, horizons: list[int]) -> None:
    """``report.md`` (relative image links) and ``report.html`` (images embedded, no external resources)."""
    blocks = document(ds, figures, horizons)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, TITLE))


def with_shown_units(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every variable's ``unit`` attribute written for its grid (``length units^d`` → ``length
    units²`` in 2D), as ``metrics.nc`` stores it."""
    ds = ds.copy()
    for variable in ds.data_vars.values():
        if "unit" in variable.attrs:
            variable.attrs["unit"] = unit_of(ds, variable.attrs["unit"])
    return ds


def write_report(
    ds: xr.Dataset, samples: Mapping[str, tuple[Tensor | None, Tensor]], out: Path, cfg: DictConfig
) -> dict[str, Path]:
    """Write ``metrics.nc``, the figures, ``report.md`` and ``report.html`` into ``out``; returns the figures."""
    ds = with_shown_units(ds)
    ds.to_netcdf(out / "metrics.nc", engine="h5netcdf")
    figures = draw_figures(ds, samples, out, list(cfg.horizons))
    write_documents(ds, figures, out, list(cfg.horizons))
    return figures
