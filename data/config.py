"""Building pdestream objects from configs read out of files (checkpoints): allow-listed classes only.

A checkpoint stores its run's resolved config; Hydra's ``instantiate`` would call whatever ``_target_``
it names (``os.system`` as well as a solver). :func:`build_from_config` calls only the classes of an
allow-list, with the node's keys as plain keyword arguments (no interpolation, no ``_partial_`` or
``_args_``), building nested ``_target_`` nodes (a data config's ``pde``) the same way unless the node says
``_recursive_: false`` (then the class receives them as plain dicts, as from Hydra).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from data.datamodule import OfflineDataModule, OnlineDataModule
from solvers.base import SOLVERS
from solvers.errors import ConfigError


def targets(*objects: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """``{_target_: object}`` under the package-level name (as ``conf/`` writes it) and the full module path."""
    out: dict[str, Callable[..., Any]] = {}
    for obj in objects:
        package = obj.__module__.split(".")[0]
        out[f"{package}.{obj.__qualname__}"] = obj
        out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


SOLVER_TARGETS = targets(*SOLVERS.values())  # importing solvers.base runs solvers/__init__: all are defined
DATA_TARGETS = {**targets(OnlineDataModule, OfflineDataModule), **SOLVER_TARGETS}
LEGACY_FNO = "FNOFileDataModule"
"""The FNO-file module of earlier releases: ``data.OfflineDataModule`` with ``format: fno`` since."""


def upgrade_data_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's data config in today's terms: an earlier ``data.FNOFileDataModule`` (``path``, ``ntrain``,
    ``nval``, ``ntest``) becomes the ``data.OfflineDataModule`` of ``format: fno`` that reads the same rows."""
    data = dict(data)
    if not str(data.get("_target_", "")).endswith(LEGACY_FNO):
        return data
    ntrain, nval, ntest = (int(data.pop(k)) for k in ("ntrain", "nval", "ntest"))
    paths = data.pop("path")
    return {
        **data,
        "_target_": "data.OfflineDataModule",
        "paths": paths,
        "format": "fno",
        "rows": {"train": [0, ntrain], "val": [ntrain, ntrain + nval], "test": [-ntest, None]},
    }


IGNORED_KEYS = ("_convert_", "_recursive_")
"""Hydra keys that are not constructor arguments (``_recursive_: false`` keeps nested nodes unbuilt)."""


def build_from_config(node: Mapping[str, Any], allowed: Mapping[str, Callable[..., Any]], what: str) -> Any:
    """Call ``allowed[node["_target_"]]`` with the node's other keys; refuse any other target.

    Raises :class:`ConfigError` naming ``what`` and the allowed targets.
    """
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if target not in allowed:
        names = sorted({f"{o.__module__.split('.')[0]}.{o.__qualname__}" for o in allowed.values()})
        raise ConfigError(
            f"{what}._target_={target!r} is not a pdestream class, so it is not built; allowed: {', '.join(names)}"
        )
    kwargs = {}
    recursive = node.get("_recursive_", True) is not False
    for key, value in node.items():
        if key == "_target_" or key in IGNORED_KEYS:
            continue
        if key.startswith("_"):
            raise ConfigError(
                f"{what}.{key} is not allowed in a stored config; only _target_ and constructor keys"
            )
        is_node = recursive and isinstance(value, Mapping) and "_target_" in value
        kwargs[key] = build_from_config(value, allowed, f"{what}.{key}") if is_node else value
    return allowed[target](**kwargs)
