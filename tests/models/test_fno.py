"""FNO and its spectral convolution: exact Fourier-mode action, resolution consistency, refusals."""

from __future__ import annotations

import math

import pytest
import torch

from models.fno import FNO
from models.layers import SpectralConv
from training.presets import build


def cells(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)


def test_spectral_conv_1d_multiplies_each_kept_mode_and_drops_the_rest() -> None:
    """``cos(kx) → |W_k| cos(kx + arg W_k)`` for ``k < modes``, and 0 for ``k >= modes``."""
    torch.manual_seed(0)
    layer = SpectralConv(1, 1, modes=5, ndim=1).double()
    x = cells(32)
    for k in range(8):
        out = layer(torch.cos(k * x)[None, None])[0, 0]
        w = (
            layer.weight[0, 0, k].detach().to(torch.complex128)
            if k < 5
            else torch.tensor(0j, dtype=torch.complex128)
        )
        # For k = 0 the real FFT keeps only the real part of W_0 (a real signal stays real).
        expected = w.real * torch.ones_like(x) if k == 0 else w.abs() * torch.cos(k * x + w.angle())
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k1", [3, -3])
def test_spectral_conv_2d_keeps_positive_and_negative_modes_of_the_first_axis(k1: int) -> None:
    """``cos(k1 x + k2 y) → |W| cos(k1 x + k2 y + arg W)`` with ``W`` the weight of mode ``(k1, k2)``."""
    torch.manual_seed(0)
    m1, m2, k2 = 4, 4, 2
    layer = SpectralConv(1, 1, modes=(m1, m2), ndim=2).double()
    X, Y = torch.meshgrid(cells(16), cells(16), indexing="ij")
    out = layer(torch.cos(k1 * X + k2 * Y)[None, None])[0, 0]
    row = k1 if k1 >= 0 else 2 * m1 + k1  # negative wavenumbers sit in the second block of rows
    w = layer.weight[0, 0, row, k2].detach().to(torch.complex128)
    torch.testing.assert_close(out, w.abs() * torch.cos(k1 * X + k2 * Y + w.angle()), atol=1e-12, rtol=0)


def fft_spectral_conv(layer: SpectralConv, x: torch.Tensor) -> torch.Tensor:
    """The layer's map in the FNO papers' formulation: full real FFT, the kept modes multiplied, inverse FFT."""
    axes = tuple(range(-layer.ndim, 0))
    x_ft = torch.fft.rfftn(x, dim=axes)
    weight = layer.weight.to(x_ft.dtype)
    out_ft = x_ft.new_zeros(x.shape[0], weight.shape[1], *x_ft.shape[2:])
    if layer.ndim == 1:
        m = layer.modes[0]
        out_ft[..., :m] = torch.einsum("bix,iox->box", x_ft[..., :m], weight)
    else:
        m1, m2 = layer.modes
        out_ft[..., :m1, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[..., :m1, :m2], weight[..., :m1, :])
        out_ft[..., -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[..., -m1:, :m2], weight[..., m1:, :])
    return torch.fft.irfftn(out_ft, s=x.shape[-layer.ndim :], dim=axes)


@pytest.mark.parametrize(
    ("modes", "shape"),
    [(16, (256,)), (17, (32,)), (17, (33,)), ((12, 12), (64, 64)), ((8, 10), (16, 18)), ((7, 11), (15, 20))],
)
def test_spectral_conv_equals_the_fft_formulation_with_its_gradients(modes, shape) -> None:
    """The truncated transforms as matrix products give the FFT formulation's output and gradients (input and
    complex weights) to float64 round-off, odd grids and the Nyquist wavenumber included."""
    torch.manual_seed(0)
    layer = SpectralConv(5, 6, modes, len(shape)).double()
    x = torch.randn(3, 5, *shape, dtype=torch.float64, requires_grad=True)
    out, reference = layer(x), fft_spectral_conv(layer, x)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-13)
    seed = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, layer.weight], seed)
    expected = torch.autograd.grad(reference, [x, layer.weight], seed)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ndim", [1, 2])
def test_same_weights_at_twice_the_resolution_agree_on_shared_points(ndim: int) -> None:
    """A band-limited input sampled at ``n`` and ``2n``: the outputs agree at the common grid points."""
    torch.manual_seed(0)
    net = FNO(ndim, 2, 1, 1, modes=8, width=16, n_layers=4, projection=32).double()

    def field(n: int) -> torch.Tensor:
        g = cells(n)
        if ndim == 1:
            f = torch.stack([torch.sin(g) + 0.5 * torch.cos(3 * g), 0.3 * torch.sin(2 * g + 1)])
        else:
            X, Y = torch.meshgrid(g, g, indexing="ij")
            f = torch.stack([torch.sin(X) * torch.cos(2 * Y), 0.5 * torch.cos(X - Y)])
        return f[None, None]

    n = 64 if ndim == 1 else 32
    with torch.no_grad():
        coarse, fine = net(field(n)), net(field(2 * n))
    shared = fine[..., ::2] if ndim == 1 else fine[..., ::2, ::2]
    assert ((coarse - shared).norm() / coarse.norm()).item() < 1e-8


def test_too_many_modes_are_refused_at_construction_and_at_first_forward() -> None:
    with pytest.raises(ValueError, match=r"modes=\(12, 12\).*grid \(16, 16\).*modes <= \(8, 9\)"):
        FNO(2, 1, 1, 1, modes=12, n=16)
    net = FNO(2, 1, 1, 1, modes=12)
    with pytest.raises(ValueError, match=r"FNO: modes=\(12, 12\)"):
        net(torch.zeros(1, 1, 1, 16, 16))
    net(torch.zeros(1, 1, 1, 24, 24))  # 24 = 2 · 12 rows and 13 >= 12 columns fit
    with pytest.raises(ValueError, match="modes <= \\(33,\\)"):
        FNO(1, 1, 1, 1, modes=40, n=64)


