"""Write trajectories to HDF5: ``python -m data.generate pde=ks split=train num_trajectories=2048``.

Resumable: rerunning the same command on a partial file continues where it stopped. Settings are
in ``conf/generate.yaml``; ``pde`` is any ``conf/pde`` group.
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
from data.hdf5 import SplitInfo, write_split
from data.timegrid import TimeGrid
from solvers.base import ConfigError, check_choice

CONF = Path(__file__).resolve().parents[1] / "conf"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def run(cfg: DictConfig) -> SplitInfo:
    """Generate one split as ``cfg`` says (see ``conf/generate.yaml``); bad input raises :class:`ConfigError`
    before any trajectory is solved."""
    check_choice("dtype", cfg.dtype, DTYPES)
    require_writable(Path(str(cfg.path)).parent, "the directory of path")
    try:
        solver = instantiate(cfg.pde)
    except InstantiationException as error:
        raise ConfigError(f"pde: {error.__cause__ or error}") from None
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    workers = cfg.workers
    if workers is None:
        workers = (os.cpu_count() or 1) if device == "cpu" else 0
    return write_split(
        cfg.path,
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


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        info = run(cfg)
    except ConfigError as error:
        exit_bad_input("generation error", error)
    print(f"{info.path}: split {info.split!r}, {info.num_trajectories} trajectories, complete")


if __name__ == "__main__":
    guard_command_line(CONF, "generate", "generation error")
    main()
