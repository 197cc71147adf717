"""One table across the jobs of a multirun (``python train.py -m …``), written and printed when it ends.

Every training job writes ``results.json`` into its run directory (:func:`write_results`: the monitored
metric's best value, the final metrics, the wall time). :class:`SweepSummary`, a Hydra callback
(``conf/hydra/callbacks/sweep_summary.yaml``), reads them from each job's directory when the sweep ends —
with any launcher, the basic local one included — and writes ``summary.md`` into the sweep directory: one
row per job with the overrides that differ between the jobs, the best monitored value, the wall time and
the run directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from data.cli import write_atomically
from data.progress import duration

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"


def write_results(
    output_dir: str | Path,
    monitor: str | None,
    mode: str,
    best: float | None,
    seconds: float,
    metrics: Mapping,
) -> Path:
    """Write a job's ``results.json``: the ``monitor``ed metric (``mode`` max or min), its ``best`` value (None:
    no validation beat the untrained model), the final ``metrics`` and the wall time ``seconds``."""
    path = Path(output_dir) / RESULTS_FILE
    record = {
        "monitor": monitor,
        "mode": mode,
        "best": best,
        "seconds": seconds,
        "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)},
    }
    write_atomically(path, lambda handle: handle.write(json.dumps(record, indent=1).encode()))
    return path


def _jobs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (those with Hydra's ``.hydra/overrides.yaml``), in job order."""
    found = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _overrides(job: Path) -> dict[str, str]:
    listed = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    return dict(str(o).split("=", 1) for o in listed if "=" in str(o))


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def summarize(sweep_dir: str | Path) -> str:
    """The sweep's summary as a markdown table (see the module docstring)."""
    sweep_dir = Path(sweep_dir)
    jobs = _jobs(sweep_dir)
    overrides = [_overrides(job) for job in jobs]
    keys = sorted({k for o in overrides for k in o})
    differ = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    results: list[dict[str, Any] | None] = []
    for job in jobs:
        path = job / RESULTS_FILE
        results.append(json.loads(path.read_text()) if path.is_file() else None)
    monitors = {r["monitor"] for r in results if r and r.get("monitor")}
    monitor = monitors.pop() if len(monitors) == 1 else "monitored metric"
    scored = [(r["best"], i) for i, r in enumerate(results) if r and r.get("best") is not None]
    mode = next((r.get("mode") for r in results if r), "max")
    best_job = (
        (max if mode == "max" else min)(scored, key=lambda s: s[0])[1] if scored else None
    )  # ties: first
    header = ["job", *differ, f"best {monitor}", "wall time", "run directory"]
    lines = [f"# Sweep {sweep_dir}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (job, chosen, result) in enumerate(zip(jobs, overrides, results, strict=True)):
        if result is None:
            score, took = "no results.json (failed or stopped: see its train.log)", ""
        else:
            score = "none beat the untrained model" if result.get("best") is None else f"{result['best']:.4g}"
            score += " (best)" if i == best_job else ""
            took = duration(result.get("seconds", 0.0))
        cells = [job.name, *(chosen.get(k, "") for k in differ), score, took, str(job)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not differ:
        lines += ["", "The jobs share every override."]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, :func:`summarize` its jobs into ``<sweep dir>/summary.md``
    and print the table."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))  # resolved once: ${now:…} is the sweep's start

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        text = summarize(sweep_dir)
        path = sweep_dir / SUMMARY_FILE
        write_atomically(path, lambda handle: handle.write(text.encode()))
        print(f"\n{text}\nsweep summary: {path}", flush=True)