def test_padding_is_for_non_periodic_data_only() -> None:
    with pytest.raises(ValueError, match=r"padding=0\.25 is for non-periodic data"):
        FNO(1, 1, 1, 1, padding=0.25)
    net = FNO(1, 1, 2, 1, modes=8, width=8, periodic=False, padding=0.25, grid=True)
    x = torch.randn(2, 2, 1, 40)
    assert net(x).shape == (2, 1, 1, 40)
    # Zero padding decouples the two ends: the output is no longer periodic-shift equivariant.
    assert (net(x.roll(7, -1)) - net(x).roll(7, -1)).abs().max() > 1e-4


def test_paper_preset_parameter_count() -> None:
    """FNO-2D of Li et al. (2021): 10 frames + 2 coordinates in, modes 12, width 20, 4 layers."""
    net = FNO(2, 1, 10, 1, modes=12, width=20, n_layers=4, projection=128, grid=True)
    spectral = 4 * 20 * 20 * (2 * 12) * 12
    assert sum(p.numel() for p in net.spectral.parameters()) == spectral == 460_800
    assert net.num_parameters() == 465_557


@pytest.mark.parametrize(
    ("preset", "twice", "once"),
    [("fno-1d-repo", 549_569, 287_425), ("fno-1d-paper", 550_081, 287_937)],
)
def test_burgers_presets_have_the_reference_counts(preset: str, twice: int, once: int) -> None:
    """The FNO paper's Burgers network (input (a(x), x), width 64, 16 modes): 549,569 real parameters in the
    reference's count (utilities3.count_params: a complex weight counts two), 287,425 counted once; the ICLR 2021
    version adds four BatchNorm layers (512 more)."""
    net = build(preset, ndim=1, channels=1, time_history=1, time_future=1, cond_dim=0)
    assert sum(p.numel() * (2 if p.is_complex() else 1) for p in net.parameters()) == twice
    assert net.num_parameters() == once


def test_paper_variant_layers_and_coordinates() -> None:
    """fno-1d-paper: BatchNorm of every Fourier layer's sum, ReLU, coordinates linspace(0, 2π, s)."""
    net = build("fno-1d-paper", ndim=1, channels=1, time_history=1, time_future=1, cond_dim=0).double().eval()
    assert len(net.norms) == 4 and isinstance(net.act, torch.nn.ReLU)
    a = torch.randn(3, 1, 1, 64, dtype=torch.float64)
    grid = net._coordinates(a.flatten(1, 2))
    torch.testing.assert_close(grid[0, 0], torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64))
    # one layer by hand: lift (a, x), spectral + 1x1, BatchNorm (running statistics), ReLU
    h = net.lift(torch.cat([a[:, 0], grid], dim=1))
    h = torch.relu(net.norms[0](net.spectral[0](h) + net.pointwise[0](h)))
    for i in range(1, 4):
        h = net.norms[i](net.spectral[i](h) + net.pointwise[i](h))
        h = torch.relu(h) if i < 3 else h
    torch.testing.assert_close(net(a)[:, 0], net.project(h), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"activation='tanh' is not allowed; allowed: gelu, relu"):
        FNO(1, 1, 1, 1, activation="tanh")
    with pytest.raises(ValueError, match=r"norm='layer' is not allowed; allowed: none, batch"):
        FNO(1, 1, 1, 1, norm="layer")


@pytest.mark.parametrize(("ndim", "bias"), [(1, True), (2, True), (1, False)])
def test_pointwise_layers_are_their_convolutions(ndim: int, bias: bool) -> None:
    """The batched-product 1×1 layers give the convolution's output and gradients with its parameters."""
    from models.layers import conv_nd, pointwise_nd

    torch.manual_seed(0)
    layer = pointwise_nd(ndim)(6, 5, bias=bias).double()
    conv = conv_nd(ndim)(6, 5, 1, bias=bias).double()
    conv.load_state_dict(layer.state_dict())
    x = torch.randn(3, 6, *(7,) * ndim, dtype=torch.float64, requires_grad=True)
    out, expected = layer(x), conv(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    seed = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *layer.parameters()], seed)
    want = torch.autograd.grad(expected, [x, *conv.parameters()], seed)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("preset", ["fno-2d-paper", "fno-1d-repo", "fno-1d-paper"])
def test_paper_presets_use_the_references_linspace_coordinates_and_i_over_n_is_an_option(preset: str) -> None:
    """The reference builds its grid channels with ``linspace(0, extent, s)``: cell ``i`` at ``i/(s − 1)``
    (``fourier_2d_time.py``, ``fourier_1d.py``); ``grid_endpoint=False`` gives the periodic ``i/s``."""
    ndim = 2 if "2d" in preset else 1
    net = build(preset, ndim=ndim, channels=1, time_history=1, time_future=1, cond_dim=0)
    extent = net.grid_extent
    x = torch.zeros(1, 1, *(8,) * ndim)
    grid = net._coordinates(x)
    assert net.grid and net.grid_endpoint
    torch.testing.assert_close(grid[0, 0].flatten()[:: 8 ** (ndim - 1)], torch.arange(8) * extent / 7)
    periodic = build(
        preset, ndim=ndim, channels=1, time_history=1, time_future=1, cond_dim=0, grid_endpoint=False
    )
    torch.testing.assert_close(periodic._coordinates(x)[0, -1].flatten()[:8], torch.arange(8) * extent / 8)
    with pytest.raises(ValueError, match="grid_endpoint='maybe'; allowed: true, false"):
        build(preset, ndim=ndim, channels=1, time_history=1, time_future=1, cond_dim=0, grid_endpoint="maybe")
