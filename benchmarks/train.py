"""Training throughput fed online vs fed from memory: is the online stream ever the bottleneck?

For each configuration, builds the real training run (``training.run.build``, as ``train.py`` does)
and measures samples per second of ``Trainer.fit`` after a warm-up, for two data sources:

* **online** — the configured DataModule: solvers generate while the model trains;
* **memory** — the same number of batches drawn from that stream beforehand and served from a list.

The ratio online / memory is the figure of merit (goal: >= 0.9). Validation is switched off so only
the training loop is timed. The two sources are measured alternately ``--repeats`` times and the best
rate of each is kept, so a burst of load on a shared machine does not land on one side only.

Usage (from the repository root):
``python -m benchmarks.train [--steps 200] [--warmup 20] [--repeats 2] [--device cpu] [--configs 0 2]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from torch.utils.data import DataLoader

from data.stream import STREAM_KEY
from training.run import build

ROOT = Path(__file__).resolve().parents[1]
NAVIER_STOKES = [
    "pde=navier_stokes",
    "data.solver_batch=8",
    "data.buffer.capacity=2048",
    "data.buffer.watermark=512",
]
CONFIGS: dict[str, list[str]] = {
    "default (KS 256, fno-small)": [],
    "KS, 2 CPU generation workers": ["data.generation=cpu", "data.num_workers=2"],
    "2D (NS 64², fno-small)": NAVIER_STOKES,
    "2D, 2 CPU generation workers": [*NAVIER_STOKES, "data.generation=cpu", "data.num_workers=2"],
}


class Clock(pl.Callback):
    """Wall time and samples between the end of step ``warmup`` and the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.samples, self.start, self.end = warmup, 0, 0.0, 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, i: int) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        elif trainer.global_step > self.warmup:
            self.samples += batch["x"].shape[0]
        self.end = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.samples / (self.end - self.start)


def run(
    overrides: list[str], steps: int, warmup: int, repeats: int, device: str, tmp: Path
) -> dict[str, float]:
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
                f"trainer.max_steps={steps}",
                f"paths.output_dir={tmp}",
                f"data.cache_dir={tmp / 'cache'}",
                f"hydra.run.dir={tmp}",
            ],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    rates = {"online": 0.0, "memory": 0.0}
    for source in ("online", "memory") * repeats:
        built = build(cfg)
        clock = Clock(warmup)
        built.trainer.callbacks.append(clock)
        if source == "online":
            built.trainer.fit(built.module, datamodule=built.datamodule)
        else:
            loader = built.datamodule.train_dataloader()
            batches = []
            for batch in loader:
                batches.append({k: v for k, v in batch.items() if k != STREAM_KEY})
                if len(batches) == steps:
                    break
            memory = DataLoader(batches, batch_size=None, shuffle=False)
            built.trainer.fit(built.module, train_dataloaders=memory)
        rates[source] = max(rates[source], clock.rate)
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="alternate measurements per source; best kept")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/pdestream-bench-train"))
    parser.add_argument("--configs", type=int, nargs="*", help="row numbers to run (default: all)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps <= args.warmup:
        parser.error(
            f"need --repeats >= 1 and --steps > --warmup, got {args.repeats}, {args.steps}, {args.warmup}"
        )
    if unknown := sorted(set(args.configs or []) - set(range(len(CONFIGS)))):
        parser.error(f"--configs {unknown}: no such rows; allowed: 0 to {len(CONFIGS) - 1}")
    cpu = platform.processor() or platform.machine()
    print(
        f"# training throughput, {args.device} ({cpu}, {torch.get_num_threads()} threads), {args.steps} steps, "
        f"best of {args.repeats}"
    )
    print(f"{'configuration':32s} {'online [samples/s]':>20s} {'memory [samples/s]':>20s} {'ratio':>7s}")
    for number, (name, overrides) in enumerate(CONFIGS.items()):
        if args.configs and number not in args.configs:
            continue
        rates = run(
            overrides, args.steps, args.warmup, args.repeats, args.device, args.out / f"config{number}"
        )
        ratio = rates["online"] / rates["memory"]
        print(f"{name:32s} {rates['online']:20.1f} {rates['memory']:20.1f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
