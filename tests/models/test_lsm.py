"""LSM: reference parameter count and backbone, patch layout, BatchNorm modes, spectral block, refusals."""

from __future__ import annotations

import pytest
import torch

from models.lsm import LSM, NeuralSpectralBlock, patch_layout
from training import presets

GRIDS = {1: (64,), 2: (32, 32)}
TINY = dict(width=8, levels=3, num_basis=12, num_token=4, num_heads=2)


def make(ndim: int, cond_dim: int, **kw) -> LSM:
    torch.manual_seed(0)
    return LSM(ndim, channels=2, time_history=3, time_future=2, cond_dim=cond_dim, **{**TINY, **kw})


def inputs(ndim: int, cond_dim: int, grid: tuple[int, ...] | None = None, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, *(grid or GRIDS[ndim]), generator=g, dtype=dtype)
    cond = torch.rand(2, cond_dim, generator=g, dtype=dtype) if cond_dim else None
    return x, cond


@pytest.mark.parametrize(
    ("n", "levels", "periodic", "expected"),
    [
        # The hand-set values of the reference experiments (Navier-Stokes 64, Darcy 85, Pipe 129).
        (64, 4, True, (4, 0)),
        (85, 4, False, (6, 11)),
        (129, 4, False, (9, 15)),
        (32, 3, True, (4, 0)),
        (8, 3, True, (1, 0)),
    ],
)
def test_patch_layout(n: int, levels: int, periodic: bool, expected: tuple[int, int]) -> None:
    assert patch_layout(n, levels, periodic) == expected


@pytest.mark.parametrize("grid", [(60,), (30, 20)])
def test_non_periodic_grids_are_padded_and_cropped(grid: tuple[int, ...]) -> None:
    net = make(len(grid), 0, periodic=False)
    x, _ = inputs(len(grid), 0, grid)
    assert net(x).shape == (2, 2, 2, *grid)


def test_lsm_2d_parameter_count_is_the_reference() -> None:
    # thuml LSM_2D on Navier-Stokes: 10 frames → 1 on 64², d_model 64, 4 tokens, 12 bases, 4×4 patches.
    with torch.device("meta"):
        net = presets.build("lsm", ndim=2, channels=1, time_history=10, time_future=1, n=64)
    assert net.num_parameters() == 19_188_033
    assert patch_layout(64, net.levels, net.periodic) == (4, 0)


def record(net: LSM, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Input and output of every module of ``net`` in one forward pass (last call wins)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, (args[0], out)))
        for name, module in net.named_modules()
        if name
    ]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("ndim", [1, 2])
def test_backbone_is_the_reference_unet(ndim: int) -> None:
    net = make(ndim, 0).double().eval()
    x, _ = inputs(ndim, 0, dtype=torch.float64)
    seen = record(net, x)
    batch_norm = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d}[ndim]
    for block in [*net.encoder, *net.decoder]:
        # Double convolution: conv without bias → BatchNorm → ReLU, twice.
        assert block.conv1.bias is None and block.conv2.bias is None
        assert isinstance(block.norm1, batch_norm) and isinstance(block.norm2, batch_norm)
        assert isinstance(block.act, torch.nn.ReLU)
    name = "encoder.1"
    conv1_out = seen[f"{name}.conv1"][1]
    torch.testing.assert_close(seen[f"{name}.norm1"][0], conv1_out)
    torch.testing.assert_close(seen[f"{name}.act"][0], seen[f"{name}.norm2"][1])  # last call: 2nd ReLU
    # Max pooling between levels.
    pool = torch.nn.functional.max_pool1d if ndim == 1 else torch.nn.functional.max_pool2d
    torch.testing.assert_close(seen["encoder.1"][0], pool(seen["encoder.0"][1], 2))
    # Decoder: [skip, up-sampled] with corner-aligned (bi)linear up-sampling; middle channels in // 2.
    mode = "linear" if ndim == 1 else "bilinear"
    deepest = seen[f"spectral.{net.levels}"][1]
    up = torch.nn.functional.interpolate(deepest, scale_factor=2, mode=mode, align_corners=True)
    skip = seen[f"spectral.{net.levels - 1}"][1]
    torch.testing.assert_close(seen["decoder.0"][0], torch.cat([skip, up], dim=1))
    assert [(b.conv1.in_channels, b.conv1.out_channels, b.conv2.out_channels) for b in net.decoder] == [
        (64, 32, 16),
        (32, 16, 8),
        (16, 8, 8),
    ]
    # Lift: frames and cell coordinates linspace(0, 1, n) per axis.
    lifted = seen["lift"][0]
    assert lifted.shape[1] == 3 * 2 + ndim
    grid = torch.linspace(0, 1, GRIDS[ndim][0], dtype=torch.float64)
    torch.testing.assert_close(
        lifted[0, 6].flatten(), grid.repeat_interleave(GRIDS[ndim][-1] if ndim == 2 else 1)
    )


