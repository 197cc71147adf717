"""SineNet: a chain of U-shaped "waves" for time-dependent PDEs.

Zhang, Xu, Yu, Ji et al., "SineNet: Learning Temporal Dynamics in Time-Dependent PDEs", ICLR 2024;
reference implementation divelab/AIRS, ``OpenPDE/SineNet/pdearena/pdearena/modules/sinenet_dual.py``
(SineNet-8 is its ``sinenet8-dual`` preset: 35,490,219 parameters for 4 frames of 3 channels → 1 frame).
The input frames are lifted to ``hidden`` channels by a 3×3 convolution, then ``waves`` U-Nets run one
after another, each adding its output to its input (``x_{k+1} = x_k + V_k(x_k)``), so that every wave
only has to advance the latent state by a fraction of the time step; a final 3×3 convolution reads out
the future frames.

Inside a wave, level ``l = 1 … levels`` works at resolution ``n / 2**l`` with ``int(hidden * mult**l)``
channels; level 0 (full resolution) has no block of its own on the way down. Every block is one
:class:`ConvBlock` (post-norm: conv → GroupNorm(1) → GELU, twice) plus a 1×1 projection of its
*unconcatenated* input on the residual path:

- down, level ``l``: ``h_l = block([pool(h_{l-1}), pool^l(x)]) + proj(pool(h_{l-1}))`` — average pooling;
  disentangled multi-scale processing concatenates the wave's own input ``x``, pooled to the level's
  resolution, at every level below the first (at level 1 it is the same tensor as ``pool(h_0)``);
- up, level ``l``: ``u = up(h_{l+1})``, ``h_l = block([s_l, u]) + proj(u)`` with the encoder output
  ``s_l`` of the same level (``s_0 = x``) — cubic up-sampling.

Up-sampling is torch's ``bicubic`` (Keys' cubic convolution with ``a = -3/4``, half-cell-centred grids,
edge values repeated), written out here so that it also serves 1D grids and wraps around on periodic
domains (the reference pads circularly by 2 cells, interpolates and crops, which is the same thing).
Periodic domains (``periodic=True``, the reference's ``padding_mode="circular"`` variants): circular
padding in every convolution and circular interpolation, which makes the network exactly equivariant to
periodic shifts by multiples of ``2**levels`` grid cells. ``periodic=False`` is the zero padding of
``sinenet8-dual``.

Conditioning (``cond_dim > 0``): a Fourier embedding of the conditioning vector scales and shifts the
features after the first activation of every block, as in the reference's conditioned SineNet
(``modules/conditioned/sinenet_cond.py``, ``use_scale_shift_norm``).

Deviation: 1D grids use the same blocks with 1D convolutions and pooling (the reference is 2D only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import SurrogateNet
from models.layers import FourierEmbedding, conv_nd


class ConvBlock(nn.Module):
    """Post-norm double convolution: ``act(norm(conv(act(norm(conv(x))))))`` with 3-wide kernels.

    Two flavours of the same block:

    - ``batch_norm=False`` (SineNet, ``sinenet_dual.ConvBlock``): convolutions with bias, GroupNorm with
      one group, GELU;
    - ``batch_norm=True`` (the U-Net of Ronneberger et al. as used by LSM, ``LSM_2D.DoubleConv``):
      convolutions without bias, BatchNorm, ReLU.

    Args:
        in_channels, out_channels: channels of the input and the output.
        ndim: spatial dimensions.
        mid_channels: channels between the two convolutions (default ``out_channels``).
        batch_norm: the flavour (see above).
        emb_dim: conditioning embedding size; ``> 0`` adds ``h ↦ h · (1 + scale) + shift`` after the
            first activation, scale and shift linear in the embedding.
        padding_mode: ``"zeros"`` or ``"circular"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ndim: int,
        mid_channels: int | None = None,
        batch_norm: bool = False,
        emb_dim: int = 0,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        conv = conv_nd(ndim)
        conv_args = dict(kernel_size=3, padding=1, padding_mode=padding_mode, bias=not batch_norm)
        if batch_norm:
            norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[ndim]
            self.norm1, self.norm2, self.act = norm(mid), norm(out_channels), nn.ReLU()
        else:
            self.norm1, self.norm2 = nn.GroupNorm(1, mid), nn.GroupNorm(1, out_channels)
            self.act = nn.GELU()
        self.conv1 = conv(in_channels, mid, **conv_args)
        self.conv2 = conv(mid, out_channels, **conv_args)
        self.film = nn.Linear(emb_dim, 2 * mid) if emb_dim else None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb).reshape(emb.shape[0], -1, *([1] * (h.ndim - 2))).chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.act(self.norm2(self.conv2(h)))


