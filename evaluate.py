"""Evaluate trained surrogates: ``python evaluate.py 'checkpoints=[<run dir or .ckpt>, ...]' [test_path=…] …``.

Writes ``metrics.nc``, figures, ``report.md`` and ``report.html`` into the run directory; see
``conf/evaluate.yaml`` for the options and ``training/pipeline.py`` for what is measured.
"""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from data.cli import guard_command_line
from solvers.errors import EXIT_BAD_INPUT
from training.checkpoint import EvaluationError
from training.pipeline import evaluate
from training.run import register_resolvers

register_resolvers()


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    log = logging.getLogger("evaluate")
    try:
        out = evaluate(cfg)
    except EvaluationError as error:
        log.error("evaluation error: %s", error)
        sys.exit(EXIT_BAD_INPUT)
    log.info("report: %s", out / "report.html")


if __name__ == "__main__":
    guard_command_line(Path(__file__).parent / "conf", "evaluate", "evaluation error")
    main()
