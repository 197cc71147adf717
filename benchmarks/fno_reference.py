"""The FNO reference code's networks, rebuilt to its layer order for timing and equivalence tests.

Li et al.'s repository (zongyi-li/fourier_neural_operator, ``fourier_1d.py`` and ``fourier_2d_time.py`` as they
are now) builds its FNO as: the input and its grid coordinates concatenated on the last (channel) axis, a
``Linear`` lift to ``width`` channels, then per layer a spectral convolution (``rfft``, a zero-filled spectrum,
``einsum`` over the kept modes, ``irfft``) plus a ``Conv1d``/``Conv2d`` 1×1 skip, GELU between layers (none
after the last), and a ``Linear(width, 128)`` → GELU → ``Linear(128, 1)`` projection; the 2D network keeps two
weight blocks, for the positive and the negative leading wavenumbers. These classes follow that structure and
computation (the facts of the reference: layer order, shapes, FFT calls) so that a training step costs what the
reference's costs; :func:`load_from` copies a pdestream ``FNO``'s weights into them, after which both compute
the same function. :func:`neuraloperator_fno` builds neuraloperator 2.0's FNO at the same settings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SpectralConv1d(nn.Module):
    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        self.weights1 = nn.Parameter(torch.rand(width, width, modes, dtype=torch.cfloat) / (width * width))

    def forward(self, x: Tensor) -> Tensor:
        x_ft = torch.fft.rfft(x)
        out_ft = torch.zeros(x.shape[0], self.weights1.shape[1], x.shape[-1] // 2 + 1, dtype=torch.cfloat)
        out_ft[:, :, : self.modes] = torch.einsum("bix,iox->box", x_ft[:, :, : self.modes], self.weights1)
        return torch.fft.irfft(out_ft, n=x.shape[-1])


class SpectralConv2d(nn.Module):
    def __init__(self, width: int, modes1: int, modes2: int) -> None:
        super().__init__()
        self.modes1, self.modes2 = modes1, modes2
        shape = (width, width, modes1, modes2)
        self.weights1 = nn.Parameter(torch.rand(shape, dtype=torch.cfloat) / (width * width))
        self.weights2 = nn.Parameter(torch.rand(shape, dtype=torch.cfloat) / (width * width))

    def forward(self, x: Tensor) -> Tensor:
        m1, m2 = self.modes1, self.modes2
        x_ft = torch.fft.rfft2(x)
        shape = (x.shape[0], self.weights1.shape[1], x.shape[-2], x.shape[-1] // 2 + 1)
        out_ft = torch.zeros(shape, dtype=torch.cfloat)
        out_ft[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :m1, :m2], self.weights1)
        out_ft[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -m1:, :m2], self.weights2)
        return torch.fft.irfft2(out_ft, s=(x.shape[-2], x.shape[-1]))


class ReferenceFNO(nn.Module):
    """The reference FNO in 1D (``FNO1d``) or 2D (``FNO2d`` of ``fourier_2d_time.py``), channels last:
    ``[B, *S, in_channels]`` → ``[B, *S, 1]``, the grid coordinates appended inside."""

    def __init__(self, ndim: int, in_channels: int, modes: int, width: int, layers: int = 4) -> None:
        super().__init__()
        self.ndim = ndim
        self.fc0 = nn.Linear(in_channels + ndim, width)
        spectral = (
            (lambda: SpectralConv1d(width, modes))
            if ndim == 1
            else (lambda: SpectralConv2d(width, modes, modes))
        )
        self.convs = nn.ModuleList(spectral() for _ in range(layers))
        conv = nn.Conv1d if ndim == 1 else nn.Conv2d
        self.ws = nn.ModuleList(conv(width, width, 1) for _ in range(layers))
        self.fc1 = nn.Linear(width, 128)
        self.fc2 = nn.Linear(128, 1)

    def grid(self, x: Tensor) -> Tensor:
        axes = [torch.linspace(0, 1, n) for n in x.shape[1:-1]]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        return coords.expand(x.shape[0], *coords.shape)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc0(torch.cat((x, self.grid(x)), dim=-1))
        x = x.permute(0, -1, *range(1, self.ndim + 1))
        for i, (spectral, w) in enumerate(zip(self.convs, self.ws, strict=True)):
            x = spectral(x) + w(x)
            if i < len(self.convs) - 1:
                x = F.gelu(x)
        x = x.permute(0, *range(2, self.ndim + 2), 1)
        return self.fc2(F.gelu(self.fc1(x)))


@torch.no_grad()
def load_from(reference: ReferenceFNO, fno: nn.Module) -> ReferenceFNO:
    """Copy a pdestream ``FNO`` (GELU, no normalisation, grid channels on ``[0, 1]``, no conditioning) into
    ``reference``."""
    reference.fc0.weight.copy_(fno.lift.weight.flatten(1))
    reference.fc0.bias.copy_(fno.lift.bias)
    for spectral, w, theirs, skip in zip(
        reference.convs, reference.ws, fno.spectral, fno.pointwise, strict=True
    ):
        if reference.ndim == 1:
            spectral.weights1.copy_(theirs.weight)
        else:
            m1 = spectral.modes1
            spectral.weights1.copy_(theirs.weight[:, :, :m1])
            spectral.weights2.copy_(theirs.weight[:, :, m1:])
        w.load_state_dict(skip.state_dict())
    first, _, last = fno.project
    reference.fc1.weight.copy_(first.weight.flatten(1))
    reference.fc1.bias.copy_(first.bias)
    reference.fc2.weight.copy_(last.weight.flatten(1))
    reference.fc2.bias.copy_(last.bias)
    return reference


def neuraloperator_fno(
    ndim: int, in_channels: int, modes: int, width: int, layers: int, projection: int, grid: bool
) -> nn.Module:
    """neuraloperator's ``FNO`` (``pip install neuraloperator``) at pdestream's modes, width, depth and projection:
    one linear lifting layer, linear skips, no channel MLPs, the grid coordinates as input channels if ``grid``.
    It counts modes per axis in total (positive and negative), the last axis keeping ``n_modes // 2 + 1``
    real-FFT coefficients: ``2m`` on leading axes and ``2m − 1`` on the last match pdestream's ``m``."""
    from neuralop.models import FNO

    return FNO(
        n_modes=(2 * modes,) * (ndim - 1) + (2 * modes - 1,),
        in_channels=in_channels,
        out_channels=1,
        hidden_channels=width,
        n_layers=layers,
        lifting_channel_ratio=0,
        projection_channel_ratio=projection / width,
        positional_embedding="grid" if grid else None,
        use_channel_mlp=False,  # the paper's block; neuraloperator 2.0 then applies GELU twice (its issue #728)
        fno_skip="linear",
    )
