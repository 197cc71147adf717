"""Contract tests run on every registered architecture (1D n = 64 and 2D 32×32), built from its presets.

Forward tests use the ``-small`` preset (``conf/model/*-small.yaml``) of each architecture (every
architecture has one, checked below); the full-size presets are only built on the ``meta`` device to count
their parameters.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models.base import NETWORKS, SurrogateNet, network_class
from models.pde_refiner import PDERefiner
from training import presets

SMALL = [name for name in presets.available() if name.endswith("-small")]
GRIDS = {1: (64,), 2: (32, 32)}
SHAPE = {"channels": 2, "time_history": 3, "time_future": 2}
COND_DIM = 2


def preset_class(name: str) -> type[SurrogateNet]:
    """The network class that ``conf/model/<name>.yaml`` names."""
    return network_class(OmegaConf.load(presets.PRESET_DIR / f"{name}.yaml")._target_)


def make(name: str, ndim: int, cond_dim: int = COND_DIM, seed: int = 0) -> SurrogateNet:
    """Preset ``name`` for the test shape; told the grid size when its class accepts ``n``."""
    torch.manual_seed(seed)
    grid = {"n": GRIDS[ndim][0]} if "n" in inspect.signature(preset_class(name)).parameters else {}
    return presets.build(name, ndim=ndim, cond_dim=cond_dim, **SHAPE, **grid)


def inputs(ndim: int, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, SHAPE["time_history"], SHAPE["channels"], *GRIDS[ndim], generator=gen)
    cond = torch.rand(batch, COND_DIM, generator=gen)
    return x, cond


def predict(net: SurrogateNet, x: torch.Tensor, cond: torch.Tensor | None, shift: int = 0) -> torch.Tensor:
    """``net(x, cond)`` with reproducible randomness; a refiner's noise is rolled by ``shift`` cells."""
    torch.manual_seed(123)
    if isinstance(net, PDERefiner):
        shape = (x.shape[0], net.time_future, *x.shape[2:])
        dims = tuple(range(3, x.ndim))
        noise = [
            torch.randn(shape).roll((shift,) * len(dims), dims) for _ in range(net.num_refinement_steps + 1)
        ]
        return net.sample(x, cond if net.cond_dim else None, noise)
    return net(x, cond)


def test_every_architecture_has_a_small_preset() -> None:
    small_classes = {preset_class(name) for name in SMALL}
    architectures = {cls for target, cls in NETWORKS.items() if target.startswith("models.")}
    assert small_classes == architectures
    assert {"fno", "unet", "sinenet", "lsm", "pde_refiner"} <= set(presets.available())


def test_every_network_class_is_registered_when_defined() -> None:
    assert set(NETWORKS) >= {
        "models.fno.FNO",
        "models.unet.UNet",
        "models.sinenet.SineNet",
        "models.lsm.LSM",
        "models.pde_refiner.PDERefiner",
    }

    class Probe(SurrogateNet):
        def _forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
            return x

    target = f"{__name__}.test_every_network_class_is_registered_when_defined.<locals>.Probe"
    try:
        assert network_class(target) is Probe
    finally:
        del NETWORKS[target]
    with pytest.raises(
        ValueError, match=r"model._target_='os.system' is not a pdestream network class; allowed: "
    ):
        network_class("os.system", "model._target_")


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", SMALL)
def test_output_shape(name: str, ndim: int) -> None:
    net = make(name, ndim)
    x, cond = inputs(ndim, batch=3)
    out = predict(net, x, cond)
    assert out.shape == (3, SHAPE["time_future"], SHAPE["channels"], *GRIDS[ndim])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", SMALL)
def test_gradients_reach_every_parameter(name: str, ndim: int) -> None:
    net = make(name, ndim)
    x, cond = inputs(ndim)
    out = predict(net, x, cond)
    torch.nn.functional.mse_loss(out, torch.randn_like(out)).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", SMALL)
