"""Throughput of the data sources against training: is online data ever the bottleneck?

For Kuramoto-Sivashinsky (1D) and Navier-Stokes (2D) windows, prints samples per second of

* the online stream generated in DataLoader worker processes on the CPU,
* the online stream generated on the training device (when a GPU is present),
* the HDF5 window reader (random windows, lazy h5py reads in workers),
* an in-memory tensor (random windows by indexing),
* training a default-size FNO fed from memory and fed by the online stream (the goal: ratio >= 0.9).

Usage (from the repository root): ``python -m benchmarks.stream [--pde ks navier_stokes] [--steps 30] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from data.hdf5 import HDF5Windows, read_trajectories, write_split
from data.normalize import Normalizer, channel_stats
from data.stream import STREAM_KEY, TrajectoryStream
from data.timegrid import TimeGrid
from solvers.base import Solver
from training.presets import build

ROOT = Path(__file__).resolve().parents[1]
TIME_HISTORY, TIME_FUTURE = 4, 1


def make_solver(name: str) -> Solver:
    """The solver of ``conf/pde/<name>.yaml`` (KS falls back to its constructor defaults), its frames one
    solver step apart (the benchmark measures data rates, not the preset's output interval)."""
    path = ROOT / "conf" / "pde" / f"{name}.yaml"
    if path.is_file():
        config = OmegaConf.load(path)
        return instantiate(config, dt_out=config.dt)
    from solvers.ks import KuramotoSivashinsky

    return KuramotoSivashinsky(dt_out=0.25)  # its default dt


def rate(batches: Iterable[dict[str, Any]], steps: int, warmup: int, sync: Callable[[], None]) -> float:
    """Samples per second over ``steps`` batches after ``warmup`` batches."""
    iterator = iter(batches)
    for _ in itertools.islice(iterator, warmup):
        pass
    sync()
    start, samples = time.perf_counter(), 0
    for batch in itertools.islice(iterator, steps):
        samples += batch["x"].shape[0]
    sync()
    return samples / (time.perf_counter() - start)


def train_rate(
    batches: Iterable[dict[str, Any]],
    model: torch.nn.Module,
    norm: Normalizer,
    device: torch.device,
    steps: int,
) -> float:
    """Samples per second of an Adam training loop fed by ``batches``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def steps_of(source: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in source:
            batch = {k: v for k, v in batch.items() if k != STREAM_KEY}
            x, y = (norm.normalize(batch[k].to(device, non_blocking=True)) for k in ("x", "y"))
            cond = norm.cond({k: v.to(device) for k, v in batch["params"].items()}, batch["dt"].to(device))
            loss = torch.nn.functional.mse_loss(model(x, cond), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            yield batch

    return rate(steps_of(batches), steps, warmup=3, sync=sync)


def memory_batches(
    windows: torch.Tensor, params: dict[str, torch.Tensor], dt: float, batch: int, device: torch.device
) -> Iterator[dict[str, Any]]:
    """Random windows from tensors already on ``device``: the upper bound of any data source."""
    dts = torch.full((batch,), dt, device=device)
    while True:
        index = torch.randint(len(windows), (batch,), device=device)
        w = windows[index]
        chosen = {k: v[index] for k, v in params.items()}
        yield {"x": w[:, :TIME_HISTORY], "y": w[:, TIME_HISTORY:], "params": chosen, "dt": dts}


def bench(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    solver = make_solver(name)
    window = TIME_HISTORY + TIME_FUTURE
    stream_kwargs = dict(
        seed=0,
        time_history=TIME_HISTORY,
        target_frames=TIME_FUTURE,
        frames=args.frames,
        solver_batch=args.solver_batch,
        batch_size=args.batch_size,
        buffer={"policy": "reservoir", "capacity": 8192, "max_reuse": args.max_reuse, "watermark": 1024},
        max_divergence_fraction=0.5,
    )
    cpu_sync = lambda: None  # noqa: E731
    results: dict[str, float] = {}
    cpu_stream = TrajectoryStream(solver, **stream_kwargs)
    loader = lambda: DataLoader(  # noqa: E731
        cpu_stream, batch_size=None, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    results["online (cpu workers)"] = rate(loader(), args.steps, warmup=2, sync=cpu_sync)
    gpu_stream = None
    if device.type == "cuda":
        gpu_stream = TrajectoryStream(solver, device=device, **stream_kwargs)
        results["online (device)"] = rate(gpu_stream, args.steps, warmup=2, sync=torch.cuda.synchronize)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.h5"
        grid = TimeGrid.of_solver(solver, args.frames)
        write_split(path, "train", solver, grid, args.file_trajectories, seed=0, chunk=16, progress=False)
        reader = HDF5Windows(path, "train", TIME_HISTORY, TIME_FUTURE)
        h5 = DataLoader(reader, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
        results["hdf5 reader"] = rate(itertools.cycle(h5), args.steps, warmup=2, sync=cpu_sync)
        data = read_trajectories(path, "train")
    u = data["u"]

    windows = u.unfold(1, window, 1).movedim(-1, 2).flatten(0, 1).to(device)
    per_trajectory = u.shape[1] - window + 1
    params = {k: v.float().repeat_interleave(per_trajectory).to(device) for k, v in data["params"].items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else cpu_sync
    memory = lambda: memory_batches(windows, params, solver.dt, args.batch_size, device)  # noqa: E731
    results["in-memory tensor"] = rate(memory(), args.steps, warmup=2, sync=sync)

    mean, std = channel_stats(u)
    norm = Normalizer.from_solver(solver, mean, std, solver.dt).to(device)
    model = build(
        "fno",
        ndim=solver.ndim,
        channels=len(solver.channels),
        time_history=TIME_HISTORY,
        time_future=TIME_FUTURE,
        cond_dim=norm.cond_dim,
    ).to(device)
    results["train: fed from memory"] = train_rate(memory(), model, norm, device, args.train_steps)
    online = gpu_stream if gpu_stream is not None and args.train_online_on_device else loader()
    results["train: fed online"] = train_rate(online, model, norm, device, args.train_steps)
    results["ratio online/memory"] = results["train: fed online"] / results["train: fed from memory"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pde", nargs="+", default=["ks", "navier_stokes"])
    parser.add_argument("--steps", type=int, default=30, help="batches timed per data source")
    parser.add_argument("--train-steps", type=int, default=20, help="optimizer steps timed per training loop")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=64, help="frames per generated trajectory")
    parser.add_argument("--solver-batch", type=int, default=32)
    parser.add_argument("--max-reuse", type=int, default=4, help="reservoir: mean uses per sample")
    parser.add_argument("--file-trajectories", type=int, default=32)
    parser.add_argument(
        "--train-online-on-device",
        action="store_true",
        help="feed the online training loop from the device stream",
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table = {name: bench(name, args, device) for name in args.pde}
    rows = list(dict.fromkeys(k for result in table.values() for k in result))
    print(f"device: {device}, batch {args.batch_size}, workers {args.workers}, samples/s (ratio unitless)")
    print(f"{'':28s}" + "".join(f"{name:>16s}" for name in table))
    for row in rows:
        print(f"{row:28s}" + "".join(f"{table[name].get(row, float('nan')):16.3g}" for name in table))


if __name__ == "__main__":
    main()
