"""Modern U-Net: grid refusal, option checks, padding modes."""

from __future__ import annotations

import pytest
import torch

from models.unet import UNet


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