def test_no_periodic_shift_commutes_with_the_network() -> None:
    # Coordinate channels and corner-aligned up-sampling see absolute position, as in the reference.
    net = make(1, 0, n=64).double()
    assert net.translation_step is None
    x, _ = inputs(1, 0, dtype=torch.float64)
    with torch.no_grad():
        y, y_shifted = net(x), net(torch.roll(x, 32, 3))
    assert (y_shifted - torch.roll(y, 32, 3)).abs().max() > 1e-4


@pytest.mark.parametrize("ndim", [1, 2])
def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones(ndim: int) -> None:
    net = make(ndim, 2)
    x, cond = inputs(ndim, 2)
    norm = net.encoder[0].norm1
    assert norm.running_mean.abs().max() == 0
    with torch.no_grad():
        train_one = net(x[:1], cond[:1])  # batch size 1 trains (statistics over the grid)
        train_pair = net(x, cond)
    assert torch.isfinite(train_one).all() and norm.running_mean.abs().max() > 0
    assert (train_pair[:1] - train_one).abs().max() > 1e-4  # training couples the samples of a batch
    net.eval()
    with torch.no_grad():
        eval_one, eval_pair = net(x[:1], cond[:1]), net(x, cond)
    torch.testing.assert_close(eval_pair[:1], eval_one)  # evaluation does not
    loss = net(x, cond).square().mean()
    loss.backward()  # eval-mode gradients (validation rollouts need none, but fine-tuning may)
    assert net.lift.weight.grad is not None


@pytest.mark.parametrize("ndim", [1, 2])
def test_spectral_block_commutes_with_patch_shifts_and_permutations(ndim: int) -> None:
    # No positional information enters the block: shifting by whole patches, or permuting the cells
    # inside one patch when the field is a single patch, permutes the output in the same way.
    torch.manual_seed(0)
    block = NeuralSpectralBlock(8, num_basis=12, num_token=4, num_heads=2).double()
    patch = (4,) * ndim
    x = torch.randn(2, 8, *(16,) * ndim, dtype=torch.float64)
    dims = tuple(range(2, 2 + ndim))
    with torch.no_grad():
        torch.testing.assert_close(
            block(torch.roll(x, (4,) * ndim, dims), patch), torch.roll(block(x, patch), (4,) * ndim, dims)
        )
        one = x[(..., *(slice(0, 4),) * ndim)].flatten(2)
        perm = torch.randperm(one.shape[-1])
        whole = tuple(one.shape[-1:]) if ndim == 1 else (4, 4)
        out = block(one.unflatten(-1, whole), whole).flatten(2)
        out_perm = block(one[..., perm].unflatten(-1, whole), whole).flatten(2)
    torch.testing.assert_close(out_perm, out[..., perm])
    # The tokens depend on the content of the patch: a changed cell changes its neighbours' output.
    changed = one.clone()
    changed[..., 0] += 1.0
    with torch.no_grad():
        delta = block(changed.unflatten(-1, whole), whole).flatten(2) - out
    assert delta[..., 1:].abs().max() > 1e-6


def test_grids_that_cannot_be_patched_are_refused() -> None:
    with pytest.raises(ValueError, match=r"too small for levels=3.*2\*\*levels = 8"):
        make(1, 0, n=4)
    with pytest.raises(ValueError, match=r"periodic grid size 60 must be a multiple of 2\*\*levels = 8"):
        make(1, 0, n=60)
    assert make(1, 0, n=60, periodic=False).hparams["n"] == 60
    net = make(2, 0)
    with pytest.raises(ValueError, match="too small"):
        net(torch.zeros(1, 3, 2, 32, 4))
    with pytest.raises(ValueError, match="width=12 must be divisible by num_heads=8"):
        LSM(1, 1, 1, 1, width=12, num_heads=8)


def test_conditioning_changes_output() -> None:
    net = make(1, 2)
    x, cond = inputs(1, 2)
    with torch.no_grad():
        assert (net(x, cond) - net(x, cond + 0.3)).abs().max() > 1e-4


def test_presets_build_and_rebuild_from_hparams() -> None:
    for name in ("lsm-small", "lsm"):
        with torch.device("meta"):
            net = presets.build(name, ndim=2, channels=1, time_history=10, time_future=1, n=64)
            clone = type(net)(**net.hparams)
        assert clone.num_parameters() == net.num_parameters(), name
    assert net.hparams["num_token"] == 4 and net.hparams["num_basis"] == 12
