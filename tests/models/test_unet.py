"""Modern U-Net: grid refusal, option checks, padding modes, the PDEArena Unetmod layout."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from models.layers import ResidualBlock
from models.unet import PeriodicUpsample, UNet
from training import presets


def small(**kw: object) -> UNet:
    return UNet(1, 1, 2, 1, hidden=8, channel_mults=(1, 2, 2), num_blocks=1, **kw)


def test_grid_not_divisible_by_the_downsampling_factor_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"grid \(62,\) is not divisible by the total down-sampling factor 4"
    ):
        small()(torch.zeros(1, 2, 1, 62))
    with pytest.raises(ValueError, match="factor 4"):
        small(n=30)
    with pytest.raises(ValueError, match=r"grid \(32, 18\).*factor 4"):
        UNet(2, 1, 2, 1, hidden=8, channel_mults=(1, 2, 2), num_blocks=1)(torch.zeros(1, 2, 1, 32, 18))
    assert small(n=64)(torch.zeros(1, 2, 1, 64)).shape == (1, 1, 1, 64)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(1, 1, 2, 1, channel_mults=())
    with pytest.raises(ValueError, match="num_blocks=0"):
        UNet(1, 1, 2, 1, num_blocks=0)


def test_translation_step_is_the_total_downsampling_factor() -> None:
    assert small().translation_step == 4
    assert UNet(1, 1, 1, 1, hidden=8, channel_mults=(1, 2, 2, 4)).translation_step == 8


def test_zero_padding_breaks_periodic_equivariance_circular_keeps_it() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 1, 32)
    for periodic, equivariant in ((True, True), (False, False)):
        net = small(periodic=periodic)
        err = (net(x.roll(4, -1)) - net(x).roll(4, -1)).abs().max().item()
        assert (err < 1e-5) == equivariant, (periodic, err)


def full(ndim: int, **shape: int) -> UNet:
    """The full ``unet`` preset (``conf/model/unet.yaml``), on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        return presets.build("unet", ndim=ndim, **shape)


def test_full_preset_has_the_parameter_count_of_pdearena_unetmod_64() -> None:
    # PDEArena "Unetmod-64" (pdearena/modules/twod_unet.py, norm=True): 4 frames of one scalar field in,
    # one frame out, unconditioned: 144,257,921 parameters in the reference implementation.
    assert full(2, channels=1, time_history=4, time_future=1, cond_dim=0).num_parameters() == 144_257_921


def test_widths_are_cumulative_and_every_decoder_level_runs_num_blocks_plus_one_blocks() -> None:
    net = full(2, channels=1, time_history=4, time_future=1, cond_dim=0)
    assert net.widths == [64, 128, 256, 1024]
    encoder = [layer.conv1.out_channels for layer in net.down if isinstance(layer, ResidualBlock)]
    assert encoder == [64, 64, 128, 128, 256, 256, 1024, 1024]
    levels, count = [], 0
    for layer in net.up:
        if isinstance(layer, PeriodicUpsample):
            levels.append(count)
            count = 0
        else:
            count += 1
    assert [*levels, count] == [3, 3, 3, 3]
    # Decoder inputs: running features plus one skip, popped from the lift, every encoder block and
    # every down-sampling output (deepest first): the last block of each level reduces the width.
    decoder = [(b.conv1.in_channels, b.conv1.out_channels) for b in net.up if isinstance(b, ResidualBlock)]
    assert decoder == [
        (2048, 1024), (2048, 1024), (1280, 256),
        (512, 256), (512, 256), (384, 128),
        (256, 128), (256, 128), (192, 64),
        (128, 64), (128, 64), (128, 64),
    ]  # fmt: skip


