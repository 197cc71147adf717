"""Progress of long stages that print nothing else (generating data sets, filling the replay buffer).

On a terminal a tqdm bar; otherwise (SLURM output files, ``nohup``, CI logs) plain lines through the
``pdestream`` logger — one when the stage starts, then at most one every ``every_s`` seconds, and one
when it ends — which reach ``train.log`` like every other log line of a run.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("pdestream")


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts ``done`` of ``total`` ``unit`` for the stage ``what``; see the module docstring.

    Args:
        enabled: ``False`` shows nothing.
        every_s: least seconds between two plain lines.
        stream: where a terminal bar is drawn; its ``isatty()`` picks bar or lines.
    """

    def __init__(
        self,
        total: int,
        what: str,
        unit: str,
        enabled: bool = True,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        done: int = 0,
    ) -> None:
        stream = stream or sys.stderr
        self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
        self.done, self._first, self.start = done, done, time.monotonic()
        self.lines = enabled and not stream.isatty()
        self.bar = tqdm(
            total=total, initial=done, desc=what, unit=unit, file=stream, disable=self.lines or not enabled
        )
        self._last = self.start
        if self.lines:
            log.info("%s: %d %s to go", what, total - done, unit)

    def update_to(self, done: int) -> None:
        """Note that ``done`` of ``total`` are done."""
        self.bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if self.lines and now - self._last >= self.every_s and done < self.total:
            self._last = now
            rate = (done - self._first) / (now - self.start) if now > self.start else 0.0
            eta = f", about {duration((self.total - done) / rate)} left" if rate > 0 else ""
            log.info(
                "%s: %d/%d %s (%s elapsed%s)",
                self.what,
                done,
                self.total,
                self.unit,
                duration(now - self.start),
                eta,
            )

    def close(self) -> None:
        self.bar.close()
        if self.lines:
            log.info(
                "%s: done, %d %s in %s",
                self.what,
                self.done,
                self.unit,
                duration(time.monotonic() - self.start),
            )