def test_translation_equivariance(name: str, ndim: int) -> None:
    """Periodic presets: rolling the input by ``s`` cells rolls the output by ``s`` cells.

    Networks that down-sample are only equivariant to shifts by multiples of their total down-sampling
    factor; every network states its smallest exact shift in ``translation_step``, and the test uses it
    (or 5 cells when that is 1). A network that states ``None`` (LSM: coordinate channels and
    corner-aligned up-sampling, as in its reference code) must indeed not commute with a shift.
    """
    net = make(name, ndim)
    step = net.translation_step
    s = 8 if step is None else step if step > 1 else 5
    x, cond = inputs(ndim)
    dims = tuple(range(3, 3 + ndim))
    shifts = (s,) * ndim
    rolled_then_net = predict(net, x.roll(shifts, dims), cond, shift=s)
    net_then_rolled = predict(net, x, cond).roll(shifts, dims)
    scale = net_then_rolled.abs().max().item()
    if step is None:
        assert (rolled_then_net - net_then_rolled).abs().max().item() > 1e-3 * scale, f"{name} is equivariant"
        return
    torch.testing.assert_close(rolled_then_net, net_then_rolled, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("name", ["fno-small", "unet-small"])
def test_tiny_model_overfits_one_batch(name: str) -> None:
    """100 Adam steps fit one batch of smooth 1D data: the loss falls at least 100×."""
    torch.manual_seed(0)
    net = presets.build(name, ndim=1, channels=1, time_history=2, time_future=1, cond_dim=1)
    grid = torch.arange(64) * (2 * torch.pi / 64)
    k = torch.arange(1, 4)
    coeffs = torch.randn(4, 3, 3, 2)  # batch, frame, mode, (cos, sin)
    fields = (
        coeffs[..., None, 0] * torch.cos(k[:, None] * grid)
        + coeffs[..., None, 1] * torch.sin(k[:, None] * grid)
    ).sum(-2)
    x, y = fields[:, :2, None], fields[:, 2:, None]
    cond = torch.rand(4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x, cond), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < losses[0] / 100, f"{name}: loss {losses[0]:.3g} -> {min(losses[-10:]):.3g}"


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", SMALL)
def test_conditioning_changes_output_only_for_conditioned_nets(name: str, ndim: int) -> None:
    x, cond = inputs(ndim)
    conditioned = make(name, ndim)
    change = (predict(conditioned, x, cond) - predict(conditioned, x, cond + 0.5)).abs().max()
    assert change > 1e-4
    plain = make(name, ndim, cond_dim=0)
    torch.testing.assert_close(predict(plain, x, cond), predict(plain, x, None), rtol=0, atol=0)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", SMALL)
def test_hparams_rebuild_the_same_architecture(name: str, ndim: int) -> None:
    net = make(name, ndim)
    clone = type(net)(**net.hparams)
    assert clone.hparams == net.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }
    clone.load_state_dict(net.state_dict())
    x, cond = inputs(ndim)
    torch.testing.assert_close(predict(clone, x, cond), predict(net, x, cond), rtol=0, atol=0)


def test_presets_reject_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match=r"preset 'fno-huge' does not exist; allowed: .*fno-small.*unet"):
        presets.build("fno-huge", ndim=1, **SHAPE)
    with pytest.raises(ValueError, match=r"no option.*'depth'.*allowed"):
        presets.build("fno-small", ndim=1, depth=3, **SHAPE)


def test_a_preset_is_its_yaml_file() -> None:
    """Every value of ``conf/model/<name>.yaml`` reaches the network; overrides replace them."""
    for name in presets.available():
        preset = OmegaConf.to_container(OmegaConf.load(presets.PRESET_DIR / f"{name}.yaml"))
        with torch.device("meta"):
            net = presets.build(name, ndim=2, **SHAPE)
        options = {k: v for k, v in preset.items() if not k.startswith("_") and k not in presets.PRESET_KEYS}
        for key, value in options.items():
            if value not in ("???", "${pde.n}"):
                assert net.hparams[key] == value, (name, key)
    with torch.device("meta"):
        assert presets.build("fno-small", ndim=1, width=8, **SHAPE).hparams["width"] == 8


def count_parameters(name: str, ndim: int = 2, **shape: int) -> int:
    """Parameter count of a preset built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        net = presets.build(name, ndim=ndim, **(shape or SHAPE))
    return net.num_parameters()


def test_parameter_counts() -> None:
    # FNO-2D of Li et al. (2021) on Navier-Stokes: 10 frames of vorticity in, one out: 465,557 weights
    # (one per complex number), the count of the reference implementation.
    assert count_parameters("fno-2d-paper", channels=1, time_history=10, time_future=1) == 465_557
    for name in presets.available():
        count = count_parameters(name)
        if name.endswith("-small"):
            assert 10_000 < count < 400_000, f"{name}: {count} parameters is not a CPU size"
        elif f"{name}-small" in presets.available():
            assert count > 10 * count_parameters(f"{name}-small"), f"{name} is not larger than its -small"


# The table of docs/models.md (and benchmarks/results/models_small.txt): 4 frames of one channel in, one frame out,
# unconditioned, 1D and 2D.
README_COUNTS = {
    "fno-small": (9_937, 132_817),
    "fno": (287_553, 8_414_017),
    "fno-2d-paper": (23_817, 465_437),
    "fno-1d-paper": (288_129, 8_414_657),
    "fno-1d-repo": (287_617, 8_414_145),
    "unet-small": (79_889, 223_217),
    "unet": (51_506_177, 144_257_921),
    "sinenet-small": (106_293, 288_837),
    "sinenet": (12_831_529, 35_484_457),
    "lsm-small": (127_457, 307_185),
    "lsm": (7_661_441, 19_187_649),
    "pde_refiner-small": (103_905, 247_329),
    "pde_refiner": (53_759_937, 146_512_065),
}


def test_every_preset_has_the_parameter_counts_of_the_readme() -> None:
    assert set(README_COUNTS) == set(presets.available())
    shape = {"channels": 1, "time_history": 4, "time_future": 1}
    for name, counts in README_COUNTS.items():
        assert (count_parameters(name, 1, **shape), count_parameters(name, 2, **shape)) == counts, name


def test_the_models_page_quotes_these_parameter_counts() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    table = page[: page.index("## Fidelity to the reference code")]
    quoted = {}
    for row in (line.split(" | ") for line in table.splitlines() if line.startswith("| `")):
        names = re.findall(r"`([^`]+)`", row[0])
        one, two = ([int(c.replace(",", "")) for c in cell.strip(" |").split(" · ")] for cell in row[2:4])
        quoted |= {name: (a, b) for name, a, b in zip(names, one, two, strict=True)}
    assert quoted == README_COUNTS
