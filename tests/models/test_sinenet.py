"""SineNet: reference parameter count and block structure, up-sampling, shift equivariance, overfitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.sinenet import SineNet, upsample
from training import presets

GRIDS = {1: (64,), 2: (32, 32)}
TINY = dict(hidden=8, mult=1.5, levels=2, waves=2)


def make(ndim: int, cond_dim: int, **kw) -> SineNet:
    torch.manual_seed(0)
    return SineNet(ndim, channels=2, time_history=3, time_future=2, cond_dim=cond_dim, **{**TINY, **kw})


def inputs(ndim: int, cond_dim: int, batch: int = 2, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 2, *GRIDS[ndim], generator=g, dtype=dtype)
    cond = torch.rand(batch, cond_dim, generator=g, dtype=dtype) if cond_dim else None
    return x, cond


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("cond_dim", [0, 2])
def test_periodic_shift_equivariance(ndim: int, cond_dim: int) -> None:
    net = make(ndim, cond_dim).double()
    x, cond = inputs(ndim, cond_dim, dtype=torch.float64)
    dims = tuple(range(3, 3 + ndim))
    step = net.translation_step
    assert step == 4
    shifts = (step, 3 * step)[:ndim]
    with torch.no_grad():
        y = net(x, cond)
        y_shifted = net(torch.roll(x, shifts, dims), cond)
        y_one = net(torch.roll(x, (1,) * ndim, dims), cond)
    torch.testing.assert_close(y_shifted, torch.roll(y, shifts, dims), rtol=0, atol=1e-10)
    # A shift by one cell does not commute with the pooling: the test above can fail.
    assert (y_one - torch.roll(y, (1,) * ndim, dims)).abs().max() > 1e-4


def test_upsample_is_torch_bicubic_and_the_reference_circular_interpolation() -> None:
    # Non-periodic: F.interpolate(mode="bicubic") as in the reference with zero padding; periodic: the
    # reference's circular_interpolate (pad 2 cells circularly, interpolate, crop 4 fine cells).
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(upsample(x, periodic=False), F.interpolate(x, scale_factor=2, mode="bicubic"))
    padded = F.interpolate(F.pad(x, (2, 2, 2, 2), mode="circular"), scale_factor=2, mode="bicubic")
    torch.testing.assert_close(upsample(x, periodic=True), padded[..., 4:-4, 4:-4])
    # 1D: the same kernel along the one axis (a field constant along y reduces 2D to 1D).
    line = torch.randn(1, 2, 8, dtype=torch.float64)
    for periodic in (False, True):
        plane = upsample(line[..., None].expand(-1, -1, -1, 4), periodic)
        torch.testing.assert_close(upsample(line, periodic), plane[..., 0])
    # Periodic up-sampling commutes with shifts (one coarse cell = two fine cells).
    torch.testing.assert_close(
        upsample(torch.roll(x, (1, 1), (2, 3)), periodic=True),
        torch.roll(upsample(x, periodic=True), (2, 2), (2, 3)),
    )


def test_conditioning_changes_output() -> None:
    net = make(1, 2)
    x, cond = inputs(1, 2)
    with torch.no_grad():
        assert (net(x, cond) - net(x, cond + 0.3)).abs().max() > 1e-4


def test_sinenet8_parameter_count_is_the_reference() -> None:
    # Incompressible Navier-Stokes (PDEArena): 4 history frames of 1 scalar + 1 velocity = 3 channels,
    # 1 future frame. The reference `sinenet8-dual` (divelab/AIRS) has 35,490,219 parameters.
    with torch.device("meta"):
        net = presets.build("sinenet", ndim=2, channels=3, time_history=4, time_future=1)
    assert net.hparams["waves"] == 8 and net.hparams["mult"] == 1.425
    assert net.num_parameters() == 35_490_219
    # Channels per level: int(64 · 1.425**l).
    assert [level.proj.out_channels for level in net.waves[0].down] == [91, 129, 185, 263]


@pytest.mark.parametrize("ndim", [1, 2])
def test_levels_are_post_norm_blocks_with_a_projection_of_the_unconcatenated_input(ndim: int) -> None:
    net = make(ndim, 0, hidden=8, mult=1.5, levels=3)
    widths = [8, 12, 18, 27]
    calls: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        module.register_forward_hook(
            lambda m, args, out, name=name: calls.append((name, tuple(args[0].shape)))
        )
        for name, module in net.waves[0].named_modules()
        if not list(module.children())
    ]
    x, _ = inputs(ndim, 0, batch=1)
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    # conv → GroupNorm(1) → GELU, twice, then the 1×1 projection of the pooled (down) or up-sampled (up)
    # input alone; at level 2 the block sees [pooled features, pooled wave input].
    level2 = [(name, shape[1]) for name, shape in calls if name.startswith("down.1.")]
    assert level2 == [
        ("down.1.block.conv1", widths[1] + widths[0]),
        ("down.1.block.norm1", widths[2]),
        ("down.1.block.act", widths[2]),
        ("down.1.block.conv2", widths[2]),
        ("down.1.block.norm2", widths[2]),
        ("down.1.block.act", widths[2]),
        ("down.1.proj", widths[1]),
    ]
    up0 = [(name, shape[1]) for name, shape in calls if name.startswith("up.2.")]
    assert up0[0] == ("up.2.block.conv1", widths[1] + widths[0]) and up0[-1] == ("up.2.proj", widths[1])
    block = net.waves[0].down[1].block
    assert isinstance(block.norm1, torch.nn.GroupNorm) and block.norm1.num_groups == 1
    assert isinstance(block.act, torch.nn.GELU) and block.conv1.bias is not None
    assert net.waves[0].down[1].proj.kernel_size == (1,) * ndim


def test_grid_not_divisible_and_bad_hyperparameters_are_refused() -> None:
    net = make(1, 0)
    with pytest.raises(ValueError, match=r"multiple of 2\*\*levels = 4"):
        net(torch.zeros(1, 3, 2, 30))
    with pytest.raises(ValueError, match="waves=0"):
        SineNet(1, 1, 1, 1, waves=0)
    with pytest.raises(ValueError, match=r"mult=0\.5"):
        SineNet(1, 1, 1, 1, mult=0.5)


def test_non_periodic_runs_and_hparams_rebuild() -> None:
    net = make(2, 0, periodic=False)
    x, _ = inputs(2, 0)
    assert net(x).shape == (2, 2, 2, 32, 32)
    assert type(net)(**net.hparams).num_parameters() == net.num_parameters()


def test_small_preset_overfits_one_batch() -> None:
    torch.manual_seed(0)
    net = presets.build("sinenet-small", ndim=1, channels=1, time_history=4, time_future=1)
    assert net.num_parameters() < 300_000
    g = torch.Generator().manual_seed(2)
    x, target = torch.randn(4, 4, 1, 32, generator=g), torch.randn(4, 1, 1, 32, generator=g)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = (net(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 100:
            break
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1], len(losses))
