"""Where the training stream draws PDE parameters: uniformly over their ranges, or where the model is weak.

A :class:`ParameterSampler` cuts the unit cube of the varying parameters (each range mapped to [0, 1],
logarithmically for a log range) into ``bins`` cells per parameter and keeps a probability per cell.
A trajectory's parameters are drawn by the Rosenblatt transform of the piecewise-constant density: the
same uniform numbers that :meth:`solvers.base.ParamSpec.sample` would use (one per varying parameter,
in the solver's parameter order, from the trajectory's own generator) are mapped through the inverse
CDF of the first parameter's marginal, then of each next parameter's conditional. With equal cell
probabilities the map is the identity (``sampling=uniform`` draws with the solver's own code, bit for
bit), and the initial conditions, drawn next from the same generator, never depend on the sampler.

``sampling=adaptive`` moves the mass toward cells where the training loss is high, in the spirit of
Breed, the active-learning method of the Melissa online-training framework (training-loss statistics
steer the sampling of simulation parameters), and of AL4PDE (Musekamp et al., ICLR 2025, active
learning for neural PDE solvers): the per-sample training losses are binned by their trajectory's
parameters; every ``update`` (the same training step on every rank) merges the bins' sums over DDP
ranks, folds them into an exponential moving average per cell, and sets

    p(cell) = (1 - mix) * L(cell)^(1/temperature) / sum L^(1/temperature) + mix / cells,

where cells without an estimate yet count with the largest estimate (they get explored first). The
``mix`` share of uniform sampling keeps every region visited. ``signal`` says what ``L`` averages:
``loss``, the training loss itself, or ``relative``, each sample's loss divided by the mean square of
its (normalised) target, the relative squared error that the rollout metrics (relative L2) report. With
the loss, a region whose solutions are simply larger (Burgers at small ν keeps its shocks, at large ν
the field decays) draws mass for its scale rather than for a weak model; the relative signal does not.
The state (cell estimates, pending sums, signal) is part of the checkpoint, so a resumed run draws the
same parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from solvers.base import ParamSpec
from solvers.errors import ConfigError, check_choice, check_int, check_number

SAMPLINGS = ("uniform", "adaptive")
SIGNALS = ("relative", "loss")
ADAPTIVE_KEYS = ("bins", "mix", "temperature", "memory", "signal")
"""The settings of ``data.adaptive`` (:class:`ParameterSampler`'s keyword arguments)."""


class ParameterSampler:
    """Draws each new trajectory's PDE parameters; counts the draws per cell (the histogram that is logged).

    Args:
        specs: the solver's parameters (``solver.params``), in the solver's order.
        mode: ``"uniform"`` (the solver's own distribution) or ``"adaptive"`` (follows the training loss).
        bins: cells per varying parameter.
        mix: share of uniform sampling in the adaptive distribution, in (0, 1].
        temperature: > 0; the loss is raised to ``1/temperature`` (large: flatter, small: greedier).
        memory: weight of a cell's previous loss estimate at each update, in [0, 1).
        signal: ``"relative"`` (loss over the target's mean square) or ``"loss"``: what a cell's estimate averages.
    """

    def __init__(
        self,
        specs: Mapping[str, ParamSpec],
        mode: str = "uniform",
        bins: int = 8,
        mix: float = 0.2,
        temperature: float = 1.0,
        memory: float = 0.99,
        signal: str = "relative",
    ) -> None:
        check_choice("data.sampling", mode, SAMPLINGS)
        self.specs = dict(specs)
        self.varying = [name for name, spec in self.specs.items() if not spec.fixed]
        if mode == "adaptive" and not self.varying:
            raise ConfigError(
                "data.sampling=adaptive needs a PDE parameter given as a range ([low, high]); "
                f"every parameter of this pde is fixed ({', '.join(self.specs) or 'it has none'})"
            )
        check_int("data.adaptive.bins", bins, 1)
        check_number("data.adaptive.mix", mix, 0, 1, low_open=True)
        check_number("data.adaptive.temperature", temperature, 0, low_open=True)
        check_number("data.adaptive.memory", memory, 0, 1, high_open=True)
        check_choice("data.adaptive.signal", signal, SIGNALS)
        self.mode, self.bins, self.signal = mode, bins, signal
        self.mix, self.temperature, self.memory = float(mix), float(temperature), float(memory)
        cells = bins ** len(self.varying)
        self.loss = torch.full((cells,), math.nan, dtype=torch.float64)  # moving average per cell
        self.pending = torch.zeros(2, cells, dtype=torch.float64)  # loss sums, counts since the last update
        self.drawn = torch.zeros(cells, dtype=torch.float64)  # trajectories drawn per cell
        # shared memory: DataLoader workers (generation=cpu) draw from the training process's latest update
        self.probs = torch.full((cells,), 1.0 / cells, dtype=torch.float64).share_memory_()

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.bins,) * len(self.varying)

    # ----------------------------------------------------------------- drawing
    def draw(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One trajectory's parameters (float64 ``[1]`` each), consuming ``generator`` as the solver would."""
        if self.mode == "uniform":  # the solver's own draw, bit for bit
            out = {name: spec.sample(1, generator) for name, spec in self.specs.items()}
            self.drawn[self.cells_of(out)] += 1
            return out
        out = {name: torch.full((1,), spec.low, dtype=torch.float64) for name, spec in self.specs.items()}
        density = self.probs.reshape(self.shape) if self.varying else self.probs
        cell = []
        for name in self.specs:
            if name not in self.varying:
                continue
            u = float(torch.rand(1, generator=generator, dtype=torch.float64))
            # marginal of this parameter given the cells already chosen for the previous ones
            marginal = density.reshape(self.bins, -1).sum(1)
            index, position = _inverse_cdf(marginal, u)
            cell.append(index)
            density = density[index]
            out[name] = self.specs[name].from_unit(
                torch.tensor([(index + position) / self.bins], dtype=torch.float64)
            )
        self.drawn[self._flat(cell)] += 1
        return out

    def skip(self, generator: torch.Generator) -> None:
        """Consume ``generator`` as :meth:`draw` does (one number per varying parameter), drawing nothing."""
        for _ in self.varying:
            torch.rand(1, generator=generator, dtype=torch.float64)

    def cells_of(self, params: Mapping[str, Tensor]) -> Tensor:
        """The flat cell index ``[B]`` of each trajectory's parameters."""
        index = torch.zeros(len(next(iter(params.values()))) if params else 0, dtype=torch.long)
        for name in self.varying:
            unit = self.specs[name].to_unit(params[name].detach().cpu())
            index = index * self.bins + (unit * self.bins).floor().long().clamp(0, self.bins - 1)
        return index

    def _flat(self, cell: list[int]) -> int:
        index = 0
        for i in cell:
            index = index * self.bins + i
        return index

    # ----------------------------------------------------------------- learning where the model is weak
    def record(self, params: Mapping[str, Tensor], losses: Tensor, energy: Tensor) -> None:
        """Add per-sample training losses ``[B]`` of windows with parameters ``params`` ``{name: [B]}`` and
        targets of mean square ``energy`` ``[B]`` (in the loss's units; used by ``signal="relative"``)."""
        if self.mode != "adaptive":
            return
        cells = self.cells_of(params)
        values = losses.detach().double().cpu()
        if self.signal == "relative":
            values = values / energy.detach().double().cpu().clamp_min(1e-12)
        self.pending[0].index_add_(0, cells, values)
        self.pending[1].index_add_(0, cells, torch.ones_like(values))

    def update(self) -> None:
        """Fold the pending losses (summed over DDP ranks) into the cell estimates; recompute the probabilities.

        Every rank must call it at the same training step (it is a collective under DDP).
        """
        if self.mode != "adaptive":
            return
        pending = self.pending.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(pending)
        sums, counts = pending
        seen = counts > 0
        mean = sums[seen] / counts[seen]
        old = self.loss[seen]
        self.loss[seen] = torch.where(old.isnan(), mean, self.memory * old + (1 - self.memory) * mean)
        self.pending.zero_()
        self.probs.copy_(self.probabilities())

    def probabilities(self) -> Tensor:
        """The adaptive distribution over cells from the current estimates (uniform before any estimate)."""
        cells = len(self.loss)
        known = ~self.loss.isnan()
        if not bool(known.any()):
            return torch.full((cells,), 1.0 / cells, dtype=torch.float64)
        loss = torch.where(known, self.loss, self.loss[known].max()).clamp_min(0)
        weight = (loss / loss.max().clamp_min(1e-300)) ** (1 / self.temperature)
        total = weight.sum()
        focus = weight / total if total > 0 else torch.full_like(weight, 1.0 / cells)
        return (1 - self.mix) * focus + self.mix / cells

    def cell_labels(self) -> list[str]:
        """A name per cell, e.g. ``nu=0.5-0.625`` (joined by ``,`` for several varying parameters)."""
        edges = {name: self.cell_edges(name).tolist() for name in self.varying}
        labels = [""]
        for name in self.varying:
            e = edges[name]
            labels = [
                f"{prefix}{',' if prefix else ''}{name}={e[i]:.3g}-{e[i + 1]:.3g}"
                for prefix in labels
                for i in range(self.bins)
            ]
        return labels

    def cell_edges(self, name: str) -> Tensor:
        """The ``bins + 1`` cell edges of parameter ``name`` in its own units."""
        return self.specs[name].from_unit(torch.linspace(0, 1, self.bins + 1, dtype=torch.float64))

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The learned distribution (the same on every rank); the draw counts are the stream shards' own."""
        return {
            "mode": self.mode,
            "bins": self.bins,
            "signal": self.signal,
            "loss": self.loss.clone(),
            "pending": self.pending.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = (state.get("mode"), state.get("bins"), state.get("signal", "loss"))  # older states: the loss
        if saved != (self.mode, self.bins, self.signal):
            raise ConfigError(
                f"the checkpoint's parameter sampler (sampling={saved[0]!r}, bins={saved[1]!r}, "
                f"signal={saved[2]!r}) differs from this run's (sampling={self.mode!r}, bins={self.bins}, "
                f"signal={self.signal!r}); resume with the same data.sampling and data.adaptive settings"
            )
        self.loss, self.pending = (state[k].clone().double() for k in ("loss", "pending"))
        self.probs.copy_(self.probabilities())


def _inverse_cdf(masses: Tensor, u: float) -> tuple[int, float]:
    """Cell index and position in [0, 1) within it of quantile ``u`` of a piecewise-constant density.

    Every mass is positive (``mix > 0``), so every cell has a width in the cumulative distribution.
    """
    cumulative = torch.cumsum(masses / masses.sum(), 0)
    index = int(torch.searchsorted(cumulative, torch.tensor([u], dtype=cumulative.dtype), right=True))
    index = min(index, len(masses) - 1)
    start = float(cumulative[index - 1]) if index > 0 else 0.0
    width = float(cumulative[index]) - start
    return index, min(max((u - start) / width, 0.0), math.nextafter(1.0, 0.0))
