"""Model presets: ``conf/model/<name>.yaml``, the one definition of each, and the objective that trains it.

A preset file names the network class (``_target_``, a class of :data:`models.base.NETWORKS`) and every
hyper-parameter; the data shape (``ndim``, ``channels``, ``time_history``, ``time_future``, ``cond_dim``)
is filled in by the training config or by :func:`build`. Two keys describe the preset rather than the
network and are not passed to its constructor (:data:`PRESET_KEYS`): ``name`` (the label of its runs and
reports) and ``objective``, which LightningModule trains it (:data:`OBJECTIVES`). The composed model config,
``objective`` included, is stored in every checkpoint, and loading reads the objective back from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from models.base import SurrogateNet, network_class
from models.pde_refiner import PDERefiner
from training.module import RefinerModule, SurrogateModule

PRESET_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
PRESET_KEYS = ("name", "objective")
"""Keys of a model config that describe the preset, not the network's construction."""
OBJECTIVES: dict[str, type[SurrogateModule]] = {"one_step": SurrogateModule, "refiner": RefinerModule}
"""``model.objective`` → the LightningModule that trains the network: ``one_step`` regresses the next
state(s) (pushforward, unrolling and noise as ``module.*`` says); ``refiner`` trains PDE-Refiner's
denoising loss and samples it at inference."""


def available() -> list[str]:
    """Names of all presets (the files in ``conf/model/``), sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def network_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor part of a model config: everything but :data:`PRESET_KEYS`."""
    return {key: value for key, value in model.items() if key not in PRESET_KEYS}


def build(
    name: str,
    *,
    ndim: int,
    channels: int,
    time_history: int,
    time_future: int,
    cond_dim: int = 0,
    **overrides: Any,
) -> SurrogateNet:
    """The network of preset ``name`` (``conf/model/<name>.yaml``) for this data shape.

    ``overrides`` replace preset values or set further constructor options (``n``, the grid size, for a
    class that takes it; a preset that reads ``n`` from the PDE config gets ``None`` unless it is given).
    Raises ``ValueError`` for an unknown preset or an option its class does not take.
    """
    if name not in available():
        raise ValueError(f"model preset {name!r} does not exist; allowed: {', '.join(available())}")
    preset = OmegaConf.load(PRESET_DIR / f"{name}.yaml")
    shape = {"ndim": ndim, "channels": channels, "time_history": time_history, "time_future": time_future}
    if "n" in preset:  # `n: ${pde.n}` resolves in a training config only
        shape["n"] = None
    node = network_config(
        OmegaConf.to_container(
            OmegaConf.merge(preset, shape, {"cond_dim": cond_dim}, overrides), resolve=True
        )
    )
    cls = network_class(node.pop("_target_"), f"conf/model/{name}.yaml: _target_")
    for key in ("_convert_", "_recursive_"):
        node.pop(key, None)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(node) - accepted)
    if unknown:
        raise ValueError(
            f"model {name!r} ({cls.__name__}) has no option(s) {unknown}; allowed: {sorted(accepted)}"
        )
    return cls(**node)


def module_class(model: Mapping[str, Any], network: type[SurrogateNet]) -> type[SurrogateModule]:
    """The LightningModule that ``model.objective`` names, after checking that it can train ``network``.

    Raises ``ValueError`` (one sentence) for a missing or unknown objective, or one that does not fit the
    network class: ``refiner`` needs a network with its own loss and sampler, ``one_step`` one without.
    """
    objective = model.get("objective")
    if objective not in OBJECTIVES:
        raise ValueError(f"model.objective={objective!r} is not allowed; allowed: {', '.join(OBJECTIVES)}")
    refiner = issubclass(network, PDERefiner)  # the network with its own loss and noisy sampler
    if (objective == "refiner") != refiner:
        needs = "a network with its own loss and sampler" if objective == "refiner" else "a plain network"
        raise ValueError(
            f"model.objective={objective!r} needs {needs}, but model._target_ is {network.__name__}; "
            f"set model.objective={'refiner' if refiner else 'one_step'} or choose another network"
        )
    return OBJECTIVES[objective]
