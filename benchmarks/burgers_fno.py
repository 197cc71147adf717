"""The FNO paper's Burgers benchmark reproduced: the published protocol, then the same network fed online.

Li et al. (ICLR 2021, Section 5.1): the operator u0 ↦ u(·, 1) of Burgers at ν = 0.1, FNO-1D trained for 25,000
steps of 20 on the first 1000 samples of a 2048-sample file solved on 8192 points and tested on its last 100,
at s = 8192 / 2^k points (``conf/experiment/burgers_fno.yaml``). Each setting is a ``python train.py`` run per
seed, scored here on the file's rows with the paper's metric, the relative L2 error ``‖pred − u‖ / ‖u‖``
averaged over samples, of the last checkpoint (the reference script reports the model after its last epoch):

* ``offline-<s>``: the published protocol at resolution s (``experiment=burgers_fno pde.n=<s>``);
* ``online-256``: the same network, recipe and steps, every training sample a fresh draw solved at s = 256 while
  training runs (``experiment=burgers_fno_online``), tested on the same 100 rows;
* ``offline-2pi-<s>``, ``online-2pi-256``: the same on the reference code's data (``pde=burgers_fno_2pi``);
* ``repo-<s>``, ``repo-online-256``: the current reference network (``model=fno-1d-repo``, GELU, no BatchNorm)
  with the current script's halving every 50 epochs; ``repo-pool10000-256``: its stream cycling a fixed pool
  of 10,000 draws, held whole in the buffer.

Every model is scored on the test rows at its own s, the s = 256 models also at 1024 and 8192 (zero-shot
resolution, the paper's claim), and on the 1000 training rows (the train-vs-test gap; for a streamed model
those rows are unseen draws of its training distribution). A predictor that returns each input's mean (the
mean of u is conserved) is scored alongside as the floor any model must beat. Figures are means over seeds with
a 95 % t-interval; the stream's gain over the 1000-sample protocol is paired by seed. Wall times are each run's
``train.py`` process, median over seeds, with ``--jobs`` runs side by side on one thread each.

``python -m benchmarks.burgers_fno [--settings offline-256 offline-2pi-256 online-2pi-256 ...] [--seeds 0 1 2]
[--jobs 2] [--data datasets/burgers_fno.mat] [--data-2pi datasets/burgers_fno_2pi.mat]
[--out benchmarks/results/burgers_fno]`` from the repository root, after ``python -m data.generate
pde=burgers_fno split=train num_trajectories=2048 frames=2 format=fno path=datasets/burgers_fno.mat
dtype=float64`` (and the same with ``pde=burgers_fno_2pi path=datasets/burgers_fno_2pi.mat``). Finished runs
under ``--out`` are reused (re-scored only).
``--quick`` is a smoke run of a minute on a small file it writes itself, under ``<out>/quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from benchmarks.online_vs_offline import command, interval, trained
from data.datamodule import OfflineDataModule
from evaluation.metrics import relative_l2
from evaluation.timing import cpu_name
from training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {256: 0.0149, 512: 0.0158, 1024: 0.0160, 2048: 0.0146, 4096: 0.0142, 8192: 0.0139}
"""FNO relative L2 on Burgers by resolution s (Li et al., ICLR 2021; neuraloperator doc/source/theory_guide/fno.rst)."""
PUBLISHED_LATER = {"ReLU, no BatchNorm": 0.0018, "GELU, no BatchNorm": 0.0007}
"""The authors' later figures for the network without BatchNorm on the same data (Kovachki, Li et al., "Neural
Operator", JMLR 2023: Table 3, s = 256, and Section 6.3's "from 0.0018 to 0.0007" with GELU)."""
ZERO_SHOT = (1024, 8192)
"""Resolutions the s = 256 models are also tested at."""
HELD_OUT = 900
"""Rows 1000-1899, trained on by no model, scored in sets of 100 for the spread of a 100-sample test figure."""
POOL = 10_000
REPO = ["model=fno-1d-repo", "scheduler.step_size=2500"]  # the current fourier_1d.py: halved every 50 epochs
TWO_PI = "pde=burgers_fno_2pi"
STREAM = "experiment=burgers_fno_online"


