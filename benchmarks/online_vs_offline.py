"""Does streamed data beat a fixed data set? Fixed trajectory pools against the online stream, at equal steps.

For each PDE set-up and training seed, the same model is trained with the same batch size, number of
gradient steps, validation and test sets; the only difference is where the training trajectories come
from: a fixed pool of N trajectories (``data.pool_size=N``, cycled for as many epochs as the steps need)
or the unbounded online stream (``data.pool_size=null``). Both go through the same stream, buffer and
normalisation. ``--adaptive relative loss`` adds online runs with ``data.sampling=adaptive`` and that
``data.adaptive.signal`` (``--adaptive`` alone: the default signal, ``relative``).

Every window is served once (``firo`` buffer, ``max_reuse=1``), so that the online stream solves many more
trajectories than the largest pool (printed as ``trajectories``) and the pools are cycled. Each run is
``python train.py`` (validation only at the end, so the scored weights are those after the
last step) followed by ``python evaluate.py`` on one test set shared by every run of a PDE set-up
(``--test-trajectories``, 128 by default, written once by ``python -m data.generate split=test`` from
the set-up's parameter distribution, so that the tail has 16 trajectories per cell); the figures are the test correlation
time (Pearson > 0.8, mean over trajectories) and the relative L2 error (nRMSE) at fixed horizons, as the
mean over seeds with a 95 % t-interval, plus the tail of the error averaged over the first 10 steps (median,
p90, p99 and worst over test trajectories; the worst of 8 equal-count cells of the parameter).

The conditional set-ups (the parameter range is what makes data diversity matter):

* ``ks``: Kuramoto-Sivashinsky, ν ∈ [0.5, 1.5] (PDE-Refiner's conditional KS range), n = 256;
* ``burgers``: Burgers, ν ∈ [1e-3, 5e-2] log-uniform (``conf/pde/burgers.yaml``).

``python -m benchmarks.online_vs_offline [--pdes ks burgers] [--model fno-small] [--pools 32 128 512]
[--seeds 0 1 2] [--steps 3000] [--jobs 2] [--adaptive [relative loss]] [--test-trajectories 128]
[--out benchmarks/results/online_vs_offline]`` (from the repository root). ``--quick`` is a smoke run of
a minute. Runs already trained or evaluated under ``--out`` are reused, so an interrupted comparison
continues and ``--adaptive`` can be added later.

Whether the stream beats the largest pool depends on whether the model can use more diversity than the
pool holds; two variants of the KS comparison test that (docs/figures.md quotes all three):
``--pdes ks --pools 512 --steps 12000`` (the pool cycled 8 times instead of 2) and ``--pdes ks --pools 512
--model fno`` (a 333,249-parameter FNO instead of ``fno-small``'s 30,673, both conditioned on ν and the time step).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from data.sampling import SIGNALS

ROOT = Path(__file__).resolve().parents[1]
SETUPS: dict[str, list[str]] = {
    "ks": ["pde=ks", "pde.nu=[0.5,1.5]"],
    "burgers": ["pde=burgers"],
}
# Every window is served once (firo, max_reuse 1), so that a run consumes many more trajectories than the
# largest pool (about batch_size × steps / windows per trajectory: 1000 at the defaults) and a pool cycles.
BUFFER = ["data.buffer.policy=firo", "data.buffer.max_reuse=1"]
QUICK_PDE, QUICK_FRAMES = ["pde.n=64"], 12
QUICK = [
    *QUICK_PDE,
    f"data.frames={QUICK_FRAMES}",
    "data.num_val_trajectories=4",
    "data.num_test_trajectories=8",
]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass
class Run:
    """One training run and its evaluation."""

    pde: str
    data: str  # "pool 32", …, "online", "adaptive relative", "adaptive loss"
    seed: int
    overrides: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    fresh: bool = False  # trained or evaluated by this invocation (not reused)

    @property
    def name(self) -> str:
        return f"{self.pde}-{self.data.replace(' ', '')}-seed{self.seed}"


def plan(args: argparse.Namespace) -> list[Run]:
    """Every run of the comparison, in an order that interleaves data settings (load lands on all alike)."""
    settings = [(f"pool {n}", [f"data.pool_size={n}"]) for n in args.pools] + [("online", [])]
    for signal in args.adaptive:
        settings.append((f"adaptive {signal}", ["data.sampling=adaptive", f"data.adaptive.signal={signal}"]))
    return [
        Run(pde, label, seed, [*SETUPS[pde], *extra])
        for pde in args.pdes
        for seed in args.seeds
        for label, extra in settings
    ]


def command(script: str, overrides: Sequence[str]) -> list[str]:
    return [sys.executable, str(ROOT / script), *overrides]


def test_set(pde: str, args: argparse.Namespace, out: Path) -> Path:
    """The set-up's shared test file (data.generate writes it, completes a partial one, or finds it complete)."""
    path = out / "test" / f"{pde}-{args.test_trajectories}.h5"
    overrides = [
        *SETUPS[pde],
        *(QUICK_PDE if args.quick else []),
        *([f"frames={QUICK_FRAMES}"] if args.quick else []),  # else the frames of a training trajectory
        "split=test",
        f"num_trajectories={args.test_trajectories}",
        f"path={path}",
        "workers=0",
        "progress=false",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "data.generate", *overrides], cwd=ROOT, check=True)
    return path


