"""PDE-Refiner: noise schedule, K + 1 inner calls at inference, the refinement arithmetic, loss targets."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from data.normalize import channel_stats
from data.timegrid import TimeGrid
from data.trajectories import generate
from models.layers import ResidualBlock
from models.pde_refiner import PDERefiner
from solvers.ks import KuramotoSivashinsky
from training import presets

T_IN, T_OUT, C, N = 2, 1, 2, 16


def refiner(
    steps: int = 3, sigma_min: float = 1e-2, cond_dim: int = 1, target_scale: float = 1.0
) -> PDERefiner:
    torch.manual_seed(0)
    return PDERefiner(
        1,
        C,
        T_IN,
        T_OUT,
        cond_dim=cond_dim,
        inner={"_target_": "models.unet.UNet", "hidden": 8, "channel_mults": (1, 2)},
        num_refinement_steps=steps,
        sigma_min=sigma_min,
        target_scale=target_scale,
    )


def record_calls(net: PDERefiner) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Forward hook on the inner network: one ``(input, cond, output)`` per call."""
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    net.inner.register_forward_hook(lambda _m, args, out: calls.append((args[0], args[1], out)))
    return calls


def test_noise_schedule_is_geometric_from_one_to_sigma_min() -> None:
    net = refiner(steps=3, sigma_min=1e-2)
    expected = torch.tensor([1.0, 10 ** (-2 / 3), 10 ** (-4 / 3), 1e-2])
    torch.testing.assert_close(net.sigmas, expected, rtol=1e-6, atol=0)
    assert net.inner.cond_dim == 2  # the PDE conditioning plus the refinement step
    assert net.inner.time_history == T_IN + T_OUT  # history plus the current estimate


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_inference_calls_the_inner_network_k_plus_one_times(steps: int) -> None:
    net = refiner(steps=steps)
    calls = record_calls(net)
    with torch.no_grad():
        out = net(torch.randn(2, T_IN, C, N), torch.rand(2, 1))
    assert out.shape == (2, T_OUT, C, N)
    assert len(calls) == steps + 1
    # The refinement step reaches the inner network as the last conditioning scalar k / K.
    torch.testing.assert_close(
        torch.stack([c[1][:, -1] for c in calls]), (torch.arange(steps + 1) / steps)[:, None].expand(-1, 2)
    )


def test_each_refinement_step_adds_known_noise_and_removes_the_predicted_noise() -> None:
    """``û⁰ = f(x, ε⁰)``; ``ũᵏ = ûᵏ⁻¹ + σ_k εᵏ``; ``ûᵏ = ũᵏ − σ_k f(x, ũᵏ)``; the output is ``ûᴷ / s``."""
    net = refiner(steps=3, sigma_min=1e-2, target_scale=2.0)
    calls = record_calls(net)
    x, cond = torch.randn(2, T_IN, C, N), torch.rand(2, 1)
    noise = [torch.randn(2, T_OUT, C, N) for _ in range(4)]
    with torch.no_grad():
        out = net.sample(x, cond, noise)
    for inp, _, _ in calls:
        torch.testing.assert_close(inp[:, :T_IN], x)
    torch.testing.assert_close(calls[0][0][:, T_IN:], noise[0])  # step 0 sees pure noise, as the reference
    estimate = calls[0][2]
    for k in range(1, 4):
        noised = estimate + net.sigmas[k] * noise[k]
        torch.testing.assert_close(calls[k][0][:, T_IN:], noised)
        estimate = noised - net.sigmas[k] * calls[k][2]
    torch.testing.assert_close(out, estimate / 2.0)


def test_loss_regresses_the_state_at_step_zero_and_the_noise_afterwards() -> None:
    """With ``target_scale = s``: ``k = 0`` regresses ``s · y`` from noise; ``k ≥ 1`` sees ``s · y + σ_k ε``."""
    net = refiner(steps=3, sigma_min=1e-2, target_scale=2.0)
    calls = record_calls(net)
    x, y, cond = torch.randn(16, T_IN, C, N), torch.randn(16, T_OUT, C, N), torch.rand(16, 1)
    torch.manual_seed(3)
    loss = net.loss(x, y, cond)
    (inp, inner_cond, pred) = calls[0]
    k = (inner_cond[:, -1] * 3).round().long()
    assert {0, 1, 2, 3} <= set(k.tolist()), "the seed should draw every refinement step"
    estimate = inp[:, T_IN:]
    targets = []
    for i, ki in enumerate(k.tolist()):
        if ki == 0:
            assert (
                0.5 < estimate[i].std() < 1.5 and (estimate[i] - 2.0 * y[i]).abs().max() > 0.1
            )  # pure noise
            targets.append(2.0 * y[i])
        else:
            eps = (estimate[i] - 2.0 * y[i]) / net.sigmas[ki]
            assert 0.5 < eps.std() < 1.5  # unit Gaussian noise in units of σ_k
            targets.append(eps)
    assert loss.shape == (16,)  # one loss per example
    torch.testing.assert_close(loss, (pred - torch.stack(targets)).pow(2).flatten(1).mean(1))
    loss.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="num_refinement_steps=0"):
        refiner(steps=0)
    with pytest.raises(ValueError, match=r"sigma_min=0\.0"):
        refiner(sigma_min=0.0)
    with pytest.raises(ValueError, match=r"target_scale=-1\.0 must be > 0"):
        refiner(target_scale=-1.0)
    with pytest.raises(ValueError, match="must be a plain network, not a refiner"):
        PDERefiner(1, 1, 1, 1, inner={"_target_": "models.pde_refiner.PDERefiner"})
    with pytest.raises(
        ValueError, match=r"inner._target_='models.resnet.ResNet' is not a pdestream network class"
    ):
        PDERefiner(1, 1, 1, 1, inner={"_target_": "models.resnet.ResNet"})
    with pytest.raises(
        ValueError, match=r"inner sets \['cond_dim'\]; the refiner sets the inner network's shape"
    ):
        PDERefiner(1, 1, 1, 1, inner={"_target_": "models.unet.UNet", "cond_dim": 3})
    with pytest.raises(ValueError, match=r"cond .* is required"):
        refiner().loss(torch.randn(2, T_IN, C, N), torch.randn(2, T_OUT, C, N))


