"""Small layers shared by every architecture: dimension-generic convolutions, conditioning, residual blocks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def conv_nd(ndim: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    return {1: nn.Conv1d, 2: nn.Conv2d}[ndim]


def num_groups(channels: int, preferred: int = 8) -> int:
    """Largest group count ``<= preferred`` that divides ``channels`` (for GroupNorm)."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


class FourierEmbedding(nn.Module):
    """Embeds a conditioning vector ``[B, P]`` as ``[B, dim]``.

    Each scalar ``c`` becomes ``[sin(2π f_j c), cos(2π f_j c)]`` for ``dim // 2`` log-spaced
    frequencies ``f_j`` in ``[1, max_freq]`` (Vaswani-style features, as in PDEArena's
    parameter embedding), then the concatenation for all ``P`` scalars goes through a two-layer MLP.
    Inputs are expected to be normalised to roughly unit range by the caller.
    """

    def __init__(self, cond_dim: int, dim: int, max_freq: float = 100.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierEmbedding: dim={dim} must be even")
        half = dim // 2
        self.register_buffer(
            "freqs", torch.exp(torch.linspace(0.0, math.log(max_freq), half)), persistent=False
        )
        self.mlp = nn.Sequential(nn.Linear(cond_dim * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, cond: Tensor) -> Tensor:
        angles = 2 * math.pi * cond[..., None] * self.freqs.to(cond.dtype)  # [B, P, dim/2]
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)
        return self.mlp(features)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(act(norm(scale_shift(conv(act(norm(x))), emb))))``.

    GroupNorm → GELU → 3-conv → GroupNorm → (1 + scale) · h + shift from the embedding → GELU → 3-conv,
    plus a 1×1 projection on the skip path when the channel count changes (the PDEArena/PDE-Refiner
    modern U-Net block). ``emb_dim=0`` gives an unconditioned block; ``padding_mode="circular"``
    for periodic domains.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ndim: int,
        emb_dim: int = 0,
        padding_mode: str = "circular",
        norm: bool = True,
    ) -> None:
        super().__init__()
        conv = conv_nd(ndim)
        self.norm1 = nn.GroupNorm(num_groups(in_channels), in_channels) if norm else nn.Identity()
        self.conv1 = conv(in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        self.norm2 = nn.GroupNorm(num_groups(out_channels), out_channels) if norm else nn.Identity()
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        self.act = nn.GELU()
        self.skip = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.film = nn.Linear(emb_dim, 2 * out_channels) if emb_dim else None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb).reshape(emb.shape[0], -1, *([1] * (h.ndim - 2))).chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.act(h))
        return self.skip(x) + h
