"""One training step of the FNO papers' networks: pdestream against the reference code and neuraloperator 2.0.

A step is forward, backward and Adam (lr 1e-3, weight decay 1e-4) at batch 20 with the FNO scripts' loss (the
per-sample relative L2, summed over the batch), on the CPU at ``--threads`` threads, each code base with its own
Adam: pdestream's from ``conf/optimizer/adam.yaml`` (``foreach: true``, one vectorised update), the others
``torch.optim.Adam`` as their scripts call it (the per-parameter loop that is PyTorch's default on the CPU).
Networks, at the same modes, width and depth:

* **pdestream** — ``models.fno.FNO`` as the presets build it: ``fno-1d-repo`` (1D, modes 16, width 64) and
  ``fno-2d-paper`` (2D, modes 12, width 20, ten input frames);
* **compiled** — the same network under ``torch.compile`` (``compile=true``; inductor, C++ on the CPU), its
  compilation in the 3 untimed warm-up steps, whose time the last column gives (``warm-up s``);
* **reference** — the reference code's network rebuilt to its layer order (:mod:`benchmarks.fno_reference`),
  holding pdestream's weights (the two compute the same function: ``tests/test_benchmarks.py``);
* **neuraloperator** — ``neuralop.models.FNO`` 2.0 with the same modes (counted its way), width, grid
  coordinates, one linear lifting layer, a 128-channel projection and linear skips (``pip install
  neuraloperator``; skipped with a note when absent).

Each (case, network) runs in its own process (peak memory: growth of the maximum resident set from the network
and its batch built to the last step: activations, gradients, optimizer state, work buffers), the networks in turns, ``--rounds`` times; the figure is the median over rounds of each run's median
step. Ratios > 1: pdestream is faster.

    python -m benchmarks.fno_step                 # writes benchmarks/results/fno_step.txt
    python -m benchmarks.fno_step --steps 5 --rounds 1 --out /tmp/x.txt   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.fno_reference import ReferenceFNO, load_from, neuraloperator_fno
from benchmarks.models import in_subprocess
from training import presets

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "fno_step.txt"
BATCH = 20
CASES = {  # label: (preset, ndim, grid, input frames)
    "1D s=256": ("fno-1d-repo", 1, 256, 1),
    "1D s=1024": ("fno-1d-repo", 1, 1024, 1),
    "2D 64x64": ("fno-2d-paper", 2, 64, 10),
}
NETWORKS = ("pdestream", "compiled", "reference", "neuraloperator")
"""``compiled``: pdestream's network under ``torch.compile`` (what ``compile=true`` does to a run's network)."""


def pdestream_net(preset: str, ndim: int, frames: int) -> torch.nn.Module:
    return presets.build(preset, ndim=ndim, channels=1, time_history=frames, time_future=1)


def build(network: str, case: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The network and a batch ``(x, y)`` in its own layout (pdestream ``[B, T, C, *S]``, the others
    channels last)."""
    preset, ndim, n, frames = CASES[case]
    torch.manual_seed(0)
    ours = pdestream_net(preset, ndim, frames)
    x = torch.randn(BATCH, frames, 1, *(n,) * ndim)
    y = torch.randn(BATCH, 1, 1, *(n,) * ndim)
    if network in ("pdestream", "compiled"):
        return (ours if network == "pdestream" else torch.compile(ours)), x, y
    last = (x.flatten(1, 2).movedim(1, -1), y.flatten(1, 2).movedim(1, -1))
    if network == "reference":
        width, modes = ours.lift.out_channels, ours.modes[0]
        return load_from(ReferenceFNO(ndim, frames, modes, width), ours), *last
    width = ours.lift.out_channels
    inner = neuraloperator_fno(ndim, frames, ours.modes[0], width, len(ours.spectral), 128, grid=True)
    return inner, x.flatten(1, 2), y.flatten(1, 2)


def relative_l2_sum(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The FNO scripts' ``LpLoss(size_average=False)``: per-sample relative L2, summed over the batch."""
    diff = (pred - true).flatten(1).norm(dim=1)
    return (diff / true.flatten(1).norm(dim=1)).sum()


def adam(network: str) -> Any:
    """The optimizer factory each code base trains with: lr 1e-3, weight decay 1e-4 (the FNO scripts')."""
    if network in ("pdestream", "compiled"):
        config = OmegaConf.load(ROOT / "conf" / "optimizer" / "adam.yaml")
        return instantiate(config, lr=1e-3, weight_decay=1e-4)
    return lambda params: torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)


def measure(network: str, case: str, steps: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    net, x, y = build(network, case)
    optimizer = adam(network)(net.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        relative_l2_sum(net(x), y).backward()
        optimizer.step()

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the first step: its buffers count
    start = time.perf_counter()
    for _ in range(3):
        step()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
    return {"ms": 1e3 * statistics.median(times), "peak_mib": peak / 1024, "warmup_s": warmup}


def isolated(network: str, case: str, args: argparse.Namespace) -> dict[str, Any] | None:
    spec = {"network": network, "case": case, "steps": args.steps, "threads": args.threads}
    return in_subprocess("benchmarks.fno_step", spec, f"{case} {network}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (after 3 warm-up steps)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return
    try:
        import neuralop  # noqa: F401

        networks = args.networks
    except ImportError:
        print("# neuraloperator is not installed (pip install neuraloperator): its column is skipped")
        networks = [n for n in args.networks if n != "neuraloperator"]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for case in args.cases:
            for network in networks:
                result = isolated(network, case, args)
                if result is not None:
                    runs.setdefault((case, network), []).append(result)
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# FNO training step (forward, backward, Adam), batch {BATCH}, CPU ({cpu}), {args.threads} threads; "
        f"median of {args.rounds} runs of {args.steps} steps after 3 warm-up steps; peak = growth of the resident set",
        f"{'case':<11}{'network':<16}{'ms/step':>9}{'peak MiB':>10}{'× vs pdestream':>16}{'warm-up s':>11}",
    ]
    for case in args.cases:
        ours = statistics.median(r["ms"] for r in runs.get((case, "pdestream"), [{"ms": float("nan")}]))
        for network in networks:
            if (case, network) not in runs:
                continue
            ms = statistics.median(r["ms"] for r in runs[case, network])
            peak = statistics.median(r["peak_mib"] for r in runs[case, network])
            warmup = statistics.median(r["warmup_s"] for r in runs[case, network])
            lines.append(f"{case:<11}{network:<16}{ms:>9.2f}{peak:>10.1f}{ms / ours:>16.2f}{warmup:>11.2f}")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
