"""What the training loop costs beyond the step itself: Lightning's loop, logging, callbacks, EMA.

Builds the default run (``python train.py``'s configuration: KS, ``fno-small``, its callbacks and logger),
draws ``--steps`` batches from its stream into memory, then trains on those same batches in turns:

* **bare** — a plain loop over the module's own ``training_step`` (loss, per-sample losses), backward,
  gradient clipping as configured, optimizer and scheduler steps: the work a step cannot do without;
* **lightning** — ``Trainer.fit`` of the built run (validation off), every callback of the run active.

The overhead is ``lightning / bare − 1`` per step (goal: at most 10 %), each the median of ``--repeats``
alternating timings after ``--warmup`` steps. ``--profile`` adds where Lightning's time goes, by hook.

    python -m benchmarks.step_overhead                      # writes benchmarks/results/step_overhead.txt
    python -m benchmarks.step_overhead --steps 60 --repeats 1 --out /tmp/x.txt   # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import DataLoader

from data.stream import STREAM_KEY
from training.run import Run, build

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "step_overhead.txt"


class Clock(pl.Callback):
    """Wall time from the end of step ``warmup`` to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
        self.end, self.steps = now, trainer.global_step - self.warmup


def built(tmp: Path, overrides: list[str], steps: int, profile: bool = False) -> Run:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                "validate_untrained=false",
                "+trainer.limit_val_batches=0",
                f"trainer.max_steps={steps}",
                f"paths.output_dir={tmp}",
                f"hydra.run.dir={tmp}",
                *(["+trainer.profiler=simple"] if profile else []),
            ],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    return build(cfg)


def batches(run: Run, steps: int) -> list[dict[str, Any]]:
    out = []
    for batch in run.datamodule.train_dataloader():
        out.append({k: v for k, v in batch.items() if k != STREAM_KEY})
        if len(out) == steps:
            return out
    raise RuntimeError("the stream ended early")


def bare(run: Run, data: list[dict[str, Any]], warmup: int) -> float:
    """Seconds per step of a plain loop over the module's training step."""
    module = run.module
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    clip = run.trainer.gradient_clip_val
    module.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        for i, batch in enumerate(data):
            if i == warmup:
                start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            module.training_step(batch, i)["loss"].backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    return (time.perf_counter() - start) / (len(data) - warmup)


def lightning(run: Run, data: list[dict[str, Any]], warmup: int) -> float:
    clock = Clock(warmup)
    run.trainer.callbacks.append(clock)
    run.trainer.fit(run.module, train_dataloaders=DataLoader(data, batch_size=None, shuffle=False))
    return (clock.end - clock.start) / clock.steps


def hooks(profiler: SimpleProfiler, steps: int, rows: int = 14) -> str:
    """The profiled actions that run every step, by time per step (Lightning's per-hook timings)."""
    per_step = {
        action.split("{")[0]: sum(durations) / steps
        for action, durations in profiler.recorded_durations.items()
        if len(durations) >= steps
    }
    top = sorted(per_step.items(), key=lambda item: -item[1])[:rows]
    return "\n".join(
        ["# per step, by Lightning hook (nested: a hook's time includes those it calls)"]
        + [f"{action:<64}{1e3 * seconds:8.3f} ms" for action, seconds in top]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="train.py overrides (default: the default run)"
    )
    parser.add_argument("--profile", action="store_true", help="add Lightning's per-hook profile of one run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.steps <= args.warmup or args.repeats < 1:
        parser.error(
            f"need --steps > --warmup and --repeats >= 1, got {args.steps}, {args.warmup}, {args.repeats}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = batches(built(root / "draw", args.overrides, args.steps), args.steps)
        times: dict[str, list[float]] = {"bare": [], "lightning": []}
        for i in range(args.repeats):
            for name, measure in (("bare", bare), ("lightning", lightning)):
                torch.manual_seed(0)
                times[name].append(
                    measure(built(root / f"{name}{i}", args.overrides, args.steps), data, args.warmup)
                )
        profile = ""
        if args.profile:
            run = built(root / "profile", args.overrides, args.steps, profile=True)
            lightning(run, data, args.warmup)
            assert isinstance(run.trainer.profiler, SimpleProfiler)
            profile = hooks(run.trainer.profiler, args.steps)
    step = {name: statistics.median(values) for name, values in times.items()}
    overhead = step["lightning"] / step["bare"] - 1
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# step overhead: {' '.join(args.overrides) or 'the default run (KS, fno-small)'}; {cpu}, "
        f"{torch.get_num_threads()} threads; {args.steps - args.warmup} timed steps, median of {args.repeats}",
        f"bare step        {1e3 * step['bare']:8.2f} ms",
        f"lightning step   {1e3 * step['lightning']:8.2f} ms",
        f"overhead         {100 * overhead:8.1f} %",
    ]
    text = "\n".join(lines) + ("\n\n" + profile if profile else "") + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
