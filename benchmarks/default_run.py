"""Wall time of the main job as a new user runs it: ``python train.py``, nothing else on the command line but a
fresh run directory and a fresh data cache (so the validation set is generated, as on a first run).

    python -m benchmarks.default_run              # 2 runs; writes benchmarks/results/default_run.txt
    python -m benchmarks.default_run --runs 1 --out /tmp/x.txt --overrides trainer.max_steps=20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "default_run.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--overrides", nargs="*", default=[], help="extra train.py overrides (smoke runs)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: give at least 1")
    seconds = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "train.py", f"hydra.run.dir={tmp}/run", f"data.cache_dir={tmp}/cache"]
            start = time.perf_counter()
            subprocess.run(
                [*command, *args.overrides],
                cwd=ROOT,
                env={**os.environ, "WANDB_MODE": "offline"},
                check=True,
                capture_output=True,
            )
            seconds.append(time.perf_counter() - start)
    minutes, rest = divmod(statistics.median(seconds), 60)
    text = (
        f"# python train.py {' '.join(args.overrides)}(fresh run directory and cache), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, alone\n"
        f"runs (s)        {' '.join(f'{s:.1f}' for s in seconds)}\n"
        f"median          {int(minutes)} min {rest:04.1f} s\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
