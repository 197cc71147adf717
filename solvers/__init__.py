"""Classical PDE solvers in plain torch: batched, device- and dtype-agnostic (see ARCHITECTURE.md)."""

from solvers.base import ConfigError, DivergenceError, Solver

__all__ = ["ConfigError", "DivergenceError", "Solver"]
