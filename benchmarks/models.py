"""Training cost of every model preset: forward + backward time per sample and peak memory.

Each measurement runs in its own subprocess so that peak memory is not polluted by earlier models:
on CPU the peak is the growth of the process's maximum resident set size (``ru_maxrss``) from just
before the first forward pass to the end of the timed steps; on CUDA it is
``torch.cuda.max_memory_allocated``. The ``fno`` preset is also timed against neuraloperator's FNO
(``pip install neuraloperator``) at the same modes, width, depth, lifting (one pointwise layer) and
projection (two pointwise layers, 128 hidden channels), without channel MLPs or positional channels.

    python -m benchmarks.models                      # CPU, 1D n = 256 and 2D 64×64, batch 8
    python -m benchmarks.models --device cuda --batch 32
    python -m benchmarks.models --presets fno unet-small --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from benchmarks.fno_reference import neuraloperator_fno
from training import presets

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {1: (256,), 2: (64, 64)}
SHAPE = {"channels": 1, "time_history": 4, "time_future": 1}
NEURALOP = "neuralop-fno"


def build(model: str, ndim: int) -> tuple[torch.nn.Module, int]:
    """The network (called as ``net(x)`` on ``[B, T_in, C, *S]``) and its parameter count."""
    if model != NEURALOP:
        net = presets.build(model, ndim=ndim, **SHAPE)
        return net, net.num_parameters()
    preset = OmegaConf.load(presets.PRESET_DIR / "fno.yaml")
    in_channels = SHAPE["time_history"] * SHAPE["channels"]
    layers, projection = preset["n_layers"], preset["projection"]
    inner = neuraloperator_fno(
        ndim, in_channels, preset["modes"], preset["width"], layers, projection, grid=False
    )

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.flatten(1, 2)).unsqueeze(1)

    return Wrapped(), sum(p.numel() for p in inner.parameters())


def measure(model: str, ndim: int, batch: int, repeats: int, device: str) -> dict[str, Any]:
    """Time and memory of ``repeats`` forward + backward steps (after two warm-up steps)."""
    torch.manual_seed(0)
    net, n_params = build(model, ndim)
    net = net.to(device)
    x = torch.randn(batch, SHAPE["time_history"], SHAPE["channels"], *GRIDS[ndim], device=device)
    y = torch.randn(batch, SHAPE["time_future"], SHAPE["channels"], *GRIDS[ndim], device=device)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()

    cuda = device.startswith("cuda")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for i in range(repeats + 2):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**10
    return {
        "model": model,
        "ndim": ndim,
        "params": n_params,
        "ms_per_sample": 1e3 * statistics.median(times) / batch,
        "peak_mib": peak_mib,
    }


def in_subprocess(module: str, spec: dict[str, Any], label: str, *options: str) -> dict[str, Any] | None:
    """``python -m <module> <options> --worker <spec as JSON>`` in a fresh process (its peak memory its own):
    the JSON its last line prints, or ``None`` with ``label`` and the error on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", module, *options, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode:
        print(f"# {label}: failed: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_isolated(model: str, ndim: int, args: argparse.Namespace) -> dict[str, Any] | None:
    spec = {"model": model, "ndim": ndim, "batch": args.batch, "repeats": args.repeats, "device": args.device}
    return in_subprocess("benchmarks.models", spec, f"{model} {ndim}D", "--threads", str(args.threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="*", default=None, help=f"default: all of {presets.available()}")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-neuralop", action="store_true", help="skip the neuraloperator comparison")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    names = args.presets or presets.available()
    unknown = sorted(set(names) - set(presets.available()))
    if unknown:
        parser.error(f"unknown presets {unknown}; allowed: {presets.available()}")
    models = names + ([NEURALOP] if "fno" in names and not args.no_neuralop else [])
    print(f"device={args.device} batch={args.batch} threads={torch.get_num_threads()} grids={GRIDS}")
    print(f"{'model':<20}{'dim':>4}{'params':>12}{'ms/sample':>12}{'peak MiB':>10}")
    results = {}
    for ndim in (1, 2):
        for model in models:
            r = run_isolated(model, ndim, args)
            if r is None:
                continue
            results[model, ndim] = r
            print(f"{model:<20}{ndim:>4}{r['params']:>12,}{r['ms_per_sample']:>12.3f}{r['peak_mib']:>10.1f}")
    for ndim in (1, 2):
        if ("fno", ndim) in results and (NEURALOP, ndim) in results:
            ours, theirs = results["fno", ndim], results[NEURALOP, ndim]
            print(
                f"fno / neuraloperator FNO, {ndim}D: time ×{ours['ms_per_sample'] / theirs['ms_per_sample']:.2f}, "
                f"memory ×{ours['peak_mib'] / max(theirs['peak_mib'], 1e-9):.2f}"
            )


if __name__ == "__main__":
    main()
