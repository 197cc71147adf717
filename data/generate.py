"""Write trajectories to HDF5: ``python -m data.generate pde=ks split=train num_trajectories=2048``.

Resumable: rerunning the same command on a partial file continues where it stopped. Settings are
in ``conf/generate.yaml``; ``pde`` is any ``conf/pde`` group. ``format=fno|pdebench|pdearena|the_well`` writes
that project's layout (:mod:`data.layouts`): the trajectories are generated, resumably, into
``<path>.partial.h5``, which is converted (atomically: the target appears only once complete) and removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from data.cli import exit_bad_input, guard_command_line, require_writable
from data.hdf5 import write_bytes, write_split
from data.layouts import LAYOUTS, layout_module
from data.timegrid import TimeGrid
from solvers.base import Solver
from solvers.errors import ConfigError, check_choice
from solvers.memory import require_memory

CONF = Path(__file__).resolve().parents[1] / "conf"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def run(cfg: DictConfig) -> str:
    """Generate one split as ``cfg`` says (see ``conf/generate.yaml``) and return the file's path; bad input,
    and a configuration that needs more memory than the machine has, raise :class:`ConfigError` before any
    trajectory is solved. A complete file of a foreign layout made with the same settings is kept."""
    check_choice("dtype", cfg.dtype, DTYPES)
    check_choice("format", cfg.format, LAYOUTS)
    require_writable(Path(str(cfg.path)).parent, "the directory of path")
    try:
        solver = instantiate(cfg.pde)
    except InstantiationException as error:
        raise ConfigError(f"pde: {error.__cause__ or error}") from None
    if not solver.can_solve:
        raise solver.refusal("generate data")
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    workers = cfg.workers
    if workers is None:
        workers = (os.cpu_count() or 1) if device == "cpu" else 0
    path = Path(str(cfg.path))
    foreign = cfg.format != "pdestream"
    working = path.with_name(path.name + f".{cfg.split}.partial.h5") if foreign else path
    if foreign:
        target = layout_module(cfg.format).target(path, cfg.split)
        check_request(cfg, solver, path, target)
        if target.exists():  # complete, and made with these settings
            working.unlink(missing_ok=True)
            return str(target)
    processes = max(workers, 1)
    require_memory(
        f"generating {cfg.chunk} trajectories of {cfg.frames} frames at a time in {processes} process(es)",
        write_bytes(solver, cfg.frames, cfg.chunk, workers, DTYPES[cfg.dtype]),
        "pde.n_solve, pde.n, frames, chunk or workers",
        device,
    )
    write_split(
        working,
        cfg.split,
        solver,
        TimeGrid.of_solver(solver, cfg.frames),
        cfg.num_trajectories,
        cfg.seed,
        config_yaml=OmegaConf.to_yaml(cfg),
        chunk=cfg.chunk,
        device=device,
        workers=workers,
        max_divergence_fraction=cfg.max_divergence_fraction,
        dtype=DTYPES[cfg.dtype],
        progress=cfg.progress,
    )
    if foreign:
        layout_module(cfg.format).export(working, cfg.split, target, OmegaConf.to_yaml(cfg))
        working.unlink()
        return str(target)
    return str(path)


IDENTITY = ("pde", "split", "seed", "num_trajectories", "frames")
"""The settings that decide a file's contents: a complete foreign-layout file made with others is refused."""


def check_request(cfg: DictConfig, solver: Solver, path: Path, target: Path) -> None:
    """Refuse, before solving, what the layout cannot hold, and an existing file made with other settings."""
    module = layout_module(cfg.format)
    module.check_request(path, solver, cfg.frames, cfg.split)
    if not target.exists():
        return
    text = module.stored_config(target)
    if not text:
        raise ConfigError(
            f"path={str(target)!r} exists and was not written by python -m data.generate (it records no "
            "config): choose another path or delete the file"
        )
    stored = OmegaConf.create(text)
    for key in IDENTITY:
        have, want = OmegaConf.select(stored, key), cfg.get(key)
        if have != want:
            shown = OmegaConf.to_container(have) if isinstance(have, DictConfig) else have
            raise ConfigError(
                f"path={str(target)!r} already holds data made with {key}={shown!r}, not {OmegaConf.to_container(want) if isinstance(want, DictConfig) else want!r}: "
                "choose another path or delete the file"
            )


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        path = run(cfg)
    except ConfigError as error:
        exit_bad_input("generation error", error)
    print(f"{path}: split {cfg.split!r}, {cfg.num_trajectories} trajectories, complete")


if __name__ == "__main__":
    guard_command_line(CONF, "generate", "generation error")
    main()
