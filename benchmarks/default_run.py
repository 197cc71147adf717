"""Wall time of the main job as a new user runs it: ``python train.py``, nothing else on the command line but a
fresh run directory and a fresh data cache (so the validation set is generated, as on a first run), and what
that run scores: its validation correlation times and the report of ``python evaluate.py`` on it.

    python -m benchmarks.default_run              # 2 runs; writes benchmarks/results/default_run.txt (wall times)
                                                  # and default_run_scores.txt, default_run_samples.png,
                                                  # default_run_correlation.png (the last run's scores and report)
    python -m benchmarks.default_run --scores-only --overrides threads=2   # 1 run, untimed: the scores alone
    python -m benchmarks.default_run --runs 1 --out /tmp/x.txt --overrides trainer.max_steps=20

The scores are deterministic for a given machine and thread count (``threads=auto`` takes 2 on the 2-core
machine alone); a run whose thread share changes while it trains (other runs starting beside it) is not
bit-exact, so on a shared machine ``--scores-only --overrides threads=2`` gives the figures of the machine
alone, and writes no wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "default_run.txt"
SCORES = RESULTS / "default_run_scores.txt"
# the report's summary columns that are timings (machine-dependent, not scores): left out of the scores file
TIMING_COLUMNS = ("ms/step", "speed-up")


def validation_scores(run: Path) -> list[str]:
    """The run's validation correlation times, as its ``train.log`` and ``best.ckpt`` record them."""
    import torch

    log = (run / "train.log").read_text()
    lines = []
    untrained = re.search(r"untrained model: validation correlation time (\S+)", log)
    if untrained:
        lines.append(f"untrained           {untrained.group(1)}")
    for step, value in re.findall(r"validation at step (\d+) \([^)]*\): val/corr_time (\S+)", log):
        lines.append(f"{'step ' + step:<20}{value}")
    best = run / "checkpoints" / "best.ckpt"
    if best.is_file():
        state = torch.load(best, weights_only=True, map_location="cpu")
        (score,) = (
            v["best_model_score"] for k, v in state["callbacks"].items() if k.startswith("BestCheckpoint")
        )
        lines.append(f"best checkpoint     {float(score):.4g} (step {state['global_step']})")
    return lines


def report_summary(report: Path) -> list[str]:
    """The summary table of ``report.md``, without its timing columns."""
    summary = report.read_text().split("## Summary", 1)[1].split("\n## ", 1)[0]
    section = next(block for block in summary.strip().split("\n\n") if block.startswith("| model"))
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if not any(t in name for t in TIMING_COLUMNS)]
    return ["|" + "|".join(f" {row[i]} " if row[i] != "---" else "---" for i in keep) + "|" for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--overrides", nargs="*", default=[], help="extra train.py overrides (smoke runs)")
    parser.add_argument("--out", type=Path, default=OUT, help="wall times")
    parser.add_argument("--scores", type=Path, default=SCORES, help="scores; figures are written beside it")
    parser.add_argument("--scores-only", action="store_true", help="one untimed run: write the scores alone")
    parser.add_argument("--no-report", action="store_true", help="no evaluate.py, no scores file")
    parser.add_argument(
        "--eval-overrides", nargs="*", default=[], help="extra evaluate.py overrides (smoke runs)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: give at least 1")
    if args.scores_only and args.no_report:
        parser.error("--scores-only with --no-report leaves nothing to write")
    env = {**os.environ, "WANDB_MODE": "offline"}
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1 if args.scores_only else args.runs):
            run = Path(tmp) / f"run{i}"
            command = [sys.executable, "train.py", f"hydra.run.dir={run}", f"data.cache_dir={tmp}/cache{i}"]
            start = time.perf_counter()
            subprocess.run([*command, *args.overrides], cwd=ROOT, env=env, check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        if not args.scores_only:
            minutes, rest = divmod(statistics.median(seconds), 60)
            overrides = "".join(f"{o} " for o in args.overrides)
            text = (
                f"# python train.py {overrides}(fresh run directory and cache), "
                f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, alone\n"
                f"runs (s)        {' '.join(f'{s:.1f}' for s in seconds)}\n"
                f"median          {f'{int(minutes)} min {rest:04.1f} s' if minutes else f'{rest:.1f} s'}\n"
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            print(text, end="")
        if args.no_report:
            return
        report = Path(tmp) / "report"
        evaluate = [sys.executable, "evaluate.py", f"checkpoints=[{run}]", f"hydra.run.dir={report}"]
        evaluate += [f"cache_dir={tmp}/test_cache", "progress=false", *args.eval_overrides]
        subprocess.run(evaluate, cwd=ROOT, env=env, check=True, capture_output=True)
        import torch

        overrides = " ".join(args.overrides)
        text = "\n".join(
            [
                f"# python train.py {overrides}{' ' if overrides else ''}(fresh run directory and cache), then "
                f"python evaluate.py 'checkpoints=[<run>]' {' '.join(args.eval_overrides)}".rstrip(),
                f"# {platform.machine()}, torch {torch.__version__}; deterministic for a machine and thread count",
                "# validation correlation time (val/corr_time: the time the Pearson correlation stays above 0.8,",
                "# mean over the validation trajectories, in time units)",
                *validation_scores(run),
                "",
                "# the report of the best checkpoint (report.md's summary, timing columns left out)",
                *report_summary(report / "report.md"),
                "",
            ]
        )
        args.scores.parent.mkdir(parents=True, exist_ok=True)
        args.scores.write_text(text)
        print(text, end="")
        stem = args.out.stem
        for name, figure in (("samples", next(report.glob("samples_*.png"), None)),
                             ("correlation", report / "correlation_vs_time.png")):  # fmt: skip
            if figure is not None and figure.is_file():
                shutil.copyfile(figure, args.scores.with_name(f"{stem}_{name}.png"))


if __name__ == "__main__":
    main()
