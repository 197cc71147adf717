"""Train a neural PDE surrogate: ``python train.py [pde=…] [model=…] [data=…] [trainer=…] …``.

The whole run is decided by the composed Hydra config (``conf/train.yaml``); see the README.
"""

import logging
import os
import sys

# OpenMP threads waiting at a barrier sleep instead of spinning: under CPU contention (other jobs on the
# node) a spinning thread takes the core its partner needs (solvers/threads.py). Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from models.training import RunConfigError, fit, register_resolvers

register_resolvers()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        results = fit(cfg)
    except RunConfigError as error:
        logging.getLogger("train").error("configuration error: %s", error)
        sys.exit(2)
    return results.get("val/corr_time")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
