"""What the command-line entry points share: checks before Hydra starts, writable directories, the exit on bad input.

``train.py``, ``evaluate.py`` and ``python -m data.generate`` refuse bad input with one sentence and exit
status 2 (:mod:`solvers.errors` defines the error class and the exit codes). Hydra itself reports an unknown
group option, or a run directory it cannot create, with several lines and status 1 (and submitit a SLURM sweep
off a cluster with a traceback), so :func:`check_command_line` looks at those overrides before Hydra starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from solvers.errors import EXIT_BAD_INPUT, ConfigError

RUN_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def require_writable(path: str | Path, key: str) -> Path:
    """Create directory ``path`` if needed and check that a file can be written there.

    Raises :class:`ConfigError` naming ``key`` otherwise (checked at start-up, before expensive work).
    """
    path = Path(path)
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"{key}={str(path)!r} is not a writable directory ({error.strerror or error}); "
            "give a directory this process can create and write"
        ) from None
    return path


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a temporary file beside it (same file system), which is
    flushed to the disk (fsync) and renamed onto ``path``, then the directory entry is flushed too. On any error
    the temporary file is removed and the error raised; ``path`` then holds what it held before."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _static_prefix(value: str) -> str:
    """The part of a path before its first interpolation, cut at a path separator."""
    if "${" not in value:
        return value
    head = value.split("${", 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def check_command_line(argv: Sequence[str], conf_dir: Path, config_name: str) -> None:
    """Refuse unknown options of config groups, unknown keys, unwritable run directories and a SLURM multirun
    off a cluster among the overrides.

    Raises :class:`ConfigError` with one sentence; flags and overrides Hydra understands otherwise are
    left to Hydra.
    """
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    values = {}
    for override in overrides:
        key, value = override.split("=", 1)
        key = key.lstrip("+~").split("@", 1)[0]
        values[key] = value
        group = conf_dir / key
        if key.startswith("hydra/") or not group.is_dir() or "(" in value:
            continue
        allowed = sorted(p.stem for p in group.glob("*.yaml"))
        for option in value.split(","):
            if option.strip() not in ("null", "") and option.strip() not in allowed:
                raise ConfigError(
                    f"{key}={option.strip()} is not an option of the {key} group; allowed: {', '.join(allowed)}"
                )
    _check_keys(overrides, conf_dir, config_name)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun and values.get("hydra/launcher") == "slurm" and shutil.which("srun") is None:
        raise ConfigError(
            "hydra/launcher=slurm submits the jobs to a SLURM cluster, but this machine has no srun command; "
            "run it on the cluster's login node, or leave hydra/launcher out to run the jobs here one by one"
        )
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / f"{config_name}.yaml"), resolve=False)
    key = RUN_DIR_KEYS[1] if multirun else RUN_DIR_KEYS[0]
    run_dir = values.get(key, defaults.get("hydra", {}).get(key.split(".")[1], {}).get("dir"))
    if key in values:  # the value as Hydra reads it: 'hydra.run.dir="/a b"' is /a b, not "/a b"
        run_dir = _parsed_value(f"{key}={values[key]}", run_dir)
    if isinstance(run_dir, str) and _static_prefix(run_dir):
        require_writable(_static_prefix(run_dir), key)


def _parsed_value(override: str, raw: str) -> object:
    """The value of ``override`` as Hydra's override grammar reads it (quotes removed); ``raw`` where the grammar
    refuses it (Hydra then reports the error itself)."""
    try:
        return OverridesParser.create().parse_override(override).value()
    except HydraException:
        return raw


def _check_keys(overrides: Sequence[str], conf_dir: Path, config_name: str) -> None:
    """Refuse an override of a key the composed configuration lacks (``data.nosuchkey=1``: Hydra's error is
    several lines) and a ``+key=…`` that adds a top-level key nothing reads; the configuration is composed
    (with the overrides' group choices) only when there are such overrides to look at."""
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    keyed = []
    for override in overrides:
        key = override.split("=", 1)[0]
        name = key.lstrip("+~")
        if key.startswith(("~", "++")) or name.startswith("hydra") or name.split("@", 1)[0] in groups:
            continue
        keyed.append((override, key, name))
    if not keyed:
        return
    from hydra import compose, initialize_config_dir

    choices = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@", 1)[0] in groups]
    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
        cfg = compose(config_name, overrides=[o.split(",", 1)[0] for o in choices])  # a sweep's first option
    for override, key, name in keyed:
        parent, _, leaf = name.rpartition(".")
        node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
        if key.startswith("+"):
            if not parent:
                known = ", ".join(k for k in cfg if k not in groups)
                raise ConfigError(
                    f"{override} adds a top-level key that nothing reads; the top-level settings are: {known}"
                )
            continue
        if not OmegaConf.is_dict(node) or leaf not in node.keys():
            where = f"{parent} has" if parent else "the top level has"
            known = ", ".join(node) if OmegaConf.is_dict(node) else "no such node"
            raise ConfigError(f"{override}: no such setting; {where}: {known}")


def exit_bad_input(what: str, error: BaseException) -> None:
    """Log ``what: error`` as one line and exit with status 2."""
    logging.getLogger(what.split()[0]).error("%s: %s", what, error)
    sys.exit(EXIT_BAD_INPUT)


def guard_command_line(conf_dir: Path, config_name: str, what: str) -> None:
    """:func:`check_command_line` on ``sys.argv``; a bad override ends the process with status 2."""
    try:
        check_command_line(sys.argv[1:], conf_dir, config_name)
    except ConfigError as error:
        logging.basicConfig(format="%(message)s")
        exit_bad_input(what, error)
