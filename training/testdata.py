"""The test trajectories of an evaluation: from ``test_path`` (any layout of :mod:`data.layouts`) or the
checkpoint's own data config, and where their PDE parameters were drawn from (as the report states it)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from data.config import DATA_TARGETS, SOLVER_TARGETS, build_from_config
from data.datamodule import OfflineDataModule
from data.hdf5 import read_trajectories
from data.layouts import detect, split_path
from solvers.errors import ConfigError
from training.checkpoint import CheckpointError

log = logging.getLogger(__name__)


def load_test_set(cfg: DictConfig, config: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The test trajectories: ``test_path`` (a file in any layout of :mod:`data.layouts`: a foreign one split
    as the checkpoint's own file was when it has that layout, else by the layout's published convention) or
    the set the checkpoint's data config defines."""
    try:
        if cfg.test_path:
            solver = build_from_config(config["pde"], SOLVER_TARGETS, "pde")
            layout = detect(cfg.test_path)
            if layout == "pdestream":
                data = read_trajectories(cfg.test_path, cfg.test_split, solver)
            else:
                trained = config["data"]
                fmt = trained.get("format", "pdestream")
                same = fmt == layout or (
                    fmt == "auto" and _layout_of(split_path(trained["paths"], "train")) == layout
                )
                data = OfflineDataModule(
                    solver, str(cfg.test_path), format=layout, rows=trained.get("rows") if same else None
                ).trajectories(cfg.test_split)
            what = f"test_path={cfg.test_path}"
        else:
            data_config = dict(config["data"])
            if "cache_dir" in data_config:  # this evaluation's cache, not the directory the training run used
                data_config["cache_dir"] = cfg.cache_dir
            datamodule = build_from_config(data_config, DATA_TARGETS, "data")
            data = datamodule.trajectories("test")
            what = f"the test set of {label}'s data config"
    except ConfigError as error:
        raise CheckpointError(f"test set does not fit checkpoint {label}: {error}") from None
    except TypeError as error:
        raise CheckpointError(f"checkpoint {label}: its data config cannot be built ({error})") from None
    limit = cfg.get("num_trajectories")
    if limit:
        data = {**data, "u": data["u"][:limit], "params": {k: v[:limit] for k, v in data["params"].items()}}
    log.info("test set: %s, %d trajectories of %d frames", what, len(data["u"]), data["u"].shape[1])
    return {**data, "source": what}


def _layout_of(path: str) -> str | None:
    """The layout of a checkpoint's training file, or None where it is gone."""
    try:
        return detect(path)
    except ConfigError:
        return None


def origin_of_test_set(cfg: DictConfig, config: Mapping[str, Any]) -> str:
    """Where the test trajectories' PDE parameters come from, as the report states it."""
    if cfg.test_path:
        return (
            f"read from test_path={cfg.test_path}: drawn by whatever made that file, not necessarily from "
            "the training distribution"
        )
    data = config["data"]
    if str(data["_target_"]).endswith("OnlineDataModule"):
        return (
            "drawn by the run's own solver from the training distribution of every parameter (uniform over "
            "its range, uniform in log for a log range), each trajectory from its own seed (seed, split, "
            "index), disjoint from the training stream"
        )
    return f"the test rows of the run's file {split_path(data['paths'], 'test')}: drawn by whatever made it"