def test_norms_upsampling_and_conditioning_layers_are_the_references() -> None:
    net = full(1, channels=1, time_history=2, time_future=1, cond_dim=3)
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 8 + 2 + 12
    assert all(b.norm1.num_groups == 1 and b.norm2.num_groups == 1 for b in blocks)
    assert net.readout[0].num_groups == 8 and net.readout[2].kernel_size == (3,)
    ups = [m for m in net.up if isinstance(m, PeriodicUpsample)]
    assert [(u.conv.kernel_size, u.conv.stride) for u in ups] == [((4,), (2,))] * 3
    # One sinusoidal embedding + MLP (64 -> 256 -> 256) per conditioning scalar; each block adds a bias.
    assert len(net.embed) == 3
    assert all(
        [m.out_features for m in e.mlp if isinstance(m, torch.nn.Linear)] == [256, 256] for e in net.embed
    )
    assert all(b.film.out_features == b.conv1.out_channels and not b.scale_shift for b in blocks)


def test_zero_init_zeroes_the_second_conv_of_every_block_and_the_readout() -> None:
    net = UNet(1, 1, 2, 1, cond_dim=1, hidden=8, channel_mults=(1, 2), zero_init=True)
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    zeroed = (
        [b.conv2.weight for b in blocks] + [b.conv2.bias for b in blocks] + list(net.readout[2].parameters())
    )
    assert all(p.abs().max() == 0 for p in zeroed)
    assert all(b.conv1.weight.abs().max() > 0 for b in blocks)
    assert net(torch.randn(2, 2, 1, 16), torch.rand(2, 1)).abs().max() == 0
    plain = UNet(1, 1, 2, 1, cond_dim=1, hidden=8, channel_mults=(1, 2))
    assert all(b.conv2.weight.abs().max() > 0 for b in plain.modules() if isinstance(b, ResidualBlock))


@pytest.mark.parametrize(("cond_dim", "zeroed"), [(0, False), (2, True)])
def test_the_presets_zero_init_follows_the_reference_conditioned_only(cond_dim: int, zeroed: bool) -> None:
    """``unet.yaml`` (PDEArena's Unetmod-64): its conditioned U-Nets zero-initialise the block outputs and the
    readout; its unconditioned 2D ``twod_unet.Unet`` keeps PyTorch's default initialisation."""
    net = presets.build(
        "unet-small",
        ndim=2,
        channels=1,
        time_history=1,
        time_future=1,
        cond_dim=cond_dim,
        zero_init="conditioned",
    )
    readout = net.readout[2].weight
    assert bool(readout.abs().max() == 0) == zeroed
    with pytest.raises(ValueError, match="zero_init='yes'; allowed: true, false, conditioned"):
        UNet(1, 1, 2, 1, zero_init="yes")
    assert OmegaConf.load(presets.PRESET_DIR / "unet.yaml").zero_init == "conditioned"


@pytest.mark.parametrize("ndim", [1, 2])
def test_periodic_upsampling_wraps_the_transposed_convolution_around_the_domain(ndim: int) -> None:
    torch.manual_seed(0)
    periodic, cropped = PeriodicUpsample(3, ndim, True), PeriodicUpsample(3, ndim, False)
    cropped.load_state_dict(periodic.state_dict())
    x = torch.randn(2, 3, *([8] * ndim))
    out = periodic(x)
    assert out.shape == (2, 3, *([16] * ndim))
    # Away from the boundary both agree; at it, the periodic one adds the overhang from the other side.
    interior = (slice(None), slice(None), *([slice(1, -1)] * ndim))
    torch.testing.assert_close(out[interior], cropped(x)[interior])
    dims = tuple(range(2, 2 + ndim))
    torch.testing.assert_close(periodic(x.roll((1,) * ndim, dims)), out.roll((2,) * ndim, dims))
    # The value of a wrapped cell: in 1D the first output cell sums kernel taps 1 (from input 0) and 3
    # (from input n - 1); the bias is added once.
    if ndim == 1:
        w, b = periodic.conv.weight, periodic.conv.bias
        expected = torch.einsum("bi,io->bo", x[..., 0], w[..., 1]) + torch.einsum(
            "bi,io->bo", x[..., -1], w[..., 3]
        )
        torch.testing.assert_close(out[..., 0], expected + b)
