"""What a run is about to do, said before it starts: its steps, a lower bound on their time on this machine,
and the cost of each validation; and a warning, with the override that shortens it, when that is hours.

The network's share of a training step is measured here, on a copy of the network (the run's weights,
gradients and random state are untouched): a forward and backward pass over one training batch on the
device the run trains on. Data generation comes on top, so the figure is a lower bound ("at least").
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from data.progress import duration
from evaluation.rollout import rollout_steps
from training.module import SurrogateModule

log = logging.getLogger("pdestream")

LONG_RUN_S = 3600.0
"""A run whose training alone (the lower bound) would take this long or longer is announced with a warning."""

SHORT_RUN_S = 600.0
"""The length of the shorter run the warning suggests (its ``trainer.max_steps``)."""


@dataclass
class Plan:
    """A run's size and the measured cost of its parts on this machine (seconds)."""

    steps: int
    batch_size: int
    device: str
    step_s: float  # the network's forward and backward pass over one training batch
    val_trajectories: int
    val_steps: int  # rollout steps of a validation trajectory
    val_s: float  # one validation: every validation rollout

    @property
    def train_s(self) -> float:
        return self.steps * self.step_s

    def suggested_steps(self) -> int:
        """``trainer.max_steps`` for a run whose training takes about :data:`SHORT_RUN_S` here (a round number)."""
        steps = max(1, int(SHORT_RUN_S / self.step_s)) if self.step_s > 0 else self.steps
        scale = 10 ** max(0, int(math.log10(steps)) - 1)
        return max(1, steps // scale * scale)


def about(seconds: float, word: str = "about") -> str:
    """``"<word> <duration>"``, or "under 1 s"."""
    return "under 1 s" if seconds < 1 else f"{word} {duration(seconds)}"


def _seconds(fn: Callable[[], object], device: torch.device, repeats: int = 2) -> float:
    """Wall time of the last of ``repeats`` calls of ``fn`` (the first pays for allocation and caches)."""
    took = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took = time.perf_counter() - start
    return took


def measure(
    module: SurrogateModule, val: dict, steps: int, batch_size: int, unroll_steps: int, device: torch.device
) -> Plan:
    """Time a copy of ``module`` on validation frames shaped as a training batch (its training objective,
    forward and backward, times ``1 + unroll_steps``) and as a validation batch (one rollout step, times the
    rollout's steps and batches); ``val`` is the validation set (:meth:`data.datamodule.trajectories`)."""
    twin = copy.deepcopy(module).to(device)
    t_in, t_out = twin.net.time_history, twin.net.time_future
    u = val["u"]
    count = len(u)

    def batch(size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        rows = torch.arange(size) % count
        x = u[rows, :t_in].to(device=device, dtype=torch.float32)
        params = {k: v[rows].to(device=device, dtype=torch.float32) for k, v in val["params"].items()}
        return x, params, torch.full((size,), float(val["grid"].dt_out), device=device)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        x, params, dt = batch(batch_size)

        cond = twin.normalizer.cond(params, dt)
        target = x[:, -1:].expand(-1, t_out, *x.shape[2:])

        def train_step() -> None:  # the module's own training objective (PDE-Refiner: its denoising loss)
            twin.objective(x, target, cond)[0].mean().backward()

        step_s = _seconds(train_step, device) * (1 + unroll_steps)
        size = min(batch_size, count)
        vx, vparams, vdt = batch(size)
        with torch.no_grad():
            forward_s = _seconds(lambda: twin(vx, vparams, vdt), device)
    val_steps = rollout_steps(u.shape[1], t_in, t_out)
    val_s = forward_s * val_steps * math.ceil(count / size)
    return Plan(steps, batch_size, device.type, step_s, count, val_steps, val_s)


def announce(plan: Plan, val_every: int | float | None) -> None:
    """Log the plan in one line and, when training alone would take :data:`LONG_RUN_S` or more, one warning
    naming the steps, the time and the override that shortens the run; nothing when no step is left to train."""
    if plan.steps == 0:
        return
    every = f"every {val_every} steps" if isinstance(val_every, int) else "at the validation interval"
    log.info(
        "plan: %d training steps of %d samples on %s; the network alone takes %.3g s per step here, so "
        "training takes %s (plus data generation); each validation (%s: %d rollouts of %d steps) %s",
        plan.steps,
        plan.batch_size,
        plan.device,
        plan.step_s,
        about(plan.train_s, "at least"),
        every,
        plan.val_trajectories,
        plan.val_steps,
        about(plan.val_s),
    )
    if plan.train_s >= LONG_RUN_S:
        log.warning(
            "this run is long on this machine: %d steps take at least %s on %s; for about %s of training "
            "give trainer.max_steps=%d",
            plan.steps,
            duration(plan.train_s),
            plan.device,
            duration(SHORT_RUN_S),
            plan.suggested_steps(),
        )
