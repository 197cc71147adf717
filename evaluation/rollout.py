"""Autoregressive rollouts of any one-step predictor over trajectories ``[B, T, C, *S]``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Predictor = Callable[[Tensor], Tensor]
"""Maps the last ``T_in`` frames ``[B, T_in, C, *S]`` to the next ``T_out`` frames ``[B, T_out, C, *S]``."""


@torch.no_grad()
def rollout(predict: Predictor, history: Tensor, steps: int) -> Tensor:
    """Apply ``predict`` ``steps`` times, feeding predictions back; returns ``[B, steps·T_out, C, *S]``."""
    if steps < 1:
        raise ValueError(f"rollout needs steps >= 1, got {steps}")
    window, frames = history, []
    for _ in range(steps):
        nxt = predict(window)
        frames.append(nxt)
        window = torch.cat([window, nxt], dim=1)[:, -history.shape[1] :]
    return torch.cat(frames, dim=1)


def rollout_steps(frames: int, time_history: int, time_future: int) -> int:
    """How many predictor calls fit into a trajectory of ``frames`` after the history."""
    steps = (frames - time_history) // time_future
    if steps < 1:
        raise ValueError(
            f"a trajectory of {frames} frames is too short for time_history={time_history} "
            f"and time_future={time_future}"
        )
    return steps