def logged(run_dir: Path, column: str) -> list[str]:
    """The values of ``column`` in the rows of the run's last CSV log that have one (none without a log)."""
    logs = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    if not logs:
        return []
    with logs[-1].open() as file:
        return [row[column] for row in csv.DictReader(file) if row.get(column)]


def trained(run_dir: Path, steps: int) -> bool:
    """Whether ``run_dir`` holds a run that reached ``steps`` (the last step of its CSV log)."""
    last = max((int(step) for step in logged(run_dir, "step")), default=-1)
    return (run_dir / "checkpoints" / "last.ckpt").is_file() and last >= steps - 1


def execute(run: Run, args: argparse.Namespace, out: Path, test_path: Path, threads: int) -> Run:
    """Train and evaluate one run (each skipped when done before); raises with the log's tail if one fails."""
    run_dir = out / "runs" / run.name
    eval_dir = out / f"eval-test{args.test_trajectories}" / run.name
    common = [*BUFFER, *(QUICK if args.quick else []), f"model={args.model}"]
    train = [
        *run.overrides,
        *common,
        f"seed={run.seed}",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "validate_untrained=false",
        "logger=csv",
        f"threads={threads}",
        f"hydra.run.dir={run_dir}",
    ]
    evaluate = [
        f"checkpoints=[{run_dir}]",
        f"test_path={test_path}",
        f"horizons=[{','.join(map(str, args.horizons))}]",
        "solver_baseline.enabled=false",
        "anchors.untrained=false",
        "anchors.persistence=false",
        "timing.repeats=1",
        "timing.warmup=0",
        "num_sample_plots=0",
        "progress=false",
        f"hydra.run.dir={eval_dir}",
        f"output_dir={eval_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    jobs = [] if trained(run_dir, args.steps) else [("train.py", train)]
    if jobs or not (eval_dir / "metrics.nc").is_file():
        jobs.append(("evaluate.py", evaluate))
    run.fresh = bool(jobs)
    for script, overrides in jobs:
        done = subprocess.run(command(script, overrides), cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise RuntimeError(f"{script} failed for {run.name} (exit {done.returncode}):\n{tail}")
    run.metrics = score(xr.open_dataset(eval_dir / "metrics.nc", engine="h5netcdf"), args.horizons)
    run.metrics["trajectories"] = trajectories_seen(run_dir)
    return run


def trajectories_seen(run_dir: Path) -> float:
    """Training trajectories the run solved (the last ``stream/trajectories`` of its CSV log)."""
    values = logged(run_dir, "stream/trajectories")
    return float(values[-1]) if values else math.nan


def headline(horizons: Sequence[int]) -> int:
    """The horizon the comparison is judged at: the second one given (10 by default), before a chaotic
    system's error saturates at decorrelation (at 50 steps every KS model is near 1.4)."""
    return sorted(horizons)[min(1, len(horizons) - 1)]


def score(ds: xr.Dataset, horizons: Sequence[int]) -> dict[str, float]:
    """The trained model's test figures: correlation time, nRMSE at the horizons, the error's tail."""
    model = ds.sel(model=ds.model[ds.kind == "trained"][0])
    out = {"corr_time": float(model.corr_time.sel(threshold=0.8).mean())}
    for h in horizons:
        out[f"nrmse@{h}"] = float(model.rel_l2.isel(time=h - 1).mean())
    # tail over test trajectories of the error averaged over the first headline(horizons) steps
    error = model.rel_l2.isel(time=slice(0, headline(horizons))).mean("time").values
    for label, q in (("median", 50), ("p90", 90), ("p99", 99)):
        out[label] = float(np.percentile(error, q))
    out["worst"] = float(error.max())
    params = [name for name in model.coords if str(name).startswith("param_")]
    if params:  # the worst cell of the first varying parameter (8 equal-probability cells of the test set)
        values = model.coords[params[0]].values
        edges = np.quantile(values, np.linspace(0, 1, 9))
        cells = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 7)
        means = {int(c): float(error[cells == c].mean()) for c in np.unique(cells)}
        out["worst_cell"] = max(means.values())
        for c, mean in means.items():  # the error profile over the parameter (the figure's lower row)
            out[f"cell{c}"], out[f"cell{c}_at"] = mean, float(np.median(values[cells == c]))
    return out


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % t-interval half-width (nan for a single value)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), math.nan
    half = T95.get(len(values) - 1, 1.96) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def summarise(runs: Sequence[Run]) -> list[dict[str, str | float]]:
    """Mean and 95 % t-interval half-width over seeds, per (PDE, data setting)."""
    rows = []
    for pde in dict.fromkeys(r.pde for r in runs):
        for data in dict.fromkeys(r.data for r in runs if r.pde == pde):
            group = [r.metrics for r in runs if r.pde == pde and r.data == data]
            row: dict[str, str | float] = {"pde": pde, "data": data, "seeds": float(len(group))}
            for key in group[0]:
                row[key], row[f"{key}_ci"] = interval([g[key] for g in group])
            rows.append(row)
    return rows


