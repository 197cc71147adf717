"""Latent Spectral Model (LSM): a U-Net whose skip connections solve in a latent spectral space.

Wu, Hu, Luo, Wang, Long, "Solving High-Dimensional PDEs with Latent Spectral Models", ICML 2023
(reference implementation: thuml/Latent-Spectral-Models). A convolutional encoder down-samples the lifted
input ``levels`` times (channels ``width · 2**l``, the deepest level keeping the width of the one above),
a decoder up-samples back, and every skip connection, the deepest features included, passes through a
:class:`NeuralSpectralBlock`:

1. patchify the feature map into patches of ``p`` cells per axis;
2. attend from ``num_token`` learned latent tokens ``T0`` to the patch: ``T = softmax(T0 Kᵀ/√d) V + T0``;
3. latent spectral transition with ``num_basis`` sine/cosine basis operators, per channel ``c``:
   ``T'_c = T_c + Σ_k w_{c,k} sin(π k T_c / num_basis) + w'_{c,k} cos(π k T_c / num_basis)``;
4. attend from every cell of the patch back to the tokens: ``y = x + softmax(Q T'ᵀ/√d) T'``;
5. unpatchify.

Patch size and padding follow the rule of the reference experiments (64 → 4×4 patches, 85 → 6 with
11 cells of padding, 129 → 9 with 15), derived here per axis from the grid size ``n``:
``p = ceil(n / 2**levels)`` and ``pad = p · 2**levels − n``, so the deepest level is exactly one patch.
Periodic domains admit no padding (it would break periodicity): ``n`` must be a multiple of
``2**levels``. Unlike the reference, no coordinate grid is appended to the input, the softmax is scaled
by ``1/√d`` and down-sampling is average pooling, so that the network commutes with periodic shifts
wherever its patch tiling does (see :class:`LSM`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.base import SurrogateNet
from models.layers import FourierEmbedding, ResidualBlock, conv_nd
from models.sinenet import downsample, upsample

_PATCHIFY = {1: "b c (nx px) -> (b nx) px c", 2: "b c (nx px) (ny py) -> (b nx ny) (px py) c"}
_UNPATCHIFY = {1: "(b nx) px c -> b c (nx px)", 2: "(b nx ny) (px py) c -> b c (nx px) (ny py)"}


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
    """Patchified latent attention + sin/cos latent spectral transition (steps 1–5 of the module docstring).

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
        tokens = F.scaled_dot_product_attention(latent, keys, values) + latent
        tokens = rearrange(tokens, "b h t d -> b t (h d)")  # [B·P, T, C]
        angles = tokens[..., None] * self.freqs
        basis = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [B·P, T, C, 2·num_basis]
        tokens = tokens + torch.einsum("btck,ck->btc", basis, self.basis_weights)
        tokens = self._heads(tokens)
        out = F.scaled_dot_product_attention(self._heads(self.to_q(cells)), tokens, tokens)
        cells = cells + rearrange(out, "b h l d -> b l (h d)")
        return rearrange(cells, _UNPATCHIFY[len(patch)], **sizes, **pattern)


class LSM(SurrogateNet):
    """Latent Spectral Model on a U-Net backbone.

    With ``periodic=True`` every convolution pads circularly and up-sampling is circular cubic
    interpolation, but the fixed patch tiling is not shift-invariant: the network commutes exactly with
    a periodic shift only when the shift maps the patches of every level onto patches, i.e. by
    multiples of ``p · 2**(levels-1) = n/2`` cells (the deepest level is a single patch, on which the
    block is permutation-equivariant; no positional encoding enters the attention).

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        width: channels at full resolution; level ``l`` has ``width · 2**min(l, levels-1)``.
        levels: down-sampling steps.
        num_basis: sin/cos basis operators in the latent space (12 in the paper).
        num_token: latent tokens per patch (4 in the paper).
        num_heads: attention heads; must divide ``width``.
        periodic: circular padding and interpolation; otherwise zero padding and zero end-padding of
            grids that are not a multiple of ``2**levels``.
        n: grid size (of every axis), if known, to validate the patch layout when the network is built;
            the layout itself is derived (and validated) from the shape of every input.
    """

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
        block = dict(ndim=ndim, emb_dim=emb_dim, padding_mode="circular" if periodic else "zeros")
        conv = conv_nd(ndim)
        self.embed = FourierEmbedding(cond_dim, emb_dim) if cond_dim else None
        self.lift = conv(self.in_features, width, 1)
        self.encoder = nn.ModuleList(
            ResidualBlock(widths[max(l - 1, 0)], widths[l], **block) for l in range(levels + 1)
        )
        self.spectral = nn.ModuleList(NeuralSpectralBlock(c, num_basis, num_token, num_heads) for c in widths)
        self.decoder = nn.ModuleList(
            ResidualBlock(outs[l + 1] + widths[l], outs[l], **block) for l in reversed(range(levels))
        )
        self.head = nn.Sequential(conv(width, 2 * width, 1), nn.GELU(), conv(2 * width, self.out_features, 1))

    @property
    def translation_step(self) -> int | None:
        """Smallest periodic shift (cells) that commutes exactly with the network on the grid ``n``.

        Shifts must map the patches of levels ``0 … levels-1`` onto patches (multiples of
        ``p · 2**(levels-1)``) and be whole cells at the deepest level (multiples of ``2**levels``):
        ``n / 2`` for an even patch size ``p``, else ``n``. ``None`` when ``n`` is unknown or the
        network is not periodic.
        """
        n = self.hparams["n"]
        if n is None or not self.periodic:
            return None
        patch, _ = patch_layout(n, self.levels, self.periodic)
        return 2 ** (self.levels - 1) * math.lcm(patch, 2)

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        shape = x.shape[2:]
        layout = [patch_layout(n, self.levels, self.periodic) for n in shape]
        patch = tuple(p for p, _ in layout)
        emb = self.embed(cond) if self.embed is not None and cond is not None else None
        h = self.lift(x)
        pads = [pad for _, pad in reversed(layout) for pad in (0, pad)]
        if any(pads):
            h = F.pad(h, pads)
        skips = []
        for level, block in enumerate(self.encoder):
            h = block(downsample(h) if level else h, emb)
            skips.append(self.spectral[level](h, patch))
        h = skips.pop()
        for block in self.decoder:
            h = block(torch.cat([skips.pop(), upsample(h, self.periodic)], dim=1), emb)
        h = h[(..., *(slice(0, n) for n in shape))]
        return self.head(h)


PRESETS: dict[str, dict] = {
    # Paper size (Navier-Stokes and Darcy experiments): width 64, 4 levels, 12 basis operators, 4 tokens.
    "lsm": {"cls": LSM, "width": 64, "levels": 4, "num_basis": 12, "num_token": 4, "num_heads": 8},
    # CPU size (~0.1M parameters in 1D, ~0.3M in 2D); grids must be multiples of 8 when periodic.
    "lsm-small": {"cls": LSM, "width": 16, "levels": 3, "num_basis": 12, "num_token": 4, "num_heads": 4},
}
