"""Modern U-Net of PDEArena (Gupta & Brandstetter, "Towards Multi-spatiotemporal-scale Generalized PDE
Modeling", 2022) as used by PDE-Refiner (Lippe et al., NeurIPS 2023).

``3-conv lift → encoder → middle → decoder → GroupNorm → GELU → 3-conv readout``. Level ``l`` of the
encoder runs ``num_blocks`` pre-norm :class:`~models.layers.ResidualBlock` s at ``hidden ·
channel_mults[l]`` channels and resolution ``n / 2**l``, keeps each block's output as a skip connection
and (except at the deepest level) halves the resolution with a stride-2 3-convolution. The middle is two
residual blocks. The decoder mirrors the encoder: each block takes the concatenation of the running
features and one skip, and every level but the top doubles the resolution by nearest-neighbour
interpolation followed by a 3-convolution. The conditioning embedding (PDE parameters, time step) enters
every residual block as a per-channel scale and shift.

With circular padding (``periodic=True``) every operation commutes with periodic shifts by multiples of
``2**(len(channel_mults) - 1)`` cells, the total down-sampling factor; grids must be multiples of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.base import SurrogateNet
from models.layers import FourierEmbedding, ResidualBlock, conv_nd, num_groups


def check_grid(owner: str, shape: Sequence[int], factor: int) -> None:
    """Raise ``ValueError`` unless every spatial size is a positive multiple of ``factor``."""
    if any(size % factor or size < factor for size in shape):
        raise ValueError(
            f"{owner}: grid {tuple(shape)} is not divisible by the total down-sampling factor {factor} "
            f"(2**(len(channel_mults) - 1)); use grid sizes that are multiples of {factor} or fewer levels"
        )


class UNet(SurrogateNet):
    """Modern U-Net (see the module docstring).

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        hidden: channels of the first level.
        channel_mults: channel multiplier per level; ``len(channel_mults) - 1`` down-samplings.
        num_blocks: residual blocks per level (encoder and decoder).
        periodic: circular padding (periodic domains); zero padding otherwise.
        emb_dim: conditioning embedding size (used when ``cond_dim > 0``); ``None``: ``4 · hidden``.
        n: grid size (one int for all axes, or one per axis), if known: checked at construction.
    """

    def __init__(
        self,
        ndim: int,
        channels: int,
        time_history: int,
        time_future: int,
        cond_dim: int = 0,
        hidden: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2, 4),
        num_blocks: int = 2,
        periodic: bool = True,
        emb_dim: int | None = None,
        n: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__(ndim, channels, time_history, time_future, cond_dim)
        for name, value in (("hidden", hidden), ("num_blocks", num_blocks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet: {name}={value!r} must be an int >= 1")
        mults = tuple(channel_mults)
        if not mults or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"UNet: channel_mults={channel_mults!r} must be a non-empty list of ints >= 1")
        self.translation_step = 2 ** (len(mults) - 1)
        if n is not None:
            check_grid("UNet", (n,) * ndim if isinstance(n, int) else tuple(n), self.translation_step)
        emb_dim = (emb_dim or 4 * hidden) if cond_dim else 0
        padding_mode = "circular" if periodic else "zeros"
        conv = conv_nd(ndim)

        def block(cin: int, cout: int) -> ResidualBlock:
            return ResidualBlock(cin, cout, ndim, emb_dim=emb_dim, padding_mode=padding_mode)

        def resample(cin: int, stride: int) -> nn.Module:
            return conv(cin, cin, 3, stride=stride, padding=1, padding_mode=padding_mode)

        widths = [hidden * m for m in mults]
        self.embed = FourierEmbedding(cond_dim, emb_dim) if cond_dim else None
        self.lift = conv(self.in_features, hidden, 3, padding=1, padding_mode=padding_mode)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [], hidden
        for level, w in enumerate(widths):
            for _ in range(num_blocks):
                self.down.append(block(c, w))
                c = w
                skips.append(c)
            if level < len(widths) - 1:
                self.downsample.append(resample(c, 2))
        self.middle = nn.ModuleList([block(c, c), block(c, c)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_blocks):
                self.up.append(block(c + skips.pop(), w))
                c = w
            if level > 0:
                self.upsample.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), resample(c, 1))
                )
        self.num_blocks = num_blocks
        self.readout = nn.Sequential(
            nn.GroupNorm(num_groups(c), c),
            nn.GELU(),
            conv(c, self.out_features, 3, padding=1, padding_mode=padding_mode),
        )

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        check_grid("UNet", x.shape[2:], self.translation_step)
        emb = self.embed(cond) if self.embed is not None and cond is not None else None
        h = self.lift(x)
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h, emb)
            skips.append(h)
            level, last_in_level = divmod(i + 1, self.num_blocks)
            if last_in_level == 0 and level - 1 < len(self.downsample):
                h = self.downsample[level - 1](h)
        for blk in self.middle:
            h = blk(h, emb)
        for i, blk in enumerate(self.up):
            h = blk(torch.cat([h, skips.pop()], dim=1), emb)
            level, last_in_level = divmod(i + 1, self.num_blocks)
            if last_in_level == 0 and level - 1 < len(self.upsample):
                h = self.upsample[level - 1](h)
        return self.readout(h)


PRESETS: dict[str, dict] = {
    # PDEArena "Unetmod-64" layout: hidden 64, channel multipliers (1, 2, 2, 4), 2 blocks per level.
    "unet": {"cls": UNet, "hidden": 64, "channel_mults": (1, 2, 2, 4), "num_blocks": 2},
    # CPU size: hidden 16, three levels, one block per level.
    "unet-small": {"cls": UNet, "hidden": 16, "channel_mults": (1, 2, 2), "num_blocks": 1},
}
