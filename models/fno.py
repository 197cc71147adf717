"""Fourier Neural Operator (Li, Kovachki, Azizzadenesheli et al., "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR 2021).

``x → lift → [SpectralConv + 1×1 skip → (BatchNorm) → (scale/shift) → σ] × n_layers → projection MLP``.

The lifting and the projection act pointwise; every Fourier layer sums a truncated spectral convolution
(``layers.SpectralConv``, ``modes`` per axis) and a pointwise linear skip ``W h``. As in the reference
implementation, the last Fourier layer has no activation. Two versions of the reference code are presets:
the network of the ICLR 2021 paper (``fourier_1d.py`` as of October 2020: BatchNorm after every Fourier
layer, ReLU, coordinates ``linspace(0, 2π, n)``) and the current one (no normalisation, GELU, coordinates
``linspace(0, 1, n)``). Periodic data need no padding and make the
network exactly equivariant to shifts by any whole number of cells (without ``grid`` channels);
non-periodic data are zero-padded by a fraction ``padding`` of each axis before the Fourier layers and
cropped afterwards, so that the FFT's implied periodicity does not tie the two boundaries together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import SurrogateNet
from models.layers import FourierEmbedding, SpectralConv, check_modes, pointwise_nd

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}
NORMS = ("none", "batch")


class FNO(SurrogateNet):
    """FNO on 1D or 2D grids, optionally conditioned on PDE parameters and the time step.

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        modes: Fourier modes kept per axis (one int for all axes, or one per axis); the leading 2D axis
            keeps ``modes`` positive and ``modes`` negative wavenumbers.
        width: channels of the Fourier layers.
        n_layers: number of Fourier layers.
        projection: hidden channels of the pointwise projection MLP.
        grid: append the coordinates ``linspace(0, grid_extent, n)`` of each axis as input channels, as the
            reference code does (the ends included; breaks translation equivariance).
        grid_extent: the last coordinate of those channels (1 in the current reference code, ``2π`` in the
            ICLR 2021 version of ``fourier_1d.py``).
        grid_endpoint: ``True`` (the reference's ``linspace``): cell ``i`` of ``n`` has coordinate
            ``i / (n − 1) · grid_extent``; ``False``: ``i / n · grid_extent``, the periodic cells' positions
            (the far end, which repeats the first cell, left out).
        activation: ``gelu`` (current reference code) or ``relu`` (the ICLR 2021 paper), after every Fourier
            layer but the last and inside the projection.
        norm: ``none`` or ``batch``: BatchNorm of the sum of every Fourier layer (the ICLR 2021 paper's
            networks; removed from the reference code in January 2021).
        padding: zero-padding fraction per axis for non-periodic data (``periodic=False`` only).
        periodic: the data are periodic; then ``padding`` must be 0.
        emb_dim: size of the conditioning embedding (used when ``cond_dim > 0``); each Fourier layer
            turns it into a per-channel scale and shift, ``h ← h · (1 + s) + b``.
        n: grid size (one int for all axes, or one per axis), if known: the ``modes`` are then checked
            against the grid at construction instead of at the first forward.
    """

    def __init__(
        self,
        ndim: int,
        channels: int,
        time_history: int,
        time_future: int,
        cond_dim: int = 0,
        modes: int | Sequence[int] = 16,
        width: int = 64,
        n_layers: int = 4,
        projection: int = 128,
        grid: bool = False,
        padding: float = 0.0,
        periodic: bool = True,
        emb_dim: int = 64,
        n: int | Sequence[int] | None = None,
        grid_extent: float = 1.0,
        grid_endpoint: bool = True,
        activation: str = "gelu",
        norm: str = "none",
    ) -> None:
        super().__init__(ndim, channels, time_history, time_future, cond_dim)
        for name, value in (("width", width), ("n_layers", n_layers), ("projection", projection)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FNO: {name}={value!r} must be an int >= 1")
        if not 0.0 <= padding < 1.0:
            raise ValueError(f"FNO: padding={padding!r} must be a fraction in [0, 1)")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"FNO: activation={activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}"
            )
        if norm not in NORMS:
            raise ValueError(f"FNO: norm={norm!r} is not allowed; allowed: {', '.join(NORMS)}")
        if not grid_extent > 0:
            raise ValueError(f"FNO: grid_extent={grid_extent!r} must be > 0")
        if periodic and padding:
            raise ValueError(
                f"FNO: padding={padding} is for non-periodic data; set periodic=False or padding=0"
            )
        self.modes = (modes,) * ndim if isinstance(modes, int) else tuple(modes)
        self.grid, self.padding, self.grid_extent = grid, padding, float(grid_extent)
        if not isinstance(grid_endpoint, bool):
            raise ValueError(f"FNO: grid_endpoint={grid_endpoint!r}; allowed: true, false")
        self.grid_endpoint = grid_endpoint
        activation_class = ACTIVATIONS[activation]
        self.act = activation_class()
        if n is not None:
            sizes = (n,) * ndim if isinstance(n, int) else tuple(n)
            check_modes(self.modes, tuple(self._padded(s) for s in sizes), "FNO")
        conv = pointwise_nd(ndim)
        self.lift = conv(self.in_features + (ndim if grid else 0), width)
        self.spectral = nn.ModuleList(SpectralConv(width, width, self.modes, ndim) for _ in range(n_layers))
        self.pointwise = nn.ModuleList(conv(width, width) for _ in range(n_layers))
        batch_norm = (nn.BatchNorm1d, nn.BatchNorm2d)[ndim - 1]
        self.norms = nn.ModuleList(batch_norm(width) for _ in range(n_layers)) if norm == "batch" else None
        self.embed = FourierEmbedding(cond_dim, emb_dim) if cond_dim else None
        self.film = (
            nn.ModuleList(nn.Linear(emb_dim, 2 * width) for _ in range(n_layers)) if cond_dim else None
        )
        self.project = nn.Sequential(
            conv(width, projection), activation_class(), conv(projection, self.out_features)
        )

    def _padded(self, size: int) -> int:
        return size + math.ceil(self.padding * size)

    def _coordinates(self, x: Tensor) -> Tensor:
        """``[B, ndim, *S]`` coordinates per axis: ``linspace(0, grid_extent, n)`` (the reference code's), or
        ``i / n · grid_extent`` without ``grid_endpoint``."""
        kw = {"device": x.device, "dtype": x.dtype}
        axes = [
            torch.linspace(0, self.grid_extent, n, **kw)
            if self.grid_endpoint
            else torch.arange(n, **kw) * (self.grid_extent / n)
            for n in x.shape[2:]
        ]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        return coords.expand(x.shape[0], *coords.shape)

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        spatial = tuple(x.shape[2:])
        check_modes(self.modes, tuple(self._padded(s) for s in spatial), "FNO")
        if self.grid:
            x = torch.cat([x, self._coordinates(x)], dim=1)
        h = self.lift(x)
        if self.padding:
            pad = [p for s in reversed(spatial) for p in (0, self._padded(s) - s)]
            h = F.pad(h, pad)
        emb = self.embed(cond) if self.embed is not None and cond is not None else None
        last = len(self.spectral) - 1
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = spectral(h) + skip(h)
            if self.norms is not None:
                h = self.norms[i](h)
            if emb is not None and self.film is not None:
                scale, shift = self.film[i](emb).reshape(emb.shape[0], -1, *([1] * self.ndim)).chunk(2, dim=1)
                h = h * (1 + scale) + shift
            if i < last:
                h = self.act(h)
        if self.padding:
            h = h[(..., *(slice(0, s) for s in spatial))]
        return self.project(h)
