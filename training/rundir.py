"""The run directory and resuming: one run at a time, nothing overwritten, a resume that is the same run.

* :func:`claim` takes the run directory for this process (an advisory lock on ``.pdestream.lock``, released
  when the run ends or the process dies) and refuses a second run into it, and a fresh start into a directory
  that already holds checkpoints: those continue with ``ckpt_path=auto``.
* :func:`resume_source` finds the checkpoint to resume from: ``ckpt_path``, or with ``ckpt_path=auto`` the
  newest intact checkpoint of the run directory (``last.ckpt``, else ``best.ckpt``: a truncated or altered file
  is skipped with a one-line notice).
* :func:`check_resume` compares the run's configuration with the checkpoint's: what would make it another
  run (the PDE and its parameters, the data's shape and validation set, the model, its objective, the seed)
  is refused in one sentence, what may change (batch size, learning rate, trainer, logging …) is logged.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from training.checkpoint import CheckpointError, read_checkpoint

log = logging.getLogger("pdestream")

LOCK = ".pdestream.lock"
CANDIDATES = ("last.ckpt", "best.ckpt")
"""The checkpoints ``ckpt_path=auto`` resumes from, in order of preference (both hold the full training state)."""
MAY_CHANGE = (
    "data.batch_size",
    "data.solver_batch",
    "data.num_workers",
    "data.generation",
    "data.cache_dir",
    "data.progress",
    "data.buffer.",
    "optimizer.",
    "scheduler.",
    "trainer.",
    "callbacks.",
    "logger.",
    "paths.",
    "ckpt_path",
    "compile",
    "threads",
    "validate_untrained",
    "trust_checkpoints",
)
"""Configuration keys (dotted, or prefixes ending in ``.``) a resumed run may change: how fast and how it
trains and reports, not what it learns from or is scored on. Any other change is refused."""


class ResumeError(Exception):
    """A run directory or resume that would lose or mix up runs; the message is one sentence."""


@dataclass
class Claim:
    """This process's hold on a run directory (see :func:`claim`); :meth:`release` ends it."""

    path: Path
    file: TextIO | None

    def release(self) -> None:
        if self.file is not None:
            _HELD.pop(self.path, None)
            self.file.close()
            self.file = None


_HELD: dict[Path, Claim] = {}
"""The run directories this process holds: building a run twice in one process (tests, notebooks) reuses the claim."""


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """The checkpoint files of a run directory's ``checkpoints/``."""
    folder = Path(output_dir) / "checkpoints"
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def claim(output_dir: str | Path, resuming_from: str | None, rank: int = 0) -> Claim:
    """Take ``output_dir`` for this run; raises :class:`ResumeError` when another process trains into it, or when
    it holds checkpoints and this run does not continue from one of them (``resuming_from``). Only rank 0 locks
    (every DDP rank runs this)."""
    path = Path(output_dir).resolve()
    held = _HELD.get(path)
    if held is None and rank == 0:
        held = Claim(path, _lock(path))
        if held.file is not None:
            _HELD[path] = held
    held = held or Claim(path, None)
    existing = checkpoints_in(path)
    inside = resuming_from is not None and Path(resuming_from).resolve().parent == path / "checkpoints"
    if existing and not inside:
        held.release()
        names = ", ".join(p.name for p in existing)
        how = (
            f"ckpt_path={resuming_from} would overwrite them"
            if resuming_from
            else "a fresh start would overwrite them"
        )
        raise ResumeError(
            f"paths.output_dir={path} already holds checkpoints ({names}) of an earlier run and {how}; continue "
            "that run with ckpt_path=auto, or give a new hydra.run.dir"
        )
    return held


def _lock(path: Path) -> TextIO | None:
    """An exclusive advisory lock on ``path/.pdestream.lock`` (``None`` where the file system has no locks)."""
    path.mkdir(parents=True, exist_ok=True)
    file = open(path / LOCK, "a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise ResumeError(
                f"paths.output_dir={path} is in use by another training run (process {holder}); wait for it, "
                "or give another hydra.run.dir"
            ) from None
        log.debug("%s: no file locks on this file system (%s)", path, error)
        return None
    file.truncate(0)
    file.write(f"{os.getpid()} on {os.uname().nodename}\n")
    file.flush()
    return file


def resume_source(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint to resume from. ``auto``: the run directory's newest intact checkpoint (a damaged
    ``last.ckpt`` is skipped with a notice), ``None`` when it has none; a path must be a file."""
    if ckpt_path != "auto":
        if ckpt_path is not None and not Path(ckpt_path).is_file():
            raise ResumeError(
                f"ckpt_path={ckpt_path}: no such checkpoint file (give a .ckpt file, auto or null)"
            )
        return ckpt_path
    folder = Path(output_dir) / "checkpoints"
    found = sorted(
        (p for p in (folder / name for name in CANDIDATES) if p.is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    damaged = []
    for path in found:
        try:
            read_checkpoint(path)
        except CheckpointError as error:
            damaged.append(f"{path.name} ({error})")
            continue
        if damaged:
            log.warning("ckpt_path=auto: skipping %s; resuming from %s", "; ".join(damaged), path)
        return str(path)
    if damaged:
        raise ResumeError(
            f"ckpt_path=auto: no intact checkpoint in {folder}: {'; '.join(damaged)}; start a new run directory"
        )
    return None


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flat(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: node}


def changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs between two configurations: ``{key: (stored, current)}``
    (``<absent>`` for a key one of them lacks)."""
    old, new = _flat(stored), _flat(current)
    absent = "<absent>"
    return {
        k: (old.get(k, absent), new.get(k, absent))
        for k in sorted(old.keys() | new.keys())
        if old.get(k, absent) != new.get(k, absent)
    }


def check_resume(path: str, stored: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse a resume whose configuration would make it another run; log the changes it may make."""
    differ = changes(stored, current)
    allowed = {k: v for k, v in differ.items() if k.startswith(MAY_CHANGE) or f"{k}." in MAY_CHANGE}
    # the data config's copy of the PDE (data.pde) after the PDE's own keys
    refused = sorted((k for k in differ if k not in allowed), key=lambda k: (k.startswith("data.pde."), k))
    if refused:
        key = refused[0]
        was, now = differ[key]
        more = (
            f" (and {len(refused) - 1} more: {', '.join(refused[1:4])}{' …' if len(refused) > 4 else ''})"
            if len(refused) > 1
            else ""
        )
        raise ResumeError(
            f"ckpt_path={path} was trained with {key}={was!r} but this run has {key}={now!r}{more}; a resume must "
            "keep the PDE, its parameters, the data's shape and validation set, the model, its objective and the "
            "seed: resume with the checkpoint's settings, or start a new run from scratch"
        )
    if allowed:
        log.info(
            "resuming with changes: %s",
            ", ".join(f"{k} {was!r} → {now!r}" for k, (was, now) in allowed.items()),
        )
