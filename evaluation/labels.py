"""Labels of evaluated checkpoints: the model preset, and what differs in its run config from the others.

Two runs of one preset are told apart by the config keys whose values differ between them
(``fno-small (optimizer.lr=0.001)`` and ``fno-small (optimizer.lr=0.003)``); ``#n`` numbers only runs whose
configs are identical. Keys that differ between any two runs without changing what is trained (output and cache
directories, the logger) are not compared. Pure functions on plain dicts, deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

IGNORED_ROOTS = frozenset({"paths", "hydra", "logger", "ckpt_path"})
"""Top-level config groups that say where a run writes, not what it trains."""
IGNORED_LEAVES = frozenset({"dirpath", "default_root_dir", "save_dir", "cache_dir", "output_dir"})
"""Keys (last component) that name directories wherever they are."""
MAX_KEYS = 3
"""At most this many differing keys in a label; the rest are counted (``+2 more``)."""
MAX_VALUE = 24
"""Longer values are cut to this many characters (``…`` at the end)."""
UNSET = "unset"
"""The value of a key that one config has and another lacks."""


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """Dotted key → value of every leaf of a nested mapping (lists are leaves)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _compared(key: str) -> bool:
    parts = key.split(".")
    return parts[0] not in IGNORED_ROOTS and parts[-1] not in IGNORED_LEAVES


def differing_keys(configs: Sequence[Mapping]) -> list[str]:
    """The dotted keys whose value is not the same in every config (a missing key counts as a value), in
    sorted order, without the keys that only say where a run writes."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f if _compared(k)})
    return [k for k in keys if len({repr(f.get(k, UNSET)) for f in flat}) > 1]


def _value(value: object) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _difference(config: Mapping, keys: Sequence[str]) -> str:
    flat = flatten(config)
    shown = [f"{k}={_value(flat.get(k, UNSET))}" for k in keys[:MAX_KEYS]]
    if len(keys) > MAX_KEYS:
        shown.append(f"+{len(keys) - MAX_KEYS} more")
    return ", ".join(shown)


def config_labels(names: Sequence[str], configs: Sequence[Mapping]) -> list[str]:
    """One label per checkpoint: its ``name`` (the model preset) alone where no other checkpoint has it, else
    the name with the config values that differ among the checkpoints of that name
    (``fno-small (optimizer.lr=0.001)``); checkpoints whose labels still coincide (identical configs) are
    numbered ``#1``, ``#2``, … in their given order."""
    if len(names) != len(configs):
        raise ValueError(f"{len(names)} names for {len(configs)} configs")
    counts = Counter(names)
    labels = []
    for name, config in zip(names, configs, strict=True):
        if counts[name] == 1:
            labels.append(name)
            continue
        keys = differing_keys([c for n, c in zip(names, configs, strict=True) if n == name])
        labels.append(f"{name} ({_difference(config, keys)})" if keys else name)
    repeated, seen = Counter(labels), Counter()
    numbered = []
    for label in labels:
        seen[label] += 1
        numbered.append(f"{label}#{seen[label]}" if repeated[label] > 1 else label)
    return numbered
