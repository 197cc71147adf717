"""Training throughput fed online vs fed from memory: is the online stream ever the bottleneck?

For each configuration, builds the real training run (``training.run.build``, as ``train.py`` does)
and measures samples per second of ``Trainer.fit`` in the stream's steady state, for two data sources:

* **online** — the configured DataModule: solvers generate while the model trains;
* **memory** — the first batches of that stream drawn beforehand and served from a list, over and over.

The stream solves in rounds (``data.solver_batch`` trajectories each) whenever its replay buffer has
served its reuse budget, so a training run alternates a solve and the steps that solve feeds. The first
round, the buffer fill, is fed by many more steps than the rounds after it, so a short run from the start
measures little or no generation. The window timed here therefore runs from the step before the first
round after the fill to the step before the ``cycles + 1``-th: ``--cycles`` whole cycles of solve and
training. The memory source is timed over as many steps, after a warm-up of its own. The ratio
online / memory is the figure of merit (goal: >= 0.9). Validation is switched off. The two sources are
measured alternately ``--repeats`` times and the best rate of each is kept, so a burst of load on a
shared machine does not land on one side only.

Where the time goes, per configuration: the solve of a round (the excess of the step that solved it over the
median step), the median step of each source, and the cores the training process kept busy with each
(CPU seconds of all its threads per wall second). From the last follows the ``bound``: the ratio the online
run would reach if it filled every idle cycle of the machine's cores with its work, which it cannot shrink
(:func:`bound`; only where the stream generates in the training process, whose CPU time is measured).

Usage (from the repository root):
``python -m benchmarks.train [--cycles 2] [--repeats 2] [--device cpu] [--configs 0 2] [--set KEY=VALUE ...]
[--results benchmarks/results/train.txt]``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# set up as train.py sets up a training process: how OpenMP threads wait (read when torch loads) and, when
# run as a script, the allocator keeps freed memory (training.process)
from training.process import keep_freed_memory, openmp_waits

os.environ.update(openmp_waits(os.environ))

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from torch.utils.data import DataLoader

from data.stream import STREAM_KEY
from solvers.threads import live_cpus
from training.run import build

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 100_000
"""Steps an online run may take to reach its rounds (it stops there)."""
MEMORY_BATCHES = 64
"""Distinct batches the memory source serves (cycled: the training step does not depend on their values)."""
MEMORY_WARMUP = 50
"""Steps the memory source takes before its timed steps, as many as the online window holds."""
NAVIER_STOKES = ["pde=navier_stokes"]
CONFIGS: dict[str, list[str]] = {
    "default (KS 256, fno-small)": [],
    "KS, 2 CPU generation workers": ["data.generation=cpu", "data.num_workers=2"],
    "2D (NS 64², fno-small)": NAVIER_STOKES,
    "2D, 2 CPU generation workers": [*NAVIER_STOKES, "data.generation=cpu", "data.num_workers=2"],
}


class Clock(pl.Callback):
    """The end time of every training step and, fed online, the steps whose batch came after a new solver
    round of a shard (a DataLoader worker) that had served batches before: its fill does not count. Stops the
    run at the ``cycles + 1``-th such step, or after step ``last``."""

    def __init__(self, cycles: int | None = None, last: int | None = None) -> None:
        self.cycles, self.last, self.ends, self.starts = cycles, last, [], []
        self.cpu: list[float] = []  # the process's CPU seconds (all its threads) at each step's end
        self.rounds: dict[int, int] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, i: int) -> None:
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if self.last is not None and len(self.ends) > self.last:
            trainer.should_stop = True
        if trainer.datamodule is None:
            return
        for shard, entry in trainer.datamodule.stream_state["shards"].items():
            if self.rounds.get(shard, int(entry["next"])) < int(entry["next"]):
                self.starts.append(len(self.ends) - 1)
            self.rounds[shard] = int(entry["next"])
        if self.cycles is not None and len(self.starts) > self.cycles:
            trainer.should_stop = True

    def rate(self, first: int, last: int, batch_size: int) -> float:
        """Samples per second from the end of step ``first`` to the end of step ``last``."""
        return (last - first) * batch_size / (self.ends[last] - self.ends[first])

    def busy(self, first: int, last: int) -> float:
        """Cores the process kept busy from the end of step ``first`` to the end of step ``last``: its CPU
        seconds (every thread of it, not its DataLoader workers) per wall second."""
        return (self.cpu[last] - self.cpu[first]) / (self.ends[last] - self.ends[first])

    def durations(self, first: int, last: int) -> list[float]:
        """Seconds of steps ``first + 1`` to ``last``, each from the end of the step before."""
        return [b - a for a, b in itertools.pairwise(self.ends[first : last + 1])]


def run(overrides: list[str], cycles: int, repeats: int, device: str, tmp: Path) -> dict[str, float]:
    """Best online and memory rates (samples/s) of one configuration, and the split of the best online run's
    time: ``solve``, the seconds of a round (the mean excess of the steps that fetched a round's first batch
    over the median step), the median step of each source in ms (``online step``, ``memory step``) and the
    cores the training process kept busy (``online busy``, ``memory busy``; :meth:`Clock.busy`).
    Runs write under a new folder of ``tmp``, which keeps the validation-set cache across invocations."""
    tmp.mkdir(parents=True, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix="run-", dir=tmp)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                "trainer=gpu" if device == "cuda" else "trainer=cpu",
                "logger=none",
                "callbacks.progress=null",
                "validate_untrained=false",
                "+trainer.limit_val_batches=0",
                "+trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                f"trainer.max_steps={MAX_STEPS}",
                f"paths.output_dir={fresh}",
                f"data.cache_dir={tmp / 'cache'}",
                f"hydra.run.dir={fresh}",
            ],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    rates = {
        "online": 0.0,
        "memory": 0.0,
        "solve": math.nan,
        "online step": math.nan,
        "memory step": math.nan,
        "online busy": math.nan,
        "memory busy": math.nan,
    }
    batch_size = int(cfg.data.batch_size)
    rates["workers"] = float(cfg.data.num_workers if cfg.data.generation == "cpu" else 0)
    window: tuple[int, int] | None = None
    for source in ("online", "memory") * repeats:
        built = build(cfg)
        if source == "online":
            clock = Clock(cycles)
            built.trainer.callbacks.append(clock)
            built.trainer.fit(built.module, datamodule=built.datamodule)
            if len(clock.starts) <= cycles:
                raise SystemExit(
                    f"only {len(clock.starts)} solver rounds after the fill in {MAX_STEPS} steps"
                )
            window = (clock.starts[0] - 1, clock.starts[cycles] - 1)
        else:
            assert window is not None
            loader = built.datamodule.train_dataloader()
            batches = []
            for batch in loader:
                batches.append({k: v for k, v in batch.items() if k != STREAM_KEY})
                if len(batches) == MEMORY_BATCHES:
                    break
            steps = MEMORY_WARMUP + window[1] - window[0]
            clock = Clock(last=steps)
            built.trainer.callbacks.append(clock)
            repeated = batches * math.ceil((steps + 1) / len(batches))
            built.trainer.fit(built.module, train_dataloaders=DataLoader(repeated, batch_size=None))
        first = window[0] if source == "online" else MEMORY_WARMUP
        last = first + window[1] - window[0]
        rate = clock.rate(first, last, batch_size)
        if rate > rates[source]:
            steps = clock.durations(first, last)
            rates[source], rates[f"{source} step"] = rate, 1e3 * statistics.median(steps)
            rates[f"{source} busy"] = clock.busy(first, last)
            if source == "online":  # the step that solved a round: the one before its first batch's
                # (Lightning fetches a batch ahead) or, without that prefetch, that batch's own
                solving = [
                    max(clock.ends[k - 1] - clock.ends[k - 2], clock.ends[k] - clock.ends[k - 1])
                    for k in clock.starts[1 : cycles + 1]
                ]
                rates["solve"] = statistics.fmean(solving) - statistics.median(steps)
    return rates


def bound(ratio: float, busy: float, cores: int) -> float:
    """The most online / memory could reach if the online run used every idle cycle of ``cores`` cores: it
    kept ``busy`` cores busy at ``ratio`` of the memory rate, and its work per sample cannot shrink, so its rate
    can grow by ``cores / busy`` at most (and not beyond the memory-fed rate, whose steps it also takes)."""
    return min(1.0, ratio * cores / busy)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2, help="solver rounds (and the steps they feed) timed")
    parser.add_argument("--repeats", type=int, default=2, help="alternate measurements per source; best kept")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/pdestream-bench-train"), help="scratch folder")
    parser.add_argument("--results", type=Path, help="also write the table to this file")
    parser.add_argument("--configs", type=int, nargs="*", help="row numbers to run (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides added to every row")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cycles < 1:
        parser.error(f"need --repeats >= 1 and --cycles >= 1, got {args.repeats}, {args.cycles}")
    if unknown := sorted(set(args.configs or []) - set(range(len(CONFIGS)))):
        parser.error(f"--configs {unknown}: no such rows; allowed: 0 to {len(CONFIGS) - 1}")
    cpu = platform.processor() or platform.machine()
    cores = live_cpus()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)
        if args.results is not None:
            args.results.write_text("\n".join(lines) + "\n")

    say(
        f"# training throughput, {args.device} ({cpu}, {cores} cores, {torch.get_num_threads()} threads), "
        f"{args.cycles} solver rounds in steady state, best of {args.repeats}"
    )
    say(
        f"{'configuration':32s} {'online [samples/s]':>20s} {'memory [samples/s]':>20s} {'ratio':>7s}"
        f" {'solve [s/round]':>16s} {'step online/memory [ms]':>24s} {'busy online/memory [cores]':>27s}"
        f" {'bound':>6s}"
    )
    for number, (name, overrides) in enumerate(CONFIGS.items()):
        if args.configs and number not in args.configs:
            continue
        try:
            rates = run(
                [*overrides, *args.set], args.cycles, args.repeats, args.device, args.out / f"config{number}"
            )
        except HydraException as error:  # an override the configuration refuses
            parser.error(f"--set {' '.join(args.set)}: {str(error).splitlines()[0]}")
        ratio = rates["online"] / rates["memory"]
        steps = f"{rates['online step']:.1f}/{rates['memory step']:.1f}"
        busy = f"{rates['online busy']:.2f}/{rates['memory busy']:.2f}"
        # workers' CPU time is not the training process's: no bound from it
        most = f"{bound(ratio, rates['online busy'], cores):.2f}" if not rates["workers"] else "-"
        say(
            f"{name:32s} {rates['online']:20.1f} {rates['memory']:20.1f} {ratio:7.2f}"
            f" {rates['solve']:16.2f} {steps:>24s} {busy:>27s} {most:>6s}"
        )


if __name__ == "__main__":
    keep_freed_memory()
    main()
