"""Classical PDE solvers in plain torch: batched, device- and dtype-agnostic (see ARCHITECTURE.md)."""

from solvers.base import DivergenceError, Solver
from solvers.burgers import Burgers
from solvers.errors import ConfigError
from solvers.external import External
from solvers.ks import KuramotoSivashinsky
from solvers.navier_stokes import NavierStokes2D

__all__ = [
    "Burgers",
    "ConfigError",
    "DivergenceError",
    "External",
    "KuramotoSivashinsky",
    "NavierStokes2D",
    "Solver",
]
