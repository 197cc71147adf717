"""Size and generation time of each published data set pdestream regenerates (``conf/dataset/``).

Each preset is generated for a few trajectories (``--sample``, as one solver batch) by the command a user runs,
``python -m data.generate dataset=<name>``, into a temporary folder; the full set's size and time are those of
the sample scaled to its trajectory count (generation is a batch loop, linear in the count).

    python -m benchmarks.datasets        # writes benchmarks/results/datasets.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "datasets.md"
SAMPLES = {"fno_burgers": 64, "fno_ns_1e-3": 16, "fno_ns_1e-5": 16, "lpsda_ks": 64}
"""Trajectories generated per preset (one solver batch each)."""
SPLITS = {"lpsda_ks": ("train", "val", "test")}
"""Presets of one file per split (the others are one file, ``split=train``)."""


def full_config(name: str, split: str) -> tuple[int, str]:
    """The preset's trajectory count and file (for ``split``)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=[f"dataset={name}", f"split={split}"])
    return int(cfg.num_trajectories), str(cfg.path)


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def measure(name: str, sample: int) -> dict:
    splits = SPLITS.get(name, ("train",))
    count, path = sum(full_config(name, s)[0] for s in splits), full_config(name, "train")[1]
    split = "train"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        command = [sys.executable, "-m", "data.generate", f"dataset={name}", f"split={split}",
                   f"num_trajectories={sample}", f"chunk={sample}", f"path={target}", "progress=false"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ})
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    path += f" (and {', '.join(splits[1:])})" if len(splits) > 1 else ""
    return {"name": name, "file": path, "count": count, "sample": sample, "seconds": seconds, "bytes": size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="trajectories per preset (default: SAMPLES)")
    parser.add_argument("--presets", nargs="+", default=list(SAMPLES), choices=list(SAMPLES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = [measure(name, args.sample or SAMPLES[name]) for name in args.presets]
    lines = [
        f"# Published data sets regenerated: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "",
        "| preset | file | trajectories | size | generation (estimate) | measured |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        scale = row["count"] / row["sample"]
        lines.append(
            f"| `dataset={row['name']}` | `{row['file']}` | {row['count']} | {row['bytes'] * scale / 1e9:.2f} GB | "
            f"{duration(row['seconds'] * scale)} | {row['sample']} in {row['seconds']:.1f} s |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
