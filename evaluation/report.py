"""The evaluation report: ``metrics.nc``, PNG figures, ``report.md`` and a self-contained ``report.html``.

Everything shown is computed from the metrics dataset (:func:`evaluation.pipeline.build_dataset`), so a
reader can redraw any figure from ``metrics.nc``; only the sample rollouts are passed separately.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.ticker import NullFormatter
from omegaconf import DictConfig
from torch import Tensor

Table = tuple[list[str], list[list[str]]]


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _fmt(x: float, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _with_ci(ci: xr.DataArray) -> str:
    mean, low, high = (float(ci.sel(stat=s)) for s in ("mean", "low", "high"))
    return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]" if math.isfinite(mean) else "—"


# ----------------------------------------------------------------------------- tables
def _ok_solvers(ds: xr.Dataset) -> list[str]:
    if "solver_setting" not in ds.coords:
        return []
    return [
        str(s) for s in ds.solver_setting.values if str(ds.solver_status.sel(solver_setting=s).item()) == "ok"
    ]


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


def summary_table(ds: xr.Dataset, horizons: list[int]) -> Table:
    """One row per model: size, correlation times, error at fixed horizons, spectrum, blow-ups, speed."""
    steps = [h for h in horizons if 1 <= h <= ds.sizes["time"]]
    header = ["model", "params"]
    header += [f"corr. time @{t:g}" for t in ds.threshold.values]
    header += [f"nRMSE @t={float(ds.time[h - 1]):g}" for h in steps]
    header += [f"spectrum err. {b}" for b in ds.band.values]
    header += ["blow-ups", "ms/step", "speed-up vs solver", "speed-up at equal accuracy"]
    solvers = _ok_solvers(ds)
    reference = (
        float(ds.solver_seconds_per_step.sel(solver_setting="reference"))
        if "reference" in solvers
        else math.nan
    )
    rows = []
    for model in ds.model.values:
        m = ds.sel(model=model)
        row = [str(model), f"{int(m.num_parameters):,}"]
        row += [_with_ci(m.corr_time_ci.sel(threshold=t)) for t in ds.threshold.values]
        row += [_with_ci(m.rel_l2_ci.isel(time=h - 1)) for h in steps]
        row += [f"{float(m.spectrum_band_error.sel(band=b).mean()):+.2f}" for b in ds.band.values]
        blown = np.isfinite(m.blowup_time.values)
        row.append(
            f"{int(blown.sum())}/{blown.size}"
            + (f" (first t={m.blowup_time.values[blown].min():g})" if blown.any() else "")
        )
        seconds = float(m.seconds_per_step)
        speedup, setting = _equal_accuracy(ds, model)
        row += [_fmt(1e3 * seconds), f"{_fmt(reference / seconds)}×" if math.isfinite(reference) else "—"]
        row.append(f"{_fmt(speedup)}× (vs {setting})" if setting else "— (no solver setting is as accurate)")
        rows.append(row)
    return header, rows


def solver_table(ds: xr.Dataset) -> Table:
    """One row per solver setting: grid, step, cost, correlation time, mean error, status."""
    threshold = ds.threshold.values[0]
    header = ["solver setting", "n", "dt", "ms/step", f"corr. time @{threshold:g}", "mean nRMSE", "status"]
    rows = []
    for setting in ds.solver_setting.values:
        s = ds.sel(solver_setting=setting)
        rows.append(
            [
                str(setting),
                str(int(s.solver_n)),
                f"{float(s.solver_dt):g}",
                _fmt(1e3 * float(s.solver_seconds_per_step)),
                _fmt(float(s.solver_corr_time.sel(threshold=threshold).mean())),
                _fmt(float(s.solver_rel_l2.mean())),
                str(s.solver_status.item()),
            ]
        )
    return header, rows


# ----------------------------------------------------------------------------- figures
def _curve(ax: plt.Axes, ds: xr.Dataset, key: str, ylabel: str) -> None:
    time = ds.time.values
    for model in ds.model.values:
        ci = ds[f"{key}_ci"].sel(model=model)
        line = ax.plot(time, ci.sel(stat="mean"), label=str(model))[0]
        ax.fill_between(time, ci.sel(stat="low"), ci.sel(stat="high"), color=line.get_color(), alpha=0.25)
    for setting in _ok_solvers(ds):
        curve = ds[f"solver_{key}"].sel(solver_setting=setting).mean("trajectory")
        valid = np.isfinite(curve.values)
        ax.plot(time[valid], curve.values[valid], "--", lw=1, label=f"solver {setting}")
    ax.set_xlabel("lead time (PDE time units)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def figure_error(ds: xr.Dataset, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _curve(ax, ds, "rel_l2", "nRMSE (mean over trajectories)")
    ax.set_yscale("log")
    ax.set_title("Relative L2 error vs lead time (band: 95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_correlation(ds: xr.Dataset, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _curve(ax, ds, "corr", "Pearson correlation")
    for t in ds.threshold.values:
        ax.axhline(t, color="grey", ls=":", lw=0.8)
    ax.set_ylim(min(0.0, float(np.nanmin(ds.corr_ci.values))), 1.02)
    ax.set_title("Correlation with the truth vs lead time (band: 95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_spectra(ds: xr.Dataset, path: Path) -> None:
    """Energy spectra averaged over trajectories at the first, middle and last lead time."""
    length = ds.sizes["time"]
    picks = sorted({0, length // 2, length - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 3.8), squeeze=False)
    k = ds.wavenumber.values[1:]
    for ax, i in zip(axes[0], picks, strict=True):
        true = ds.spectrum_true.isel(model=0, time=i).mean("trajectory").values[1:]
        ax.semilogy(k, true, "k", lw=2, label="truth")
        for model in ds.model.values:
            pred = ds.spectrum_pred.sel(model=model).isel(time=i).mean("trajectory").values[1:]
            ax.semilogy(k, pred, lw=1, label=str(model))
        ax.set_title(f"lead time {float(ds.time[i]):g}")
        ax.set_xlabel("wavenumber k (2π / length)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("energy E(k)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_samples(pred: Tensor, true: Tensor, times: np.ndarray, label: str, path: Path) -> None:
    """1D: space-time plots truth / prediction / error per sample; 2D: snapshot rows of the first sample."""
    pred = pred.float().numpy()[:, :, 0]
    true = true[:, : pred.shape[1]].float().numpy()[:, :, 0]
    if pred.ndim == 3:  # [P, T, X]
        fig, axes = plt.subplots(
            len(pred), 3, figsize=(11, 3 * len(pred)), squeeze=False, layout="constrained"
        )
        extent = (0, pred.shape[2], times[-1], times[0])
        for row, (p, t) in enumerate(zip(pred, true, strict=True)):
            _triplet(axes[row], [t, p, p - t], extent, ("x (grid index)", "lead time"))
            axes[row, 0].set_ylabel(f"trajectory {row}\nlead time")
    else:  # [P, T, X, Y]
        cols = sorted({0, len(times) // 4, len(times) // 2, len(times) - 1})
        fig, axes = plt.subplots(
            3, len(cols), figsize=(3.2 * len(cols), 8.4), squeeze=False, layout="constrained"
        )
        vmax = np.nanmax(np.abs(true[0]))
        for j, i in enumerate(cols):
            for row, (name, field) in enumerate(
                (("truth", true[0, i]), ("prediction", pred[0, i]), ("error", pred[0, i] - true[0, i]))
            ):
                ax = axes[row, j]
                im = ax.imshow(field.T, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name}, t={times[i]:g}", fontsize=9)
        fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(f"{label}: sample rollouts (channel 0)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _triplet(axes: np.ndarray, fields: list[np.ndarray], extent: tuple, labels: tuple[str, str]) -> None:
    vmax = float(np.nanmax(np.abs(fields[0]))) or 1.0
    for ax, field, name in zip(axes, fields, ("truth", "prediction", "error"), strict=True):
        im = ax.imshow(field, aspect="auto", extent=extent, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(labels[0])
        plt.colorbar(im, ax=ax)


def figure_cost_accuracy(ds: xr.Dataset, path: Path) -> None:
    """Correlation time and mean nRMSE against wall time per step: solver settings and the surrogates."""
    threshold = ds.threshold.values[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series = (("reference", "n/"), ("reference", "×dt"))
    solvers = _ok_solvers(ds)
    for ax, (key, ylabel) in zip(
        axes,
        (("corr_time", f"correlation time @{threshold:g}"), ("rel_l2", "mean nRMSE over the horizon")),
        strict=True,
    ):
        for first, tag in series:
            chosen = [s for s in solvers if s == first or tag in s]
            if not chosen:
                continue
            cost = [float(ds.solver_seconds_per_step.sel(solver_setting=s)) for s in chosen]
            value = [_solver_value(ds, s, key, threshold) for s in chosen]
            name = "solver: coarser grids" if tag == "n/" else "solver: larger steps"
            ax.plot(cost, value, "o-", color="grey" if tag == "n/" else "tab:brown", label=name)
            for c, v, s in zip(cost, value, chosen, strict=True):
                if tag == "n/" or s != first:  # the reference starts both series: label it once
                    ax.annotate(s, (c, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for model in ds.model.values:
            cost = float(ds.seconds_per_step.sel(model=model))
            if key == "corr_time":
                value = float(ds.corr_time.sel(model=model, threshold=threshold).mean())
            else:
                value = float(ds.rel_l2.sel(model=model).mean())
            ax.plot([cost], [value], "*", ms=13, label=str(model))
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
        if key == "rel_l2":
            ax.set_yscale("log")
        ax.set_xlabel("wall time per rollout step (s, batched)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("Cost vs accuracy: classical solver settings and surrogates")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _solver_value(ds: xr.Dataset, setting: str, key: str, threshold: float) -> float:
    s = ds.sel(solver_setting=setting)
    if key == "corr_time":
        return float(s.solver_corr_time.sel(threshold=threshold).mean())
    return float(s.solver_rel_l2.mean())


def draw_figures(ds: xr.Dataset, samples: Mapping[str, tuple[Tensor, Tensor]], out: Path) -> dict[str, Path]:
    """Every figure of the report, written as PNG into ``out``; returns ``{caption: path}``."""
    figures = {
        "Error vs lead time": (figure_error, out / "error_vs_time.png"),
        "Correlation vs lead time": (figure_correlation, out / "correlation_vs_time.png"),
        "Energy spectra, truth vs prediction": (figure_spectra, out / "spectra.png"),
    }
    if "solver_setting" in ds.coords:
        figures["Cost vs accuracy"] = (figure_cost_accuracy, out / "cost_accuracy.png")
    paths = {}
    for caption, (draw, path) in figures.items():
        draw(ds, path)
        paths[caption] = path
    for label, (pred, true) in samples.items():
        if pred is None:
            continue
        path = out / f"samples_{safe_name(label)}.png"
        figure_samples(pred, true, ds.time.values[: pred.shape[1]], label, path)
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
    "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
    "pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.8em}"
)


def _intro(ds: xr.Dataset) -> list[str]:
    return [
        f"{ds.sizes['trajectory']} test trajectories, rollouts of {ds.sizes['time']} steps of dt={ds.attrs['dt']:g} "
        f"(lead time up to {float(ds.time[-1]):g}).",
        "Means over trajectories with 95% percentile-bootstrap confidence intervals in brackets. The correlation "
        "time is the lead time before the Pearson correlation first drops below the threshold (the horizon if it "
        "never does). Spectrum error: log10 of predicted over true energy per wavenumber band (0 is exact). "
        "Speed-up at equal accuracy: against the cheapest solver setting whose mean correlation time is at least "
        "the model's. Timings are wall-clock per rollout step for one batch.",
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
    md = ["# Surrogate evaluation report", "", *intro, "", "## Summary", "", _md_table(summary), ""]
    if solvers:
        md += ["## Classical solver settings", "", _md_table(solvers), ""]
    md += ["## Figures", ""]
    md += [f"### {caption}\n\n![{caption}]({path.name})\n" for caption, path in figures.items()]
    md += [f"## {title}\n\n```yaml\n{text}```\n" for title, text in configs]
    (out / "report.md").write_text("\n".join(md))

    parts = [f"<h1>Surrogate evaluation report</h1>{''.join(f'<p>{html.escape(p)}</p>' for p in intro)}"]
    parts.append(f"<h2>Summary</h2>{_html_table(summary)}")
    if solvers:
        parts.append(f"<h2>Classical solver settings</h2>{_html_table(solvers)}")
    parts.append("<h2>Figures</h2>")
    for caption, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f'<h3>{html.escape(caption)}</h3><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        )
    parts += [f"<h2>{title}</h2><pre>{html.escape(text)}</pre>" for title, text in configs]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Surrogate evaluation report</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    (out / "report.html").write_text(page)


def log_wandb(ds: xr.Dataset, figures: Mapping[str, Path], cfg: DictConfig) -> None:
    """Log the summary table and figures through the configured ``WandbLogger`` (``conf/logger/wandb.yaml``)."""
    import wandb

    run = hydra.utils.instantiate(cfg.logger).experiment
    header, rows = summary_table(ds, list(cfg.horizons))
    run.log({"summary": wandb.Table(columns=header, data=rows)})
    run.log({safe_name(caption): wandb.Image(str(path)) for caption, path in figures.items()})
    wandb.finish()


def write_report(
    ds: xr.Dataset, samples: Mapping[str, tuple[Tensor | None, Tensor]], out: Path, cfg: DictConfig
) -> None:
    """Write ``metrics.nc``, the figures, ``report.md`` and ``report.html`` into ``out`` (and log to wandb)."""
    ds.to_netcdf(out / "metrics.nc", engine="h5netcdf")
    figures = draw_figures(ds, samples, out)
    write_documents(ds, figures, out, list(cfg.horizons))
    if cfg.get("logger"):
        log_wandb(ds, figures, cfg)
