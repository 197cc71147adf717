"""SineNet: a chain of U-shaped "waves" for time-dependent PDEs.

Zhang, Xu, Yu, Ji et al., "SineNet: Learning Temporal Dynamics in Time-Dependent PDEs", ICLR 2024
(reference implementation: divelab/AIRS, OpenPDE/SineNet). The input frames are lifted to ``hidden``
channels, then ``waves`` U-Nets run one after another, each adding its output to its input
(``x_{k+1} = x_k + V_k(x_k)``), so that every wave only has to advance the latent state by a fraction of
the time step; a final convolution reads out the future frames.

Inside a wave, level ``l = 1 … levels`` works at resolution ``n / 2**l`` with ``int(hidden * mult**l)``
channels. Disentangled multi-scale processing: the wave's own input ``x_k``, average-pooled to each
level's resolution, is concatenated to the encoder features at every level below the first, so the
coarse levels see the current state directly and not only through the features of the level above.
The decoder up-samples by cubic interpolation and concatenates the encoder skip connection.

Periodic domains (``periodic=True``): circular padding in every convolution and circular cubic
interpolation, which makes the network exactly equivariant to periodic shifts by multiples of
``2**levels`` grid cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import SurrogateNet
from models.layers import FourierEmbedding, ResidualBlock, conv_nd


def downsample(x: Tensor) -> Tensor:
    """Average pooling by 2 along every spatial axis of ``[B, C, *S]`` (1D or 2D)."""
    return F.avg_pool1d(x, 2) if x.ndim == 3 else F.avg_pool2d(x, 2)


# Keys' cubic convolution weights (a = -1/2, Catmull-Rom) for the point a quarter cell left of a coarse
# cell centre, acting on the values at offsets -2, -1, 0, +1; the mirror image gives the point a quarter
# cell to the right.
_CUBIC_QUARTER = (-3 / 128, 29 / 128, 111 / 128, -9 / 128)


def _upsample_axis(x: Tensor, dim: int, periodic: bool) -> Tensor:
    n = x.shape[dim]
    pad = [0, 0] * (x.ndim - 2)
    pad[-2 * dim - 2 : -2 * dim] = [2, 2]  # F.pad lists the last axis first
    padded = F.pad(x, pad, mode="circular" if periodic else "replicate")
    taps = [padded.narrow(dim, k, n) for k in range(5)]  # taps[k][i] = x[i + k - 2]
    left = sum(w * t for w, t in zip(_CUBIC_QUARTER, taps[:4], strict=True))
    right = sum(w * t for w, t in zip(reversed(_CUBIC_QUARTER), taps[1:], strict=True))
    return torch.stack([left, right], dim=dim).flatten(dim - 1, dim)


def upsample(x: Tensor, periodic: bool) -> Tensor:
    """Cubic interpolation to twice the resolution along every spatial axis of ``[B, C, *S]`` (1D or 2D).

    Cell-centred grids: coarse values at ``(i + 1/2) h`` give fine values at ``(j + 1/2) h/2``, each a
    4-point cubic convolution (Keys 1981, ``a = -1/2``; third-order accurate for smooth fields — torch's
    ``bicubic``, used by the reference code, has ``a = -3/4`` and is only first-order accurate), applied
    one axis after the other. ``periodic=True`` wraps the stencil around, so a shift of the input by one
    cell shifts the output by exactly two; otherwise edge values are repeated.
    """
    for dim in range(-(x.ndim - 2), 0):
        x = _upsample_axis(x, dim, periodic)
    return x


def check_grid(net: nn.Module, shape: tuple[int, ...], levels: int) -> None:
    """Raise ``ValueError`` unless every spatial size in ``shape`` is a positive multiple of ``2**levels``."""
    factor = 2**levels
    if any(size % factor or size == 0 for size in shape):
        raise ValueError(
            f"{type(net).__name__}: grid {tuple(shape)} cannot be down-sampled {levels} times; every "
            f"spatial size must be a multiple of 2**levels = {factor} (levels={levels})"
        )


class Wave(nn.Module):
    """One U-shaped wave ``x ↦ x + V(x)`` with disentangled multi-scale input (see the module docstring).

    Args:
        widths: channels at levels ``0 … L`` (level 0 is the wave's input and output).
        ndim: spatial dimensions.
        emb_dim: conditioning embedding size (0: unconditioned).
        periodic: circular padding and interpolation.
    """

    def __init__(self, widths: list[int], ndim: int, emb_dim: int, periodic: bool) -> None:
        super().__init__()
        self.periodic = periodic
        block = dict(ndim=ndim, emb_dim=emb_dim, padding_mode="circular" if periodic else "zeros")
        levels = len(widths) - 1
        self.down = nn.ModuleList(
            ResidualBlock(widths[l - 1] + (widths[0] if l > 1 else 0), widths[l], **block)
            for l in range(1, levels + 1)
        )
        self.up = nn.ModuleList(
            ResidualBlock(widths[l + 1] + widths[l], widths[l], **block) for l in reversed(range(levels))
        )

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        skips, h, dx = [x], x, x
        for level, block in enumerate(self.down, start=1):
            h, dx = downsample(h), downsample(dx)
            # At level 1 the pooled input and the pooled features are the same tensor.
            h = block(torch.cat([h, dx], dim=1) if level > 1 else h, emb)
            skips.append(h)
        skips.pop()
        for block in self.up:
            h = block(torch.cat([skips.pop(), upsample(h, self.periodic)], dim=1), emb)
        return x + h


class SineNet(SurrogateNet):
    """SineNet-K: ``waves`` sequential U-Nets with residual connections between them.

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        hidden: channels of the latent state carried from wave to wave (level 0).
        mult: channel multiplier per level; level ``l`` has ``int(hidden * mult**l)`` channels
            (1.425 for SineNet-8 in the paper, chosen to keep the parameter count of SineNet-K near 35M).
        levels: down-sampling steps per wave (U-shape depth); grids must be multiples of ``2**levels``.
        waves: number of waves ``K``.
        periodic: circular padding and interpolation (periodic domains); zero padding otherwise.
    """

    def __init__(
        self,
        ndim: int,
        channels: int,
        time_history: int,
        time_future: int,
        cond_dim: int = 0,
        hidden: int = 64,
        mult: float = 1.425,
        levels: int = 4,
        waves: int = 8,
        periodic: bool = True,
    ) -> None:
        super().__init__(ndim, channels, time_history, time_future, cond_dim)
        for name, value in (("hidden", hidden), ("levels", levels), ("waves", waves)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SineNet: {name}={value!r} must be an int >= 1")
        if not mult >= 1:
            raise ValueError(f"SineNet: mult={mult!r} must be a number >= 1")
        self.levels, self.periodic = levels, periodic
        widths = [int(hidden * mult**l) for l in range(levels + 1)]
        padding_mode = "circular" if periodic else "zeros"
        emb_dim = 4 * hidden if cond_dim else 0
        conv = conv_nd(ndim)
        self.embed = FourierEmbedding(cond_dim, emb_dim) if cond_dim else None
        self.lift = conv(self.in_features, hidden, 3, padding=1, padding_mode=padding_mode)
        self.waves = nn.ModuleList(Wave(widths, ndim, emb_dim, periodic) for _ in range(waves))
        self.project = conv(hidden, self.out_features, 3, padding=1, padding_mode=padding_mode)

    @property
    def translation_step(self) -> int | None:
        """Smallest periodic shift (cells) that commutes exactly with the network: ``2**levels``
        (``None`` for a non-periodic network)."""
        return 2**self.levels if self.periodic else None

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        check_grid(self, tuple(x.shape[2:]), self.levels)
        emb = self.embed(cond) if self.embed is not None and cond is not None else None
        h = self.lift(x)
        for wave in self.waves:
            h = wave(h, emb)
        return self.project(h)


PRESETS: dict[str, dict] = {
    # SineNet-8 of the paper: 35,490,219 parameters in the reference code on incompressible Navier-Stokes
    # (4 frames of 3 fields → 1 frame), 36,302,163 here (+2.3 %: 1×1 skips on the concatenated inputs).
    "sinenet": {"cls": SineNet, "hidden": 64, "mult": 1.425, "levels": 4, "waves": 8},
    # CPU size (~0.1M parameters in 1D, ~0.3M in 2D): 4 waves of 3 levels on 12 channels.
    "sinenet-small": {"cls": SineNet, "hidden": 12, "mult": 1.425, "levels": 3, "waves": 4},
}
