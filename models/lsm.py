"""Latent Spectral Model (LSM): a U-Net whose skip connections solve in a latent spectral space.

Wu, Hu, Luo, Wang, Long, "Solving High-Dimensional PDEs with Latent Spectral Models", ICML 2023;
reference implementation thuml/Latent-Spectral-Models, ``models/LSM_2D.py`` (19,188,033 parameters in
its Navier-Stokes setting: 10 frames → 1, 64², ``d_model`` 64, 4 tokens, 12 bases, 4×4 patches). The
network, in the reference's order:

1. lift: the input frames and the cell coordinates (``linspace(0, 1, n)`` per axis, as extra channels)
   through one pointwise linear layer to ``width`` channels (``fc0``); zero end-padding to the patch
   layout below;
2. U-Net backbone (the bilinear U-Net of Ronneberger et al.): level ``l = 0 … levels`` has
   ``width · 2**min(l, levels-1)`` channels, each a :class:`~models.sinenet.ConvBlock` in its BatchNorm
   flavour (conv without bias → BatchNorm → ReLU, twice), levels below the first after 2×2 max pooling;
3. every encoder output, the deepest one included, passes through a :class:`NeuralSpectralBlock`;
4. decoder: bilinear up-sampling (``align_corners=True``), concatenation ``[skip, up-sampled]`` and a
   double convolution whose middle has half the input channels; level ``l`` outputs the channels of
   level ``l - 1`` (level 0: ``width``);
5. projection: a 1×1 convolution (``outc``), cropping, then ``fc1`` (``width`` → 128), GELU, ``fc2``.

Neural spectral block: patchify the feature map into patches of ``p`` cells per axis; attend from
``num_token`` learned latent tokens ``T0`` to the patch, ``T = softmax(T0 Kᵀ) V + T0`` (no ``1/√d``
scaling, as in the reference); latent spectral transition with ``num_basis`` sine/cosine basis operators,
per channel ``c``: ``T'_c = T_c + Σ_k w_{c,k} sin(π k T_c / num_basis) + w'_{c,k} cos(π k T_c /
num_basis)``; attend from every cell back to the tokens, ``y = x + softmax(Q T'ᵀ) T'``; unpatchify.

Patch size and padding follow the rule of the reference experiments (64 → 4×4 patches, 85 → 6 with
11 cells of padding, 129 → 9 with 15), derived here per axis from the grid size ``n``:
``p = ceil(n / 2**levels)`` and ``pad = p · 2**levels − n``, so the deepest level is exactly one patch.

Deviations from the reference, each an option or a generalisation, none changing the parameter count:

- ``periodic=True`` pads the convolutions circularly (the reference pads with zeros, ``periodic=False``);
  periodic grids must then be multiples of ``2**levels`` (end-padding would break periodicity). The
  network is still not shift-equivariant: the coordinate channels, the corner-aligned up-sampling and
  the fixed patch tiling all see absolute position, as in the reference.
- 1D grids (the reference has 2D, 3D and irregular variants, no 1D one): the same network with 1D
  convolutions, BatchNorm1d, max pooling and linear up-sampling, one coordinate channel.
- Conditioning (``cond_dim > 0``, not in the reference): a Fourier embedding scales and shifts the
  features after the first activation of every double convolution.
- Attention heads are an argument (the reference fixes 8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.base import SurrogateNet
from models.layers import FourierEmbedding, conv_nd
from models.sinenet import ConvBlock

_PATCHIFY = {1: "b c (nx px) -> (b nx) px c", 2: "b c (nx px) (ny py) -> (b nx ny) (px py) c"}
_UNPATCHIFY = {1: "(b nx) px c -> b c (nx px)", 2: "(b nx ny) (px py) c -> b c (nx px) (ny py)"}
# Hidden channels of the projection fc1 → GELU → fc2 (fixed in the reference).
PROJECTION = 128


def patch_layout(n: int, levels: int, periodic: bool) -> tuple[int, int]:
    """Patch size ``p`` and end padding ``pad`` for one axis of ``n`` cells (see the module docstring).

    Raises:
        ValueError: ``n < 2**levels`` (the grid cannot be down-sampled ``levels`` times), or a periodic
            grid that is not a multiple of ``2**levels``.
    """
    factor = 2**levels
    if n < factor:
        raise ValueError(
            f"LSM: grid size {n} is too small for levels={levels}; it must be at least 2**levels = {factor}"
        )
    if periodic and n % factor:
        raise ValueError(
            f"LSM: periodic grid size {n} must be a multiple of 2**levels = {factor} (levels={levels}); "
            "padding would break periodicity — use another grid, fewer levels or periodic=False"
        )
    patch = math.ceil(n / factor)
    return patch, patch * factor - n


class NeuralSpectralBlock(nn.Module):
    """Patchified latent attention + sin/cos latent spectral transition (``NeuralSpectralBlock2d``).

    Args:
        channels: feature channels ``C`` (split into ``num_heads`` heads of ``C / num_heads``).
        num_basis: number of sine (and of cosine) basis operators.
        num_token: latent tokens per patch.
        num_heads: attention heads.
    """

    def __init__(self, channels: int, num_basis: int, num_token: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = channels // num_heads
        # Initialisation of the reference: uniform in [0, 1/C).
        self.latent = nn.Parameter(torch.rand(num_heads, num_token, head_dim) / channels)
        self.basis_weights = nn.Parameter(torch.rand(channels, 2 * num_basis) / channels)
        self.register_buffer("freqs", math.pi * torch.arange(num_basis) / num_basis, persistent=False)
        self.to_kv = nn.Linear(channels, 2 * channels)
        self.to_q = nn.Linear(channels, channels)

    def _heads(self, tokens: Tensor) -> Tensor:
        return rearrange(tokens, "b l (h d) -> b h l d", h=self.num_heads)

    def forward(self, x: Tensor, patch: tuple[int, ...]) -> Tensor:
        """``x``: ``[B, C, *S]`` with every ``S_i`` a multiple of ``patch[i]``; returns the same shape."""
        sizes = {name: s // p for name, s, p in zip(("nx", "ny"), x.shape[2:], patch, strict=False)}
        pattern = dict(zip(("px", "py"), patch, strict=False))
        cells = rearrange(x, _PATCHIFY[len(patch)], **pattern)  # [B·P, L, C]
        keys, values = self._heads(self.to_kv(cells)).chunk(2, dim=-1)
        latent = self.latent.expand(cells.shape[0], -1, -1, -1)
        tokens = F.scaled_dot_product_attention(latent, keys, values, scale=1.0) + latent
        tokens = rearrange(tokens, "b h t d -> b t (h d)")  # [B·P, T, C]
        angles = tokens[..., None] * self.freqs
        basis = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [B·P, T, C, 2·num_basis]
        tokens = tokens + torch.einsum("btck,ck->btc", basis, self.basis_weights)
        tokens = self._heads(tokens)
        out = F.scaled_dot_product_attention(self._heads(self.to_q(cells)), tokens, tokens, scale=1.0)
        cells = cells + rearrange(out, "b h l d -> b l (h d)")
        return rearrange(cells, _UNPATCHIFY[len(patch)], **sizes, **pattern)


def coordinates(x: Tensor) -> Tensor:
    """``[1, ndim, *S]``: the cell coordinates ``linspace(0, 1, S_i)`` along every axis of ``x[B, C, *S]``."""
    axes = [torch.linspace(0, 1, n, dtype=x.dtype, device=x.device) for n in x.shape[2:]]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


class LSM(SurrogateNet):
    """Latent Spectral Model on a U-Net backbone (``LSM_2D.Model``; see the module docstring).

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        width: channels at full resolution (``d_model``); level ``l`` has ``width · 2**min(l, levels-1)``.
        levels: down-sampling steps (4 in the reference).
        num_basis: sin/cos basis operators in the latent space (12 in the paper).
        num_token: latent tokens per patch (4 in the paper).
        num_heads: attention heads (8 in the reference); must divide ``width``.
        periodic: circular padding in the convolutions; otherwise zero padding (the reference) and zero
            end-padding of grids that are not a multiple of ``2**levels``.
        n: grid size (of every axis), if known, to validate the patch layout when the network is built;
            the layout itself is derived (and validated) from the shape of every input.
    """

    # Coordinate channels and corner-aligned up-sampling: no periodic shift commutes with the network.
    translation_step = None

    def __init__(
        self,
        ndim: int,
        channels: int,
        time_history: int,
        time_future: int,
        cond_dim: int = 0,
        width: int = 64,
        levels: int = 4,
        num_basis: int = 12,
        num_token: int = 4,
        num_heads: int = 8,
        periodic: bool = True,
        n: int | None = None,
    ) -> None:
        super().__init__(ndim, channels, time_history, time_future, cond_dim)
        for name, value in (
            ("width", width),
            ("levels", levels),
            ("num_basis", num_basis),
            ("num_token", num_token),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LSM: {name}={value!r} must be an int >= 1")
        if width % num_heads:
            raise ValueError(f"LSM: width={width} must be divisible by num_heads={num_heads}")
        if n is not None:
            patch_layout(n, levels, periodic)
        self.levels, self.periodic = levels, periodic
        widths = [width * 2 ** min(l, levels - 1) for l in range(levels + 1)]
        # Decoder output channels per level: halved on the way up, as in the reference (64·[1, 1, 2, 4, 8]).
        outs = [widths[max(l - 1, 0)] for l in range(levels)] + [widths[-1]]
        emb_dim = 4 * width if cond_dim else 0
        block = dict(
            ndim=ndim, batch_norm=True, emb_dim=emb_dim, padding_mode="circular" if periodic else "zeros"
        )
        conv = conv_nd(ndim)
        self.embed = FourierEmbedding(cond_dim, emb_dim) if cond_dim else None
        self.lift = conv(self.in_features + ndim, width, 1)
        self.encoder = nn.ModuleList(
            ConvBlock(widths[max(l - 1, 0)], widths[l], **block) for l in range(levels + 1)
        )
        self.spectral = nn.ModuleList(NeuralSpectralBlock(c, num_basis, num_token, num_heads) for c in widths)
        self.decoder = nn.ModuleList(
            ConvBlock(outs[l + 1] + widths[l], outs[l], mid_channels=(outs[l + 1] + widths[l]) // 2, **block)
            for l in reversed(range(levels))
        )
        # outc, fc1, GELU, fc2 of the reference (all pointwise; applied here after cropping the padding).
        self.head = nn.Sequential(
            conv(width, width, 1),
            conv(width, PROJECTION, 1),
            nn.GELU(),
            conv(PROJECTION, self.out_features, 1),
        )
        self._pool = F.max_pool1d if ndim == 1 else F.max_pool2d
        self._mode = "linear" if ndim == 1 else "bilinear"

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        shape = x.shape[2:]
        layout = [patch_layout(n, self.levels, self.periodic) for n in shape]
        patch = tuple(p for p, _ in layout)
        emb = self.embed(cond) if self.embed is not None and cond is not None else None
        h = self.lift(torch.cat([x, coordinates(x).expand(x.shape[0], -1, *shape)], dim=1))
        pads = [pad for _, pad in reversed(layout) for pad in (0, pad)]
        if any(pads):
            h = F.pad(h, pads)
        skips = []
        for level, block in enumerate(self.encoder):
            h = block(self._pool(h, 2) if level else h, emb)
            skips.append(self.spectral[level](h, patch))
        h = skips.pop()
        for block in self.decoder:
            up = F.interpolate(h, scale_factor=2, mode=self._mode, align_corners=True)
            h = block(torch.cat([skips.pop(), up], dim=1), emb)
        return self.head(h[(..., *(slice(0, n) for n in shape))])