@pytest.mark.parametrize(("refiner", "unet"), [("pde_refiner", "unet"), ("pde_refiner-small", "unet-small")])
def test_presets_refine_the_unet_of_the_unet_presets(refiner: str, unet: str) -> None:
    """The inner network of ``conf/model/pde_refiner*.yaml`` is the U-Net of ``unet*.yaml``, option for option."""
    inner = OmegaConf.to_container(OmegaConf.load(presets.PRESET_DIR / f"{refiner}.yaml").inner)
    preset = OmegaConf.load(presets.PRESET_DIR / f"{unet}.yaml")
    shape = {"ndim", "channels", "time_history", "time_future", "cond_dim", "_convert_", *presets.PRESET_KEYS}
    assert inner == {k: v for k, v in OmegaConf.to_container(preset).items() if k not in shape}


def test_ks_preset_has_the_parameter_count_of_pdearena_pde_refiner() -> None:
    # PDEArena's KS PDE-Refiner (configs/kuramotosivashinsky1d.yaml): inner net "Unetmod-1d-64"
    # (pdearena/modules/conditioned/oned_unet.py) on the previous frame and the noised estimate, conditioned
    # on the refinement step and two scalars ("scalar_2"): 53,924,225 parameters in the reference code.
    with torch.device("meta"):
        net = presets.build("pde_refiner", ndim=1, channels=1, time_history=1, time_future=1, cond_dim=2)
    assert net.num_parameters() == 53_924_225
    assert net.inner.time_history == 2 and net.inner.cond_dim == 3 and len(net.inner.embed) == 3


def test_ks_preset_inner_net_starts_with_zeroed_block_outputs_and_readout() -> None:
    net = presets.build("pde_refiner", ndim=1, channels=1, time_history=1, time_future=1, cond_dim=2)
    blocks = [m for m in net.inner.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 22
    assert all(b.conv2.weight.abs().max() == 0 and b.conv2.bias.abs().max() == 0 for b in blocks)
    assert all(p.abs().max() == 0 for p in net.inner.readout[2].parameters())


# PDE-Refiner's KS reference (pdearena/models/pderefiner.py, configs/kuramotosivashinsky1d.yaml): it refines
# (u(t + 0.8 s) - u(t)) / 0.3, of standard deviation 0.80 on its data, under the noise levels
# sqrt(1 - alphā_k) of its DDPM schedule with min_noise_std = 4e-7, K = 3.
REFERENCE_TARGET_STD = 0.80
REFERENCE_SIGMAS = (8.6e-2, 7.4e-3, 6.3e-4)


def test_ks_preset_refines_at_the_references_signal_to_noise() -> None:
    """Target std over σ_k per refinement step, on pdestream's own KS data, within 5 % of the reference's.

    The data are what training sees: 16 trajectories for the normalisation statistics, 16 others for the
    targets (the increment of the normalised field over Δt = 0.8 s); the refiner's loss is called on them
    to check that the estimate it noises is ``target_scale ·`` target.
    """
    solver = KuramotoSivashinsky()
    times = TimeGrid(0.8, 0.8, 160).times()
    _, std = channel_stats(generate(solver, 0, "stats", range(16), times).u)
    u = generate(solver, 0, "train", range(16), times).u / std.float().reshape(1, 1, -1, 1)
    x, y = u[:, :-1].flatten(0, 1)[:, None], (u[:, 1:] - u[:, :-1]).flatten(0, 1)[:, None]

    net = presets.build("pde_refiner-small", ndim=1, channels=1, time_history=1, time_future=1, cond_dim=1)
    calls = record_calls(net)
    torch.manual_seed(0)
    with torch.no_grad():
        net.loss(x[:256], y[:256], torch.zeros(256, 1))
    inp, inner_cond, _ = calls[0]
    k = (inner_cond[:, -1] * 3).round().long()
    for step in (1, 2, 3):
        noise = (inp[k == step, 1:] - net.target_scale * y[:256][k == step]) / net.sigmas[step]
        assert 0.9 < noise.std() < 1.1, (step, noise.std())
    assert net.sigmas[1:].tolist() == pytest.approx(REFERENCE_SIGMAS, rel=1e-2)

    refined_std = (net.target_scale * y).std().item()
    print(f"\nKS refined-target std: pdestream {refined_std:.3f}, reference {REFERENCE_TARGET_STD:.2f}")
    for step, sigma in enumerate(REFERENCE_SIGMAS, start=1):
        ours = refined_std / net.sigmas[step].item()
        print(
            f"  step {step}: signal-to-noise pdestream {ours:8.1f}   reference {REFERENCE_TARGET_STD / sigma:8.1f}"
        )
        assert ours == pytest.approx(REFERENCE_TARGET_STD / sigma, rel=0.05)
