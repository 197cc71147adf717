"""Modern U-Net of PDEArena (Gupta & Brandstetter, "Towards Multi-spatiotemporal-scale Generalized PDE
Modeling", 2022; code: ``pdearena/modules/twod_unet.py`` and ``pdearena/modules/conditioned/oned_unet.py``,
``Unet``), as used by PDE-Refiner (Lippe et al., NeurIPS 2023, ``Unetmod-1d-64``).

Layout, parameter for parameter the reference's (``norm=True``, no attention, ``use1x1=False``):

* lift: 3-convolution from the stacked input frames to ``hidden`` channels;
* encoder: level ``l`` has width ``w_l = w_{l-1} · channel_mults[l]`` (cumulative: ``(1, 2, 2, 4)`` with
  ``hidden = 64`` gives 64/128/256/1024) and runs ``num_blocks`` residual blocks, then (except at the
  deepest level) a stride-2 3-convolution. The lift output, every block output and every down-sampling
  output are kept as skip connections;
* middle: two residual blocks at the deepest width;
* decoder: level ``l`` (deepest first) runs ``num_blocks`` blocks at width ``w_l`` and one more block that
  reduces the width to ``w_{l-1}`` (``hidden`` at the top), each on the concatenation of the running
  features and one skip; every level but the top then doubles the resolution with a transposed
  convolution (kernel 4, stride 2, padding 1);
* readout: GroupNorm (8 groups) → GELU → 3-convolution.

Residual blocks (:class:`~models.layers.ResidualBlock`) are pre-norm, GroupNorm with one group, GELU.
Conditioning: each conditioning scalar has its own sinusoidal embedding of size ``hidden`` and
two-layer MLP (``hidden → 4 · hidden → 4 · hidden``); their sum enters every block as a per-channel
bias added after the first convolution (the reference's default ``use_scale_shift_norm=False``; set
``scale_shift=True`` for its AdaGN variant). ``zero_init=True`` starts the second convolution of every
block and the readout convolution at zero, as the reference's conditioned U-Nets do; the presets'
``zero_init: conditioned`` does so only for a conditioned network, since the reference's unconditioned
``twod_unet.Unet`` keeps PyTorch's default initialisation.

Deviations from the reference, none of which changes a parameter count: the sinusoidal features use
pdestream's frequency layout (``2π f``, ``f`` log-spaced in ``[1, 100]``, for conditioning scalars of
about unit range; the reference uses ``f`` in ``[1e-4, 1]`` on its raw scalars); with
``periodic=True`` every convolution pads circularly and the transposed convolution wraps its overhang
around the domain, so the network commutes with periodic shifts by multiples of
``2**(len(channel_mults) - 1)`` cells, the total down-sampling factor (the reference pads its
convolutions circularly on KS but its transposed convolution with zeros). Grids must be multiples of
that factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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


class PeriodicUpsample(nn.Module):
    """Doubles the resolution: transposed convolution, kernel 4, stride 2 (PDEArena's ``Upsample``).

    With zero padding the first and last output cell of each axis are cropped (``padding=1``); with
    ``periodic=True`` the full output of ``2n + 2`` cells is folded onto the ``2n`` periodic cells
    instead, so that the layer commutes with shifts of its input by whole cells.
    """

    def __init__(self, channels: int, ndim: int, periodic: bool) -> None:
        super().__init__()
        transposed = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}[ndim]
        self.periodic = periodic
        self.conv = transposed(channels, channels, 4, stride=2, padding=0 if periodic else 1)

    def forward(self, x: Tensor) -> Tensor:
        if not self.periodic:
            return self.conv(x)
        transposed = {3: F.conv_transpose1d, 4: F.conv_transpose2d}[x.ndim]
        h = transposed(x, self.conv.weight, stride=2)  # full output; the bias is added once, after folding
        for axis in range(2, h.ndim):
            inner = h.narrow(axis, 1, h.shape[axis] - 2).clone()
            last = inner.shape[axis] - 1
            inner.narrow(axis, 0, 1).add_(h.narrow(axis, h.shape[axis] - 1, 1))
            inner.narrow(axis, last, 1).add_(h.narrow(axis, 0, 1))
            h = inner
        return h + self.conv.bias.reshape(-1, *([1] * (h.ndim - 2)))


class UNet(SurrogateNet):
    """Modern U-Net (see the module docstring).

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        hidden: channels of the lift (even).
        channel_mults: per level, the factor from the previous level's width to this level's;
            ``len(channel_mults) - 1`` down-samplings.
        num_blocks: residual blocks per encoder level (the decoder runs ``num_blocks + 1``).
        periodic: circular padding (periodic domains); zero padding otherwise.
        emb_dim: conditioning embedding size (used when ``cond_dim > 0``); ``None``: ``4 · hidden``.
        scale_shift: the embedding scales and shifts the normalised features instead of adding a bias.
        zero_init: zero-initialise the second convolution of every block and the readout convolution:
            ``True``, ``False``, or ``"conditioned"`` (only when ``cond_dim > 0``: the reference's conditioned
            U-Nets zero-initialise, its unconditioned ``twod_unet.Unet`` keeps PyTorch's default).
        step_embedding: the last conditioning scalar is a diffusion step on PDEArena's scale (``t · 1000 / K``),
            embedded with PDEArena's ``fourier_embedding`` features (:class:`~models.layers.FourierEmbedding`
            layout ``"pdearena"``), as the reference's ``time`` input; PDE-Refiner sets it.
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
        scale_shift: bool = False,
        zero_init: bool | str = False,
        step_embedding: bool = False,
        n: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__(ndim, channels, time_history, time_future, cond_dim)
        for name, value in (("hidden", hidden), ("num_blocks", num_blocks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet: {name}={value!r} must be an int >= 1")
        if hidden % 2:
            raise ValueError(f"UNet: hidden={hidden} must be even (it is the sinusoidal embedding size)")
        mults = tuple(channel_mults)
        if not mults or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"UNet: channel_mults={channel_mults!r} must be a non-empty list of ints >= 1")
        if zero_init not in (True, False, "conditioned"):
            raise ValueError(f"UNet: zero_init={zero_init!r}; allowed: true, false, conditioned")
        if step_embedding and cond_dim < 1:
            raise ValueError("UNet: step_embedding=True needs cond_dim >= 1 (the step is the last scalar)")
        zero_init = bool(cond_dim) if zero_init == "conditioned" else zero_init
        self.translation_step = 2 ** (len(mults) - 1)
        if n is not None:
            check_grid("UNet", (n,) * ndim if isinstance(n, int) else tuple(n), self.translation_step)
        emb_dim = (emb_dim or 4 * hidden) if cond_dim else 0
        padding_mode = "circular" if periodic else "zeros"
        conv = conv_nd(ndim)

        def block(cin: int, cout: int) -> ResidualBlock:
            return ResidualBlock(
                cin,
                cout,
                ndim,
                emb_dim=emb_dim,
                padding_mode=padding_mode,
                groups=1,
                scale_shift=scale_shift,
                zero_init=zero_init,
            )

        # One embedding per conditioning scalar, summed (PDEArena's time and parameter embeddings).
        layouts = ["unit"] * cond_dim
        if step_embedding:
            layouts[-1] = "pdearena"
        self.embed = nn.ModuleList(
            FourierEmbedding(1, hidden, out_dim=emb_dim, layout=lay) for lay in layouts
        )
        self.lift = conv(self.in_features, hidden, 3, padding=1, padding_mode=padding_mode)
        widths = [hidden]
        for m in mults:
            widths.append(widths[-1] * m)
        self.widths = widths[1:]
        # Encoder: blocks and down-samplings in order; every output is a skip (as is the lift's).
        self.down = nn.ModuleList()
        skips, c = [hidden], hidden
        for level, w in enumerate(self.widths):
            for _ in range(num_blocks):
                self.down.append(block(c, w))
                c = w
                skips.append(c)
            if level < len(mults) - 1:
                self.down.append(conv(c, c, 3, stride=2, padding=1, padding_mode=padding_mode))
                skips.append(c)
        self.middle = nn.ModuleList([block(c, c), block(c, c)])
        # Decoder: num_blocks blocks at the level's width, one reducing to the previous width, up-sampling.
        self.up = nn.ModuleList()
        for level in reversed(range(len(mults))):
            for out in [widths[level + 1]] * num_blocks + [widths[level]]:
                self.up.append(block(c + skips.pop(), out))
                c = out
            if level > 0:
                self.up.append(PeriodicUpsample(c, ndim, periodic))
        self.readout = nn.Sequential(
            nn.GroupNorm(num_groups(c), c),
            nn.GELU(),
            conv(c, self.out_features, 3, padding=1, padding_mode=padding_mode),
        )
        if zero_init:
            nn.init.zeros_(self.readout[-1].weight)
            nn.init.zeros_(self.readout[-1].bias)

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        check_grid("UNet", x.shape[2:], self.translation_step)
        emb = None
        if len(self.embed) and cond is not None:
            emb = torch.stack([e(cond[:, i : i + 1]) for i, e in enumerate(self.embed)]).sum(0)
        h = self.lift(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResidualBlock) else layer(h)
            skips.append(h)
        for blk in self.middle:
            h = blk(h, emb)
        for layer in self.up:
            h = (
                layer(torch.cat([h, skips.pop()], dim=1), emb)
                if isinstance(layer, ResidualBlock)
                else layer(h)
            )
        return self.readout(h)
