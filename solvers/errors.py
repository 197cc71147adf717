"""How pdestream refuses bad input: the error class, the validators and the exit codes, in one place.

Bad user input (a config value, a file, a checkpoint, a command line) fails fast with one
:class:`ConfigError` whose message is one sentence naming the key and what is allowed. The command-line
entry points (``train.py``, ``evaluate.py``, ``python -m data.generate``) print that sentence without a
traceback and exit with :data:`EXIT_BAD_INPUT`; a run ended by a stop signal exits with
:func:`exit_status_for_signal`. This module is at the bottom of the import graph: every layer may use it,
and it imports nothing from the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

EXIT_BAD_INPUT = 2
"""Exit status of a command refused for bad input (configuration, file, checkpoint): one sentence, no traceback."""

EXIT_SIGNAL_BASE = 128
"""A run stopped by signal ``s`` (after writing ``last.ckpt``) exits with ``128 + s`` (143: SIGTERM, 130: Ctrl-C)."""


def exit_status_for_signal(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: ``128 + signum``, the shell's convention."""
    return EXIT_SIGNAL_BASE + int(signum)


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the key and what is allowed."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]`` (``high=None``: no upper bound); otherwise
    :class:`ConfigError` ``"name=value is not allowed; allowed: an int >= low"``."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: {allowed}")
    return value


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) within ``low`` and ``high`` (``None``:
    no bound; a ``*_open`` bound excludes its value); otherwise :class:`ConfigError` naming ``name`` and the
    range, e.g. ``"dt=0 is not allowed; allowed: a number > 0"``."""
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    above = number and (low is None or value > low or (value == low and not low_open))
    if not (above and (high is None or value < high or (value == high and not high_open))):
        if low is not None and high is not None:
            allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"a number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            allowed = f"a number {'<' if high_open else '<='} {high:g}"
        else:
            allowed = "a finite number"
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: {allowed}")
    return float(value)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``; otherwise :class:`ConfigError` listing them."""
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return value
