"""Rebuild a trained surrogate from a pdestream checkpoint (or run directory) for evaluation.

A checkpoint written by ``train.py`` holds the composed, resolved run configuration under
``hyper_parameters.config`` and — through Lightning's ``EMAWeightAveraging`` callback — the averaged
(EMA) weights under ``state_dict``. The network is rebuilt from ``config["model"]``, the
:class:`~data.normalize.Normalizer` from its buffers in the state dict, and the module that
``config["model"]["objective"]`` names from the stored hyper-parameters; nothing is unpickled beyond
tensors and plain containers unless the user trusts the file, and nothing the stored config names is called
unless it is pdestream's own (:mod:`data.config`; a network only if it is registered in
:data:`models.base.NETWORKS`).
The model's time step is the ``dt_out`` of the training data's :class:`~data.timegrid.TimeGrid`, stored
in the config as ``time_grid``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from data.cli import write_atomically
from data.config import DATA_TARGETS, SOLVER_TARGETS, build_from_config, targets, upgrade_data_config
from data.normalize import Normalizer
from data.timegrid import TimeGrid
from models import NETWORKS, SurrogateNet
from solvers.errors import ConfigError
from training.module import SurrogateModule
from training.presets import module_class, network_config

log = logging.getLogger(__name__)

RUN_DIR_CANDIDATES = ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "best.ckpt", "last.ckpt")
GRID_KEYS = ("_target_", "n", "length")
NETWORK_TARGETS = targets(*NETWORKS.values())
"""The only ``model._target_`` a checkpoint may name: the registered network classes (``models.fno.FNO``)."""


class EvaluationError(Exception):
    """An evaluation that cannot run (bad config, checkpoint or test set); the message is one sentence."""


class CheckpointError(EvaluationError):
    """A checkpoint that is missing, corrupt, not from pdestream or does not match the test set."""


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file for ``path``: the file itself, or a run directory's best (else last) checkpoint."""
    path = Path(path)
    if path.is_dir():
        for candidate in RUN_DIR_CANDIDATES:
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(
            f"run directory {str(path)!r} holds no checkpoint; looked for {', '.join(RUN_DIR_CANDIDATES)}"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return path


CHECKSUM_KEY = "pdestream_checksum"
"""Where a checkpoint holds the checksum of its tensors (:func:`tensor_checksum`), written by
:class:`AtomicCheckpointIO` and checked by :func:`read_checkpoint`."""


def _tensors(node: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts, lists and tuples, with its path, in a fixed order."""
    if isinstance(node, torch.Tensor):
        yield path, node
    elif isinstance(node, Mapping):
        for key in sorted(node, key=repr):
            if key != CHECKSUM_KEY:
                yield from _tensors(node[key], f"{path}/{key!r}")
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            yield from _tensors(item, f"{path}/{i}")


def tensor_checksum(checkpoint: Mapping[str, Any]) -> str:
    """A BLAKE2b digest of every tensor of ``checkpoint`` (path, dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for path, tensor in _tensors(checkpoint):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{path}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CheckpointWriteError(Exception):
    """A checkpoint that could not be written (full disk, lost mount); the previous file is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint whole or not at all, with a checksum of its tensors.

    The file is written as a temporary file in the checkpoint's own directory, flushed to disk (fsync) and
    renamed onto its name, so a full disk, a kill or a power cut leaves the previous checkpoint as it was;
    a failed write raises :class:`CheckpointWriteError` (one sentence) and removes the temporary file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        checkpoint[CHECKSUM_KEY] = tensor_checksum(checkpoint)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda handle: torch.save(checkpoint, handle))
        except (
            OSError,
            RuntimeError,
        ) as error:  # torch's archive writer re-raises a failed write as RuntimeError
            cause = error if isinstance(error, OSError) else error.__context__
            if not isinstance(cause, OSError):
                raise
            kept = f"{path} still holds the previous checkpoint" if path.exists() else "nothing was written"
            raise CheckpointWriteError(
                f"could not write checkpoint {path} ({cause.strerror or cause}); {kept}: free space or "
                "fix the directory and resume with ckpt_path=auto"
            ) from None
        finally:
            checkpoint.pop(CHECKSUM_KEY, None)


def read_checkpoint(path: Path, trust: bool = False) -> Any:
    """The checkpoint's contents, loaded as data (``weights_only=True``) unless ``trust``; a missing, truncated,
    foreign or altered file (its tensors no longer match the checksum written with them) raises
    :class:`CheckpointError` with one sentence."""
    checkpoint = _load(path, trust)
    stored = checkpoint.get(CHECKSUM_KEY) if isinstance(checkpoint, dict) else None
    if stored is not None and stored != tensor_checksum(checkpoint):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its tensors do not match the checksum written with them "
            "(changed on disk after it was saved); use another checkpoint of the run"
        )
    return checkpoint


def _load(path: Path, trust: bool) -> Any:
    corrupt = (
        f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint (truncated or another file type?)"
    )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(corrupt)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"(?:Unsupported global: GLOBAL|GLOBAL) ([\w.]+)", str(error))
        if blocked is None:
            raise CheckpointError(corrupt) from None
        if not trust:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds pickled Python objects ({blocked.group(1)}) that loading "
                "as data (weights_only=True) refuses to run; if you trust the file, set "
                "trust_checkpoints=true to unpickle it"
            ) from None
        log.warning("%s: loading with weights_only=False (trust_checkpoints=true)", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ImportError, pickle.UnpicklingError) as unsafe_error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} refers to code that is not available here ({unsafe_error})"
            ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError):
        raise CheckpointError(corrupt) from None


def _normalizer(state: Mapping[str, Any], path: Path) -> Normalizer:
    prefix = "normalizer."
    try:
        extra = state[prefix + "_extra_state"]
        buffers = {k: state[prefix + k] for k in ("mean", "std", "center", "scale", "log")}
        return Normalizer(param_names=list(extra["param_names"]), **buffers)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no usable normalizer statistics ({error!r}); "
            "it was not written by pdestream's train.py"
        ) from None


def build_network(model: Mapping[str, Any]) -> SurrogateNet:
    """The (freshly initialised) network of a stored model config; only registered network classes are built.

    Raises ``ValueError`` or ``TypeError`` (one sentence) for a config that cannot be built.
    """
    node = network_config(model) if isinstance(model, Mapping) else model
    return build_from_config(node, NETWORK_TARGETS, "model")


def load_checkpoint(path: str | Path, trust: bool = False) -> tuple[SurrogateModule, dict[str, Any]]:
    """The trained module (EMA weights, eval mode, on the CPU) and its run configuration.

    ``path`` is a ``.ckpt`` file or a run directory (``checkpoints/best.ckpt``, else ``last.ckpt``).
    Raises :class:`CheckpointError` (one sentence) for a missing, corrupt or foreign file.
    """
    file = resolve_checkpoint(path)
    checkpoint = read_checkpoint(file, trust)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    config = hparams.get("config") if isinstance(hparams, Mapping) else None
    if not isinstance(config, Mapping) or "model" not in config or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{str(file)!r} is not a pdestream checkpoint: it lacks hyper_parameters.config or state_dict"
        )
    config = dict(config)
    if isinstance(config.get("data"), Mapping):
        config["data"] = upgrade_data_config(config["data"])
    try:
        TimeGrid.from_dict(config.get("time_grid"), "hyper_parameters.config.time_grid")
    except ConfigError as error:
        raise CheckpointError(
            f"{str(file)!r} does not record its training time grid ({error}); it was written by an older "
            "train.py: retrain it"
        ) from None
    for key, allowed in (("pde", SOLVER_TARGETS), ("data", DATA_TARGETS)):
        target = config[key].get("_target_") if isinstance(config.get(key), Mapping) else None
        if target not in allowed:
            raise CheckpointError(
                f"{str(file)!r}: its {key}._target_={target!r} is not a pdestream class, so it is not built"
            )
    state = checkpoint["state_dict"]
    try:
        net = build_network(config["model"])
        module_cls = module_class(config["model"], type(net))
        kwargs = {k: v for k, v in hparams.items() if k != "config"}
        module = module_cls(
            net=net, normalizer=_normalizer(state, file), optimizer=None, config=config, **kwargs
        )
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{str(file)!r}: its model config cannot be built ({error})") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"{str(file)!r}: weights do not fit the network its config builds ({first})"
        ) from None
    return module.eval(), config


def model_grid(config: Mapping[str, Any]) -> TimeGrid:
    """The time grid of the data a checkpoint's model was trained on (its ``dt_out`` is the model's step);
    ``config`` is one :func:`load_checkpoint` returned (checked there)."""
    return TimeGrid.from_dict(config["time_grid"])


def check_compatible(config: Mapping[str, Any], reference: Mapping[str, Any], label: str, what: str) -> None:
    """Refuse a checkpoint whose PDE or grid (solver class, ``n``, ``length``) differs from ``reference``."""
    for key in GRID_KEYS:
        have, want = config["pde"].get(key), reference.get(key)
        if have != want:
            raise CheckpointError(
                f"checkpoint {label} was trained on pde.{key}={have!r} but {what} has pde.{key}={want!r}; "
                "evaluate checkpoints of one PDE and grid together"
            )


def frame_stride(dt_model: float, data: TimeGrid, label: str) -> int:
    """How many test-set frames one model step spans; the model's step must be a multiple of the data's."""
    stride = data.frames_per(dt_model)
    if stride < 1:
        raise CheckpointError(
            f"checkpoint {label} steps dt={dt_model:g} but the test set's interval is {data.dt_out:g}; "
            f"the model's step must be a multiple of it"
        )
    return stride
