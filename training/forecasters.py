"""The rows of an evaluation: loaded checkpoints (:class:`Model`) and the forecasters scored from them.

A :class:`Forecaster` is a trained model, its untrained twin (the same network freshly initialised behind the
trained normaliser) or persistence (the last input frame repeated); :func:`load_models` loads the
checkpoints and labels them by their model presets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from evaluation.labels import config_labels
from evaluation.rollout import Predictor
from training.checkpoint import CheckpointError, build_network, check_compatible, load_checkpoint, model_grid
from training.module import RefinerModule, SurrogateModule


@dataclass
class Model:
    """A loaded checkpoint: its module, run config, label and where it came from."""

    label: str
    path: str
    module: SurrogateModule
    config: dict[str, Any]

    @property
    def is_refiner(self) -> bool:
        return isinstance(self.module, RefinerModule)

    @property
    def dt(self) -> float:
        """The model's time step: the output interval of the data it was trained on."""
        return model_grid(self.config).dt_out


@dataclass
class Forecaster:
    """One row of the report: a trained model, its untrained twin, or persistence (``kind``).

    ``predictor(params, dt)`` gives the one-step :data:`~evaluation.rollout.Predictor` for a batch;
    ``samples`` is the number of noisy rollouts (PDE-Refiner ensembles).
    """

    label: str
    kind: str
    time_history: int
    time_future: int
    predictor: Callable[[Mapping[str, Tensor], Tensor], Predictor]
    num_parameters: int = 0
    samples: int = 1


def trained(model: Model, num_noise_samples: int) -> Forecaster:
    net = model.module.net
    samples = num_noise_samples if model.is_refiner else 1
    return Forecaster(
        model.label,
        "trained",
        net.time_history,
        net.time_future,
        model.module.predictor,
        net.num_parameters(),
        samples,
    )


def untrained(model: Model, seed: int) -> Forecaster:
    """``model``'s network freshly initialised (seeded by ``seed``) behind its trained normaliser: the score
    the training started from (one rollout, also for PDE-Refiner: an anchor needs no ensemble spread)."""
    module = copy.deepcopy(model.module)
    torch.manual_seed(seed)
    module.net = build_network(model.config["model"]).to(next(model.module.parameters()).device)
    module.eval()
    twin = Model(f"{model.label} (untrained)", model.path, module, model.config)
    return Forecaster(**{**vars(trained(twin, 1)), "kind": "untrained"})


def persistence(time_history: int) -> Forecaster:
    """The last input frame, repeated: the forecast that needs no model at all."""

    def predictor(params: Mapping[str, Tensor], dt: Tensor) -> Predictor:
        return lambda window: window[:, -1:]

    return Forecaster("persistence", "persistence", time_history, 1, predictor)


def load_models(paths: Sequence[str], trust: bool) -> list[Model]:
    """Load every checkpoint; labels are the model presets with what differs in their configs
    (:func:`evaluation.labels.config_labels`), numbered where the configs are identical."""
    loaded = [(path, *load_checkpoint(path, trust=trust)) for path in paths]
    names = [str(config["model"].get("name", type(module.net).__name__)) for _, module, config in loaded]
    labels = config_labels(names, [config for _, _, config in loaded])
    models = [Model(label, *item) for label, item in zip(labels, loaded, strict=True)]
    first = models[0]
    for model in models[1:]:
        check_compatible(model.config, first.config["pde"], model.path, f"checkpoint {first.path}")
        if abs(model.dt - first.dt) > 1e-9 * first.dt:
            raise CheckpointError(
                f"checkpoint {model.path} steps dt={model.dt:g} but {first.path} steps "
                f"dt={first.dt:g}; evaluate checkpoints of one time step together"
            )
    return models