def _pool(size: int) -> list[str]:
    """A fixed pool of ``size`` streamed draws held whole in the buffer, each used as often as the steps need."""
    uses = 25_000 * 20 // size
    room = OmegaConf.load(
        ROOT / "conf" / "experiment" / "burgers_fno_online.yaml"
    ).data.solver_batch  # one call
    return [f"data.pool_size={size}", f"data.buffer.capacity={size + room}", f"data.buffer.watermark={size}",
            f"data.buffer.max_reuse={uses}"]  # fmt: skip


SETTINGS: dict[str, list[str]] = {
    **{f"offline-{s}": ["experiment=burgers_fno", f"pde.n={s}"] for s in PUBLISHED},
    **{f"offline-2pi-{s}": ["experiment=burgers_fno", TWO_PI, f"pde.n={s}"] for s in PUBLISHED},
    "online-256": [STREAM, "pde.n=256"],
    "online-2pi-256": [STREAM, TWO_PI, "pde.n=256"],
    **{f"repo-{s}": ["experiment=burgers_fno", f"pde.n={s}", *REPO] for s in PUBLISHED},
    "repo-online-256": [STREAM, "pde.n=256", *REPO],
    f"repo-pool{POOL}-256": [STREAM, "pde.n=256", *REPO, *_pool(POOL)],
}
"""``<network>-<data>-<s>``: ``offline`` / ``online`` the paper's network (fno-1d-paper) on the file / the stream,
``repo`` the current reference network (fno-1d-repo); ``2pi`` the data on (0, 2π) with zero-mean starts."""
PAIRS = [
    ("online-2pi-256", "offline-2pi-256"),
    ("repo-online-256", "repo-256"),
    (f"repo-pool{POOL}-256", "repo-256"),
    ("online-256", "offline-256"),
]
"""(streamed, fixed 1000 samples): the gains reported, paired by seed."""
DEFAULT_SETTINGS = ["offline-256", "offline-2pi-256", "online-2pi-256", "repo-256", "repo-online-256"]
QUICK_FILE = {
    "n": 1024,
    "samples": 48,
    "rows": {"train": [0, 24], "val": [24, 32], "test": [-8, None]},
}


def data_file(setting: str, args: argparse.Namespace) -> Path:
    """The file a setting is trained (``offline``) or tested on: the data of its PDE preset."""
    return args.data_2pi if TWO_PI in SETTINGS[setting] else args.data


@dataclass
class Run:
    setting: str
    seed: int
    scores: dict[str, float] = field(default_factory=dict)
    wall_s: float = math.nan

    @property
    def name(self) -> str:
        return f"{self.setting}-seed{self.seed}"

    @property
    def s(self) -> int:
        return int(self.setting.rsplit("-", 1)[1])

    @classmethod
    def parse(cls, name: str) -> Run:
        setting, seed = name.rsplit("-seed", 1)
        return cls(setting, int(seed))


def quick_file(out: Path) -> Path:
    """A small file of the benchmark's distribution (``--quick``), written once."""
    path = out / "test" / "quick.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    overrides = [
        "pde=burgers_fno",
        f"pde.n={QUICK_FILE['n']}",
        "split=train",
        f"num_trajectories={QUICK_FILE['samples']}",
        "frames=2",
        "format=fno",
        f"path={path}",
        "workers=0",
        "progress=false",
    ]
    subprocess.run([sys.executable, "-m", "data.generate", *overrides], cwd=ROOT, check=True)
    return path


class Rows:
    """The files' samples at each resolution, read once per file and resolution (test rows, training rows)."""

    def __init__(self, rows: dict[str, list[int | None]]) -> None:
        self.rows = rows
        self.cache: dict[tuple[Path, int], OfflineDataModule] = {}

    def get(self, pde: dict, path: Path, s: int, split: str) -> dict:
        if (path, s) not in self.cache:
            self.cache[path, s] = OfflineDataModule({**pde, "n": s}, str(path), format="fno", rows=self.rows)
        return self.cache[path, s].trajectories(split)


