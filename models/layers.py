"""Small layers shared by every architecture: dimension-generic convolutions, conditioning, residual blocks."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn


def conv_nd(ndim: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    return {1: nn.Conv1d, 2: nn.Conv2d}[ndim]


class _Pointwise:
    """The forward of a 1×1 convolution as one batched matrix product (``baddbmm``): 1.3–5× faster than the
    convolution kernel on the CPU, forward and backward, for the FNO's channel widths. Parameters, their
    initialisation and the state dict are the convolution's."""

    weight: Tensor
    bias: Tensor | None
    in_channels: int
    out_channels: int

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        weight = self.weight.view(1, self.out_channels, self.in_channels).expand(batch, -1, -1)
        flat = x.reshape(batch, self.in_channels, -1)
        if self.bias is None:
            out = torch.bmm(weight, flat)
        else:
            out = torch.baddbmm(self.bias.view(1, -1, 1), weight, flat)
        return out.view(batch, self.out_channels, *x.shape[2:])


class Pointwise1d(_Pointwise, nn.Conv1d):
    """``nn.Conv1d(in_channels, out_channels, 1)`` computed as a batched matrix product."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)


class Pointwise2d(_Pointwise, nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, 1)`` computed as a batched matrix product."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)


def pointwise_nd(ndim: int) -> type[Pointwise1d] | type[Pointwise2d]:
    """The 1×1 convolution of ``ndim`` dimensions as a batched matrix product."""
    return {1: Pointwise1d, 2: Pointwise2d}[ndim]


def num_groups(channels: int, preferred: int = 8) -> int:
    """Largest group count ``<= preferred`` that divides ``channels`` (for GroupNorm)."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


class FourierEmbedding(nn.Module):
    """Embeds a conditioning vector ``[B, P]`` as ``[B, out_dim]``.

    Each scalar ``c`` becomes ``dim`` sinusoidal features, then the concatenation for all ``P`` scalars goes
    through a two-layer MLP ``Linear(P · dim, out_dim) → GELU → Linear(out_dim, out_dim)`` (``out_dim = dim``
    by default). Two feature layouts:

    * ``"unit"`` (pdestream's, for scalars the caller has normalised to about unit range):
      ``[sin(2π f_j c), cos(2π f_j c)]`` for ``dim // 2`` log-spaced frequencies ``f_j`` in ``[1, max_freq]``;
    * ``"pdearena"`` (PDEArena's ``fourier_embedding``, ``pdearena/modules/conditioned/condition_utils.py``,
      for raw scalars such as a diffusion step ``t · 1000 / K``): ``[cos(ω_j c), sin(ω_j c)]`` with
      ``ω_j = 10000^(−j / half)``, ``j = 0 … half − 1``, computed in float32 as the reference does.
    """

    LAYOUTS = ("unit", "pdearena")

    def __init__(
        self,
        cond_dim: int,
        dim: int,
        max_freq: float = 100.0,
        out_dim: int | None = None,
        layout: str = "unit",
    ) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierEmbedding: dim={dim} must be even")
        if layout not in self.LAYOUTS:
            raise ValueError(f"FourierEmbedding: layout={layout!r}; allowed: {', '.join(self.LAYOUTS)}")
        half = dim // 2
        out_dim = out_dim or dim
        self.layout = layout
        if layout == "unit":
            freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half))
        else:
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(cond_dim * dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, cond: Tensor) -> Tensor:
        if self.layout == "unit":
            angles = 2 * math.pi * cond[..., None] * self.freqs.to(cond.dtype)  # [B, P, dim/2]
            features = torch.cat([angles.sin(), angles.cos()], dim=-1)
        else:
            angles = cond[..., None].float() * self.freqs.float()
            features = torch.cat([angles.cos(), angles.sin()], dim=-1).to(cond.dtype)
        return self.mlp(features.flatten(1))


class ResidualBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(act(norm(cond(conv(act(norm(x))), emb))))``.

    GroupNorm → GELU → 3-conv → conditioning → GroupNorm → GELU → 3-conv, plus a 1×1 projection on the
    skip path when the channel count changes (the PDEArena/PDE-Refiner modern U-Net block). The
    embedding enters either as a per-channel scale and shift after the second norm,
    ``(1 + scale) · norm(h) + shift`` (``scale_shift=True``, PDEArena's ``use_scale_shift_norm``), or as
    a per-channel bias added before it, ``norm(h + Linear(emb))`` (``scale_shift=False``, PDEArena's
    default). ``emb_dim=0`` gives an unconditioned block; ``padding_mode="circular"`` for periodic domains.

    Args:
        groups: GroupNorm groups; ``None``: the largest count ``<= 8`` dividing the channels.
        zero_init: start the second convolution at zero, so that the block starts as its skip path
            (PDEArena's ``zero_module`` in its conditioned U-Nets).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ndim: int,
        emb_dim: int = 0,
        padding_mode: str = "circular",
        norm: bool = True,
        groups: int | None = None,
        scale_shift: bool = True,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        conv = conv_nd(ndim)

        def group_norm(c: int) -> nn.Module:
            return nn.GroupNorm(groups or num_groups(c), c) if norm else nn.Identity()

        self.norm1 = group_norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        self.norm2 = group_norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)
        self.act = nn.GELU()
        self.skip = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.scale_shift = scale_shift
        self.film = nn.Linear(emb_dim, (2 if scale_shift else 1) * out_channels) if emb_dim else None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        if self.film is not None and emb is not None:
            film = self.film(emb).reshape(emb.shape[0], -1, *([1] * (h.ndim - 2)))
            if self.scale_shift:
                scale, shift = film.chunk(2, dim=1)
                h = self.norm2(h) * (1 + scale) + shift
            else:
                h = self.norm2(h + film)
        else:
            h = self.norm2(h)
        h = self.conv2(self.act(h))
        return self.skip(x) + h


def check_modes(modes: tuple[int, ...], shape: tuple[int, ...], owner: str = "SpectralConv") -> None:
    """Raise ``ValueError`` unless a grid of size ``shape`` holds the requested Fourier ``modes``.

    The last axis keeps wavenumbers ``0 … modes[-1] - 1`` of its ``n // 2 + 1`` real-FFT coefficients;
    every other axis keeps ``modes[i]`` non-negative and ``modes[i]`` negative wavenumbers, which must
    not overlap: ``2 · modes[i] <= n_i``.
    """
    allowed = (*(n // 2 for n in shape[:-1]), shape[-1] // 2 + 1)
    if len(modes) != len(shape) or any(m > a for m, a in zip(modes, allowed, strict=True)):
        raise ValueError(
            f"{owner}: modes={modes} do not fit the grid {shape}; allowed per axis: modes <= {allowed} "
            "(n // 2 for the leading axes, which keep positive and negative modes; n // 2 + 1 for the last)"
        )


@functools.cache
def _real_dft(n: int, modes: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The real FFT of length ``n`` truncated to wavenumbers ``0 … modes-1`` as two real matrices.

    ``x @ forward`` (``[n, 2·modes]``) gives ``[Re X_k …, Im X_k …]``; ``[Re Y; Im Y] @ inverse``
    (``[2·modes, n]``) is ``irfft(Y, n)`` of those coefficients, the others zero (the imaginary parts of
    ``k = 0`` and of the Nyquist wavenumber dropped, as ``irfft`` drops them).
    """
    k = torch.arange(modes, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(torch.arange(n, dtype=torch.float64), k) / n  # [n, modes]
    cos, sin = torch.cos(angle), torch.sin(angle)
    weight = torch.full((modes,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0 and modes == n // 2 + 1:
        weight[-1] = 1.0
    forward = torch.cat([cos, -sin], dim=1)
    inverse = torch.cat([(weight * cos).T, -(weight * sin).T], dim=0) / n
    return forward.to(device, dtype), inverse.to(device, dtype)


@functools.cache
def _complex_dft(n: int, modes: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The complex FFT of length ``n`` truncated to wavenumbers ``0 … modes-1`` and ``-modes … -1``, acting on
    stacked real and imaginary parts: ``forward @ [Re; Im]`` (``[4·modes, 2n]``) and ``inverse @ [Re; Im]``
    (``[2n, 4·modes]``, ``ifft``'s ``(1/n) Σ_k Z_k e^{+2πikj/n}`` over the kept wavenumbers)."""
    k = torch.cat([torch.arange(modes), torch.arange(-modes, 0)]).to(torch.float64)
    angle = 2 * math.pi * torch.outer(k, torch.arange(n, dtype=torch.float64)) / n  # [2·modes, n]
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.cat([torch.cat([cos, sin], 1), torch.cat([-sin, cos], 1)], 0)
    inverse = torch.cat([torch.cat([cos.T, -sin.T], 1), torch.cat([sin.T, cos.T], 1)], 0) / n
    return forward.to(device, dtype), inverse.to(device, dtype)


class SpectralConv(nn.Module):
    """Fourier layer of the FNO (Li et al., ICLR 2021): ``y = F⁻¹(W · F(x))`` on the lowest modes.

    ``F`` is the real FFT over the ``ndim`` trailing axes of ``[B, C_in, *S]``; the coefficients with
    ``|k_i| < modes[i]`` on the leading axes (positive and negative wavenumbers) and ``0 <= k < modes[-1]``
    on the last axis are multiplied by a learned complex matrix ``W_k ∈ C^{C_in × C_out}`` per mode, all
    other coefficients are set to zero. The default (``"backward"``) FFT normalisation makes the layer
    independent of the grid resolution: the same weights act on the same Fourier coefficients of the
    underlying function at any ``n`` that holds the modes. Periodic in every axis by construction.

    Only the kept coefficients are ever computed: each axis's transform, truncated to its modes, is a real
    matrix product (a discrete Fourier transform of ``n × 2·modes`` entries, cached per grid), and the mode
    mixing is one batched real product over the modes (real and imaginary parts stacked), so a layer is
    three matrix products forward and backward, with no full spectrum, zero-filled buffer or complex
    autograd. It equals the FFT formulation to float round-off (``tests/models``).

    Complex weights are stored as ``complex64`` parameters (one parameter per complex number in
    ``numel()``), initialised like the reference implementation: real and imaginary parts uniform in
    ``[0, 1 / (C_in · C_out))``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | tuple[int, ...], ndim: int) -> None:
        super().__init__()
        self.modes = (modes,) * ndim if isinstance(modes, int) else tuple(modes)
        if len(self.modes) != ndim or any(not isinstance(m, int) or m < 1 for m in self.modes):
            raise ValueError(f"SpectralConv: modes={modes!r} must be one int >= 1 or {ndim} of them")
        if ndim not in (1, 2):
            raise ValueError(f"SpectralConv: ndim={ndim} is not allowed; allowed: 1, 2")
        self.ndim = ndim
        # Leading axes keep 2 · modes coefficients (non-negative block first, then the negative block).
        shape = (in_channels, out_channels, *(2 * m for m in self.modes[:-1]), self.modes[-1])
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(shape, dtype=torch.cfloat))

    def _mixing(self, dtype: torch.dtype) -> Tensor:
        """``[K, 2·C_in, 2·C_out]``: per kept mode, ``[[Re W, Im W], [−Im W, Re W]]``, so that
        ``[Re x, Im x] @ it = [Re(x W), Im(x W)]``."""
        w = torch.view_as_real(self.weight).to(dtype)  # [C_in, C_out, *K, 2]
        w = w.flatten(2, -2).permute(2, 0, 1, 3)  # [K, C_in, C_out, 2]
        re, im = w[..., 0], w[..., 1]
        return torch.cat([torch.cat([re, im], 2), torch.cat([-im, re], 2)], 1)

    def forward(self, x: Tensor) -> Tensor:
        check_modes(self.modes, tuple(x.shape[-self.ndim :]))
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):  # the transforms' sums need single precision
            x = x.float()
        with torch.autocast(x.device.type, enabled=False):  # also under mixed precision
            return self._spectral(x).to(dtype)

    def _spectral(self, x: Tensor) -> Tensor:
        spatial = tuple(x.shape[-self.ndim :])
        batch, n, m = x.shape[0], spatial[-1], self.modes[-1]
        forward_last, inverse_last = _real_dft(n, m, x.device, x.dtype)
        h = (x.reshape(-1, n) @ forward_last).view(*x.shape[:-1], 2, m)  # [B, C, (Nx,) 2, m]
        if self.ndim == 1:
            h = h.permute(3, 0, 2, 1)  # [K = m, B, 2, C]
        else:  # the leading axis: a complex transform of the kept coefficients, one product over (re/im, x)
            nx, mx = spatial[0], self.modes[0]
            forward_lead, inverse_lead = _complex_dft(nx, mx, x.device, x.dtype)
            h = h.permute(0, 1, 4, 3, 2).reshape(-1, 2 * nx) @ forward_lead.T  # [B·C·m, 2·2mx]
            h = h.view(batch, -1, m, 2, 2 * mx).permute(4, 2, 0, 3, 1)  # [2mx, m, B, 2, C]
        h = h.reshape(-1, batch, 2 * x.shape[1])  # [K, B, 2·C] (real parts, then imaginary)
        out = torch.bmm(h, self._mixing(x.dtype))  # [K, B, 2·C_out]
        if self.ndim == 1:
            out = out.view(m, batch, 2, -1).permute(1, 3, 2, 0)  # [B, C_out, 2, m]
        else:
            out = out.view(2 * mx, m, batch, 2, -1).permute(2, 4, 1, 3, 0)  # [B, C_out, m, 2, 2mx]
            out = out.reshape(-1, 4 * mx) @ inverse_lead.T  # [B·C_out·m, 2·Nx]
            out = out.view(batch, -1, m, 2, nx).permute(0, 1, 4, 3, 2)  # [B, C_out, Nx, 2, m]
        y = out.reshape(-1, 2 * m) @ inverse_last
        return y.view(batch, -1, *spatial)
