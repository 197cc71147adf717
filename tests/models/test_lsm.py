"""LSM: patch layout, shapes, gradients, the periodic shifts it commutes with, grid refusal."""

from __future__ import annotations

import pytest
import torch

from models.lsm import LSM, PRESETS, NeuralSpectralBlock, patch_layout

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


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("cond_dim", [0, 2])
def test_periodic_shift_equivariance(ndim: int, cond_dim: int) -> None:
    # The patch tiling is fixed, so exact equivariance holds only for shifts that map the patches of every
    # level onto patches: multiples of p · 2**(levels-1) = n/2 (see LSM.translation_step). A shift by the
    # down-sampling factor 2**levels moves cells across patch borders and is not exact.
    n = GRIDS[ndim][0]
    net = make(ndim, cond_dim, n=n).double()
    assert net.translation_step == n // 2
    x, cond = inputs(ndim, cond_dim, dtype=torch.float64)
    dims = tuple(range(3, 3 + ndim))
    with torch.no_grad():
        y = net(x, cond)
        for shifts in [(n // 2,) * ndim, (n // 2, 0)[:ndim]]:
            y_shifted = net(torch.roll(x, shifts, dims), cond)
            torch.testing.assert_close(y_shifted, torch.roll(y, shifts, dims), rtol=0, atol=1e-10)
        factor = 2**net.levels
        y_factor = net(torch.roll(x, (factor,) * ndim, dims), cond)
    assert (y_factor - torch.roll(y, (factor,) * ndim, dims)).abs().max() > 1e-6


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
    for name, preset in PRESETS.items():
        kwargs = {k: v for k, v in preset.items() if k != "cls"}
        with torch.device("meta"):
            net = preset["cls"](ndim=2, channels=1, time_history=10, time_future=1, **kwargs)
            clone = type(net)(**net.hparams)
        assert clone.num_parameters() == net.num_parameters(), name
    assert PRESETS["lsm"]["num_token"] == 4 and PRESETS["lsm"]["num_basis"] == 12