def predict(module: torch.nn.Module | None, data: dict) -> torch.Tensor:
    """Each sample's prediction of frame 1 from frame 0, ``[N, 1, 1, S]`` (``None``: the input's mean)."""
    u = data["u"]
    x = u[:, :1]
    if module is None:
        return x.mean(dim=-1, keepdim=True).expand_as(x)
    params = {k: v.float() for k, v in data["params"].items()}
    dt = torch.full((len(u),), data["grid"].dt_out)
    with torch.no_grad():
        return torch.cat([
            module(x[i : i + 50], {k: v[i : i + 50] for k, v in params.items()}, dt[i : i + 50])
            for i in range(0, len(u), 50)
        ])  # fmt: skip


def errors(module: torch.nn.Module | None, data: dict) -> np.ndarray:
    """Relative L2 error of each sample's prediction (:func:`predict`)."""
    return relative_l2(predict(module, data), data["u"][:, 1:2])[:, 0].double().numpy()


def figure(runs: Sequence[Run], args: argparse.Namespace, rows: Rows, path: Path) -> None:
    """Per data file: one test sample's u0, u(·, 1) and the s = 256 models' predictions (their first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {}
    for run in runs:
        if run.s == 256 and run.setting not in shown:
            shown[run.setting] = run
    files = list(dict.fromkeys(data_file(setting, args) for setting in shown))
    fig, axes = plt.subplots(1, len(files), figsize=(6 * len(files), 3.8), squeeze=False)
    for ax, file in zip(axes[0], files, strict=True):
        for colour, (setting, run) in enumerate(
            (k, r) for k, r in shown.items() if data_file(k, args) == file
        ):
            module, config = load_checkpoint(args.out / "runs" / run.name / "checkpoints" / "last.ckpt")
            data = rows.get(dict(config["pde"]), file, 256, "test")
            sample = {**data, "u": data["u"][:1], "params": {k: v[:1] for k, v in data["params"].items()}}
            x = np.linspace(0, float(config["pde"]["length"]), 256, endpoint=False)
            if colour == 0:
                ax.plot(x, sample["u"][0, 0, 0], color="0.6", ls="--", label="u0 (input)")
                ax.plot(x, sample["u"][0, 1, 0], color="k", lw=2, label="u(·, 1) (truth)")
            pred = predict(module, sample)
            error = float(relative_l2(pred, sample["u"][:, 1:2])[0, 0])
            ax.plot(x, pred[0, 0, 0], color=f"C{colour}", label=f"{setting} (rel. L2 {error:.2g})")
        ax.set_title(f"{file.name}: test sample 1 (row {int(data['index'][0])})")
        ax.set_xlabel("x")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def execute(run: Run, args: argparse.Namespace, threads: int) -> Run:
    """Train (unless done) and score one run; raises with the log's tail if training fails."""
    run_dir = args.out / "runs" / run.name
    overrides = [
        *SETTINGS[run.setting],
        f"seed={run.seed}",
        "logger=csv",
        f"threads={threads}",
        "validate_untrained=false",
        f"hydra.run.dir={run_dir}",
        *args.extra["all"],
    ]
    if STREAM in SETTINGS[run.setting]:
        overrides += args.extra["online"]
    else:
        overrides += [f"data.paths={data_file(run.setting, args)}", *args.extra["file"]]
    wall_file = run_dir / "wall.json"
    if not trained(run_dir, args.steps):
        env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        done = subprocess.run(
            command("train.py", overrides), cwd=ROOT, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise RuntimeError(f"train.py failed for {run.name} (exit {done.returncode}):\n{tail}")
        wall_file.write_text(json.dumps({"wall_s": time.perf_counter() - start, "threads": threads}))
    run.wall_s = json.loads(wall_file.read_text())["wall_s"] if wall_file.is_file() else math.nan
    return run


def score(run: Run, args: argparse.Namespace, rows: Rows) -> Run:
    """The last checkpoint's mean relative L2 on the test and training rows of its data file."""
    module, config = load_checkpoint(args.out / "runs" / run.name / "checkpoints" / "last.ckpt")
    pde, path = dict(config["pde"]), data_file(run.setting, args)
    run.scores["test"] = float(errors(module, rows.get(pde, path, run.s, "test")).mean())
    run.scores["train"] = float(errors(module, rows.get(pde, path, run.s, "train")).mean())
    run.scores["gap"] = run.scores["test"] - run.scores["train"]
    run.scores["sets_sd"] = spread(errors(module, rows.get(pde, path, run.s, "val")), args.test_rows)
    if run.s == 256:
        for s in args.zero_shot:
            run.scores[f"test@{s}"] = float(errors(module, rows.get(pde, path, s, "test")).mean())
    return run


def spread(held_out: np.ndarray, size: int) -> float:
    """The relative standard deviation of the mean error over disjoint sets of ``size`` held-out samples: how
    much a test figure of ``size`` samples moves with the samples drawn (``nan`` with fewer than two sets)."""
    sets = held_out[: len(held_out) // size * size].reshape(-1, size).mean(axis=1)
    return float(sets.std(ddof=1) / sets.mean()) if len(sets) > 1 else math.nan


def finished(args: argparse.Namespace) -> list[Run]:
    """Every run under ``--out`` that reached the last step (of this or an earlier invocation), by setting."""
    runs = [Run.parse(d.name) for d in sorted((args.out / "runs").glob("*-seed*")) if trained(d, args.steps)]
    with_wall = []
    for run in runs:
        if run.setting in SETTINGS:
            wall = args.out / "runs" / run.name / "wall.json"
            run.wall_s = json.loads(wall.read_text())["wall_s"] if wall.is_file() else math.nan
            with_wall.append(run)
    order = list(SETTINGS)
    return sorted(with_wall, key=lambda r: (order.index(r.setting), r.seed))


def summarise(runs: Sequence[Run]) -> list[dict]:
    """Per setting: every score's mean and 95 % half-width over seeds, the seeds' values, the median wall time."""
    out = []
    for setting in dict.fromkeys(r.setting for r in runs):
        group = [r for r in runs if r.setting == setting]
        row: dict = {"setting": setting, "s": group[0].s, "seeds": [r.seed for r in group]}
        for key in group[0].scores:
            values = [r.scores[key] for r in group]
            row[key], row[f"{key}_ci"] = interval(values)
            row[f"{key}_values"] = values
        row["wall_s"] = statistics.median(r.wall_s for r in group)
        row["published"] = PUBLISHED.get(row["s"]) if setting.startswith("offline") else None
        out.append(row)
    return out


def gains(runs: Sequence[Run]) -> dict[str, dict[str, float]]:
    """``1 − error / error with 1000 samples`` on the test rows, paired by seed, for each pair of :data:`PAIRS`."""
    test = {(r.setting, r.seed): r.scores["test"] for r in runs}
    out = {}
    for streamed, fixed in PAIRS:
        seeds = [seed for (name, seed) in test if name == streamed and (fixed, seed) in test]
        if seeds:
            values = [1 - test[streamed, seed] / test[fixed, seed] for seed in seeds]
            mean, half = interval(values)
            out[f"{streamed} vs {fixed}"] = {"mean": mean, "ci": half, "seeds": len(seeds), "values": values}
    return out


def fmt(row: dict, key: str) -> str:
    if not math.isfinite(row.get(key, math.nan)):
        return "–"
    half = row[f"{key}_ci"]
    return f"{row[key]:.3g}" + (f" ± {half:.2g}" if math.isfinite(half) else "")


def table(rows: Sequence[dict], floor: dict[int, float], zero_shot: Sequence[int]) -> str:
    head = ["setting", "s", "seeds", "test rel. L2", "published", "ratio", "sd of 100-sample sets"]
    head += ["train rel. L2", "gap"]
    head += [f"test at s = {s}" for s in zero_shot] + ["wall (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        published = row["published"]
        ratio = f"{row['test'] / published:.2f}" if published else "–"
        minutes, seconds = divmod(round(row["wall_s"]), 60) if math.isfinite(row["wall_s"]) else (0, 0)
        cells = [
            row["setting"],
            str(row["s"]),
            str(len(row["seeds"])),
            fmt(row, "test"),
            f"{published}" if published else "–",
            ratio,
            f"{row['sets_sd']:.0%}" if math.isfinite(row["sets_sd"]) else "–",
            fmt(row, "train"),
            fmt(row, "gap"),
            *(fmt(row, f"test@{s}") for s in zero_shot),
            f"{minutes} min {seconds:02d} s" if math.isfinite(row["wall_s"]) else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for s, value in sorted(floor.items()):
        lines.append(
            f"| input's mean (u's mean is conserved) | {s} | – | {value:.3g} |" + " – |" * (len(head) - 4)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each gets cores/jobs threads)")
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "burgers_fno.mat")
    parser.add_argument("--data-2pi", type=Path, default=ROOT / "datasets" / "burgers_fno_2pi.mat")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "burgers_fno")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small file, a few steps")
    args = parser.parse_args(argv)
    args.steps, args.zero_shot, args.test_rows, file_rows = (
        25_000,
        ZERO_SHOT,
        100,
        {"val": [1000, 1000 + HELD_OUT]},
    )
    args.extra = {"all": [], "online": [], "file": []}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:  # in a folder of its own: its 6-step runs must not mix with full ones
        args.out = args.out / "quick"
        args.out.mkdir(parents=True, exist_ok=True)
        args.data, args.steps, args.zero_shot, args.test_rows = quick_file(args.out), 6, (QUICK_FILE["n"],), 4
        args.data_2pi = args.data
        args.extra = {
            "all": ["trainer.max_steps=6", "trainer.val_check_interval=3"],
            "online": ["data.num_val_trajectories=4", "data.buffer.watermark=20"],
            "file": [
                f"data.rows.{k}=[{a},{'null' if b is None else b}]"
                for k, (a, b) in QUICK_FILE["rows"].items()
            ],
        }
        file_rows = QUICK_FILE["rows"]
        args.settings = [s for s in args.settings if "pool" not in s and TWO_PI not in SETTINGS[s]]
    needed = {data_file(setting, args) for setting in args.settings}
    if args.jobs < 1 or not all(path.is_file() for path in needed):
        parser.error(f"need --jobs >= 1 and the data files {sorted(map(str, needed))} (see the docstring)")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    start = time.perf_counter()
    planned = [Run(setting, seed) for seed in args.seeds for setting in args.settings]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda r: execute(r, args, threads), planned))
    torch.set_num_threads(os.cpu_count() or 1)
    rows = Rows(file_rows)
    runs = [score(r, args, rows) for r in finished(args)]
    summary = summarise(runs)
    pde = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "pde" / "burgers_fno.yaml"))
    floor = {
        s: float(errors(None, rows.get(pde, args.data, s, "test")).mean())
        for s in sorted({r["s"] for r in summary})
    }
    paired = gains(runs)
    result = {
        "machine": f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs), {args.jobs} runs at once, "
        f"{threads} thread(s) each",
        "steps": args.steps,
        "rows": summary,
        "input_mean_floor": {str(s): v for s, v in floor.items()},
        "gains": paired,
        "seconds": time.perf_counter() - start,
    }
    (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    figure(runs, args, rows, args.out / "samples.png")
    text = [
        f"# FNO Burgers benchmark: {args.steps} steps, {result['machine']}",
        table(summary, floor, args.zero_shot),
        *(
            f"{pair}, paired by seed ({g['seeds']}): test rel. L2 {g['mean']:+.1%}"
            + (f" ± {g['ci']:.1%}" if math.isfinite(g["ci"]) else "")
            + f" lower (each seed: {', '.join(f'{v:+.1%}' for v in g['values'])})"
            for pair, g in paired.items()
        ),
        "Test rel. L2 of each seed:\n"
        + "\n".join(
            f"- {row['setting']}: {', '.join(f'{v:.3g}' for v in row['test_values'])}" for row in summary
        ),
        "Each row's run (seed K; its file: datasets/<pde preset>.mat):\n"
        + "\n".join(
            f"- `{row['setting']}`: `python train.py {' '.join(SETTINGS[row['setting']])} seed=K`"
            for row in summary
        ),
    ]
    (args.out / "summary.md").write_text("\n\n".join(text) + "\n")
    print("\n\n".join(text))


if __name__ == "__main__":
    main()