def downsample(x: Tensor) -> Tensor:
    """Average pooling by 2 along every spatial axis of ``[B, C, *S]`` (1D or 2D)."""
    return F.avg_pool1d(x, 2) if x.ndim == 3 else F.avg_pool2d(x, 2)


# Keys' cubic convolution kernel with torch's a = -3/4, evaluated for the fine point a quarter cell left
# of a coarse cell centre, i.e. at distances 7/4, 3/4, 1/4, 5/4 from the coarse values at offsets
# -2, -1, 0, +1; the mirror image gives the point a quarter cell to the right.
def _keys(s: float, a: float = -0.75) -> float:
    if s <= 1:
        return (a + 2) * s**3 - (a + 3) * s**2 + 1
    return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a


_CUBIC_QUARTER = tuple(_keys(s) for s in (1.75, 0.75, 0.25, 1.25))


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
    """Bicubic interpolation to twice the resolution along every spatial axis of ``[B, C, *S]`` (1D or 2D).

    Equal to ``F.interpolate(x, scale_factor=2, mode="bicubic")`` in 2D (cell-centred grids, Keys' kernel
    with ``a = -3/4``, edge values repeated), applied one axis after the other. ``periodic=True`` wraps
    the stencil around instead, so a shift of the input by one cell shifts the output by exactly two.
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


class ResidualLevel(nn.Module):
    """``block(x) + proj(skip)``: a :class:`ConvBlock` on the concatenated input plus a 1×1 projection of
    the unconcatenated one (``sinenet_dual.Down``/``Up`` with ``num_blocks=1, residual=True``)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, **block) -> None:
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels, **block)
        self.proj = conv_nd(block["ndim"])(skip_channels, out_channels, 1)

    def forward(self, x: Tensor, skip: Tensor, emb: Tensor | None) -> Tensor:
        return self.block(x, emb) + self.proj(skip)


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
            ResidualLevel(widths[l - 1] + (widths[0] if l > 1 else 0), widths[l - 1], widths[l], **block)
            for l in range(1, levels + 1)
        )
        self.up = nn.ModuleList(
            ResidualLevel(widths[l + 1] + widths[l], widths[l + 1], widths[l], **block)
            for l in reversed(range(levels))
        )

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        skips, h, dx = [x], x, x
        for level, block in enumerate(self.down, start=1):
            h, dx = downsample(h), downsample(dx)
            # At level 1 the pooled input and the pooled features are the same tensor.
            h = block(torch.cat([h, dx], dim=1) if level > 1 else h, h, emb)
            skips.append(h)
        skips.pop()
        for block in self.up:
            u = upsample(h, self.periodic)
            h = block(torch.cat([skips.pop(), u], dim=1), u, emb)
        return x + h


class SineNet(SurrogateNet):
    """SineNet-K: ``waves`` sequential U-Nets with residual connections between them.

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        hidden: channels of the latent state carried from wave to wave (level 0).
        mult: channel multiplier per level; level ``l`` has ``int(hidden * mult**l)`` channels
            (1.425 for SineNet-8 in the paper, chosen to keep the parameter count of SineNet-K near 35M).
        levels: down-sampling steps per wave (U-shape depth; 4 in the reference); grids must be
            multiples of ``2**levels``.
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