def table(rows: Sequence[dict[str, str | float]], horizons: Sequence[int]) -> str:
    keys = ["corr_time", *(f"nrmse@{h}" for h in horizons), "p99", "worst", "worst_cell", "trajectories"]
    keys = [k for k in keys if k in rows[0]]
    lines = ["| pde | data | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for row in rows:
        cells = [f"{row[k]:.4g} ± {row[f'{k}_ci']:.2g}" for k in keys]
        lines.append(f"| {row['pde']} | {row['data']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(runs: Sequence[Run], horizons: Sequence[int]) -> list[str]:
    """The headline ratios, paired by seed (same initialisation, same test set), as the mean gain over seeds
    with its 95 % t-interval: online vs each pool (and how often the pool is cycled), adaptive vs uniform."""
    lines = []
    key = f"nrmse@{headline(horizons)}"

    def gain(better: str, than: str, pde: str, metric: str) -> str:
        mine = {(r.data, r.seed): r.metrics for r in runs if r.pde == pde}
        seeds = [s for (d, s) in mine if d == better and (than, s) in mine]
        mean, half = interval([1 - mine[(better, s)][metric] / mine[(than, s)][metric] for s in seeds])
        return f"{metric} {mean:+.1%} ± {half:.1%} lower"

    for pde in dict.fromkeys(r.pde for r in runs):
        settings = list(dict.fromkeys(r.data for r in runs if r.pde == pde))
        if "online" not in settings:
            continue
        online = [
            r.metrics.get("trajectories", math.nan) for r in runs if r.pde == pde and r.data == "online"
        ]
        pools = sorted((d for d in settings if d.startswith("pool")), key=lambda d: int(d.split()[1]))
        for name in pools:
            cycles = float(np.mean(online)) / int(name.split()[1])
            goal = " (goal against the largest pool: >= 16 % lower)" if name == pools[-1] else ""
            lines.append(
                f"{pde}: online vs {name} (each of its trajectories used {cycles:.1f}x as often): "
                f"{gain('online', name, pde, key)}{goal}"
            )
        for name in (d for d in settings if d.startswith("adaptive")):
            for tail in ("worst_cell", "p99"):
                lines.append(
                    f"{pde}: {name} vs uniform online: {gain(name, 'online', pde, tail)} (goal: >= 20 %)"
                )
            lines.append(
                f"{pde}: {name} vs uniform online: mean {gain(name, 'online', pde, key)} (goal: not worse)"
            )
    return lines


def figure(rows: Sequence[dict[str, str | float]], horizons: Sequence[int], path: Path) -> None:
    """Per PDE: test error against pool size, the streams as horizontal lines with their bands (top), and
    the error over the varying parameter's 8 test cells for the streams and the largest pool (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"nrmse@{headline(horizons)}"
    pdes = list(dict.fromkeys(str(r["pde"]) for r in rows))
    profiled = "cell0" in rows[0]
    fig, axes = plt.subplots(
        1 + profiled, len(pdes), figsize=(5.5 * len(pdes), 3.8 * (1 + profiled)), squeeze=False
    )
    for column, pde in enumerate(pdes):
        ax = axes[0, column]
        mine = [r for r in rows if r["pde"] == pde]
        pools = [r for r in mine if str(r["data"]).startswith("pool")]
        streams = [r for r in mine if not str(r["data"]).startswith("pool")]
        sizes = [int(str(r["data"]).split()[1]) for r in pools]
        ax.errorbar(
            sizes,
            [r[key] for r in pools],
            yerr=[r[f"{key}_ci"] for r in pools],
            marker="o",
            capsize=3,
            label="fixed pool of N trajectories",
        )
        for colour, r in enumerate(streams, start=1):
            mean, half = float(r[key]), float(r[f"{key}_ci"])
            ax.axhline(mean, color=f"C{colour}", label=f"{r['data']} stream")
            if math.isfinite(half):
                ax.axhspan(mean - half, mean + half, color=f"C{colour}", alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training trajectories N (pool size)")
        ax.set_ylabel(f"test relative L2 at step {headline(horizons)}")
        ax.set_title(f"{pde}: equal gradient steps")
        ax.legend(fontsize=8)
        if not profiled:
            continue
        ax = axes[1, column]
        cells = sorted(int(k[4:]) for k in mine[0] if k.startswith("cell") and not k.endswith(("_at", "_ci")))
        for colour, r in [(0, pools[-1])] * bool(pools) + list(enumerate(streams, start=1)):
            at = [float(r[f"cell{c}_at"]) for c in cells]
            mean = np.array([float(r[f"cell{c}"]) for c in cells])
            half = np.array([float(r[f"cell{c}_ci"]) for c in cells])
            ax.plot(at, mean, marker="o", color=f"C{colour}", label=str(r["data"]))
            if np.isfinite(half).all():
                ax.fill_between(at, mean - half, mean + half, color=f"C{colour}", alpha=0.15)
        if at and at[-1] > 10 * at[0] > 0:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no overlaps
        ax.set_xlabel("PDE parameter (median of each of 8 equal-count test cells)")
        ax.set_ylabel(f"test relative L2, mean of steps 1-{headline(horizons)}")
        ax.set_title(f"{pde}: error over the parameter")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdes", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--model", default="fno-small")
    parser.add_argument("--pools", nargs="+", type=int, default=[32, 128, 512])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--horizons", nargs="+", type=int, default=[1, 10, 50])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each gets cores/jobs threads)")
    parser.add_argument(
        "--adaptive",
        nargs="*",
        choices=SIGNALS,
        default=None,
        help="add online runs with data.sampling=adaptive, one per data.adaptive.signal given (none: relative)",
    )
    parser.add_argument("--test-trajectories", type=int, default=128, help="the shared test set's size")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (coarse grid, short rollouts)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "online_vs_offline")
    args = parser.parse_args(argv)
    args.adaptive = [] if args.adaptive is None else (args.adaptive or ["relative"])
    if args.quick:
        args.pools, args.seeds, args.steps, args.horizons = args.pools[:1], args.seeds[:2], 4, [1, 4]
    if min(args.pools) < 1 or min(args.steps, args.jobs, args.test_trajectories) < 1:
        parser.error("--pools, --steps, --jobs and --test-trajectories must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = plan(args)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    start = time.perf_counter()
    tests = {pde: test_set(pde, args, args.out) for pde in args.pdes}
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda r: execute(r, args, args.out, tests[r.pde], threads), runs))
    rows = summarise(runs)
    text = [
        f"# online vs fixed pools: {args.model}, {args.steps} steps, seeds {args.seeds}, "
        f"{args.test_trajectories} test trajectories, "
        f"{platform.machine()} {os.cpu_count()} CPUs, {args.jobs} runs at once; {sum(r.fresh for r in runs)} of "
        f"{len(runs)} runs trained or evaluated by this invocation in {time.perf_counter() - start:.0f} s",
        table(rows, args.horizons),
        *compare(runs, args.horizons),
    ]
    (args.out / "summary.md").write_text("\n\n".join(text) + "\n")
    figure(rows, args.horizons, args.out / "error_vs_pool.png")
    print("\n\n".join(text))


if __name__ == "__main__":
    main()
