"""Train a neural PDE surrogate: ``python train.py [pde=…] [model=…] [data=…] [trainer=…] …``.

The whole run is decided by the composed Hydra config (``conf/train.yaml``); see docs/training.md. Bad input
exits with status 2 and one sentence, as does a non-finite loss or gradient; a stop signal (SIGTERM, SIGUSR1,
Ctrl-C) writes ``last.ckpt`` and exits with ``128 + signal``.
"""

import logging
import os
import signal
import sys
from pathlib import Path

from training.process import keep_freed_memory, openmp_waits

# OpenMP threads waiting at a barrier spin briefly, then sleep; read when torch loads
os.environ.update(openmp_waits(os.environ))

import hydra
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from data.cli import guard_command_line
from solvers.errors import EXIT_BAD_INPUT, exit_status_for_signal
from training.run import RunConfigError, fit, register_resolvers
from training.stopping import Stopped

register_resolvers()
keep_freed_memory()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    log = logging.getLogger("train")
    try:
        results = fit(cfg)
    except RunConfigError as error:
        if rank_zero_only.rank == 0:  # every DDP rank stops with the same sentence; one prints it
            log.error("configuration error: %s", error)
        sys.exit(EXIT_BAD_INPUT)
    except Stopped as stop:
        if rank_zero_only.rank == 0:  # every DDP rank stops at the same step; one says so
            log.warning("%s", stop)
        sys.exit(exit_status_for_signal(stop.signum))
    except KeyboardInterrupt:  # Ctrl-C before training started (during it, Stopped saves last.ckpt first)
        log.warning("interrupted before training started: nothing to save")
        sys.exit(exit_status_for_signal(signal.SIGINT))
    return results.get("val/corr_time")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    guard_command_line(Path(__file__).parent / "conf", "train", "configuration error")
    main()
