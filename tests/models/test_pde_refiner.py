"""PDE-Refiner: PDEArena's algorithm run beside ours, the additive variant's arithmetic, the refined quantity."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.schedulers import DDPMScheduler
from omegaconf import OmegaConf

from data.normalize import Normalizer, channel_stats
from data.timegrid import TimeGrid
from data.trajectories import generate
from models.layers import FourierEmbedding, ResidualBlock
from models.pde_refiner import PDERefiner
from solvers.ks import KuramotoSivashinsky
from training import presets
from training.module import RefinerModule

T_IN, T_OUT, C, N = 2, 1, 2, 16
INNER = {"_target_": "models.unet.UNet", "hidden": 8, "channel_mults": (1, 2)}


def refiner(
    scheme: str = "ddpm",
    steps: int = 3,
    min_noise_std: float = 1e-4,
    cond_dim: int = 1,
    difference_weight: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> PDERefiner:
    torch.manual_seed(0)
    net = PDERefiner(
        1,
        C,
        T_IN,
        T_OUT,
        cond_dim=cond_dim,
        inner=INNER,
        scheme=scheme,
        num_refinement_steps=steps,
        min_noise_std=min_noise_std,
        difference_weight=difference_weight,
    ).to(dtype)
    for p in net.inner.parameters():  # away from the zero-initialised readout: every call matters
        p.data.add_(0.05 * torch.randn_like(p))
    return net


def record_calls(net: PDERefiner) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Forward hook on the inner network: one ``(input, cond, output)`` per call."""
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    net.inner.register_forward_hook(lambda _m, args, out: calls.append((args[0], args[1], out)))
    return calls


# --------------------------------------------------------------------------- PDEArena's algorithm, beside ours
# Rewritten line by line from PDEArena, pdearena/models/pderefiner.py at commit 78a8b03 (2024-09-14),
# ``PDERefiner.__init__`` (the scheduler), ``train_step`` and ``predict_next_solution``, with the scheduler
# itself being diffusers' DDPMScheduler; ``model(x_in, time=..., z=...)`` is the conditioned U-Net's call,
# mapped here onto the same inner network pdestream calls (the weights are shared, not copied: one module).
def reference_scheduler(K: int, min_noise_std: float) -> DDPMScheduler:
    betas = [min_noise_std ** (k / K) for k in reversed(range(K + 1))]
    return DDPMScheduler(
        num_train_timesteps=K + 1, trained_betas=betas, prediction_type="v_prediction", clip_sample=False
    )


def reference_model(net: PDERefiner):
    def model(x_in: torch.Tensor, time: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return net.inner(x_in, torch.cat([z, time[:, None].to(z.dtype)], dim=1))

    return model


def reference_train_step(net: PDERefiner, scheduler: DDPMScheduler, x, y, cond) -> torch.Tensor:
    """PDEArena's ``train_step`` after its ``predict_difference`` division; returns ``CustomMSELoss`` per
    example (mean over space, sum over time and fields), whose batch mean is the reference's loss."""
    time_multiplier = 1000 / (scheduler.config.num_train_timesteps - 1)
    k = torch.randint(0, scheduler.config.num_train_timesteps, (x.shape[0],), device=x.device)
    noise_factor = scheduler.alphas_cumprod.to(x.device)[k]
    noise_factor = noise_factor.view(-1, *[1 for _ in range(x.ndim - 1)])
    signal_factor = 1 - noise_factor
    noise = torch.randn_like(y)
    y_noised = scheduler.add_noise(y, noise, k)
    x_in = torch.cat([x, y_noised], axis=1)
    pred = reference_model(net)(x_in, time=k * time_multiplier, z=cond)
    target = (noise_factor**0.5) * noise - (signal_factor**0.5) * y
    loss = torch.nn.functional.mse_loss(pred, target, reduction="none")
    return loss.mean(dim=tuple(range(3, loss.ndim))).sum(dim=(1, 2))


def reference_predict(net: PDERefiner, scheduler: DDPMScheduler, x, cond) -> torch.Tensor:
    """PDEArena's ``predict_next_solution`` before its ``predict_difference`` rescaling."""
    time_multiplier = 1000 / (scheduler.config.num_train_timesteps - 1)
    y_noised = torch.randn(size=(x.shape[0], T_OUT, *x.shape[2:]), dtype=x.dtype, device=x.device)
    for k in scheduler.timesteps:
        time = torch.zeros(size=(x.shape[0],), dtype=x.dtype, device=x.device) + k
        x_in = torch.cat([x, y_noised], axis=1)
        pred = reference_model(net)(x_in, time=time * time_multiplier, z=cond)
        y_noised = scheduler.step(pred, k, y_noised).prev_sample
    return y_noised


def reference_fourier_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """PDEArena's ``fourier_embedding`` (``pdearena/modules/conditioned/condition_utils.py``, commit 78a8b03)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def test_ddpm_schedule_is_diffusers_float32_schedule_and_the_papers_noise_levels() -> None:
    net = refiner(min_noise_std=4e-7)
    scheduler = reference_scheduler(3, 4e-7)
    assert net.alphas_cumprod.dtype == torch.float32
    assert torch.equal(net.alphas_cumprod, scheduler.alphas_cumprod)
    stds = (1 - net.alphas_cumprod[:3]) ** 0.5  # steps t = 0, 1, 2; t = 3 is pure noise
    assert stds.tolist() == pytest.approx([6.459e-4, 7.3971e-3, 0.086153], rel=2e-4)
    assert net.alphas_cumprod[3] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_loss_is_pdearenas_to_round_off(dtype: torch.dtype) -> None:
    """Same inner network, same seed: pdestream's per-example loss is the reference's ``CustomMSELoss``.
    ``data_std`` and ``difference_weight`` turn the normalised target into the reference's refined quantity."""
    net = refiner(min_noise_std=4e-7, difference_weight=0.3, dtype=dtype)
    net.set_data_std(torch.tensor([2.0, 0.5]))
    x, y, cond = (
        torch.randn(32, T_IN, C, N, dtype=dtype),
        torch.randn(32, T_OUT, C, N, dtype=dtype),
        torch.rand(32, 1, dtype=dtype),
    )
    refined = y * torch.tensor([2.0, 0.5], dtype=dtype).view(1, 1, C, 1) / 0.3
    torch.manual_seed(7)
    ours = net.loss(x, y, cond)
    torch.manual_seed(7)
    theirs = reference_train_step(net, reference_scheduler(3, 4e-7), x, refined, cond)
    assert set(torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(7)).tolist()) == {
        0,
        1,
        2,
        3,
    }
    torch.testing.assert_close(ours, theirs.to(dtype))
    assert ours.shape == (32,) and bool((ours > 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampler_is_pdearenas_ddpm_posterior_step_to_round_off(dtype: torch.dtype) -> None:
    net = refiner(min_noise_std=4e-7, difference_weight=0.3, dtype=dtype)
    net.set_data_std(torch.tensor([2.0, 0.5]))
    calls = record_calls(net)
    x, cond = torch.randn(4, T_IN, C, N, dtype=dtype), torch.rand(4, 1, dtype=dtype)
    with torch.no_grad():
        torch.manual_seed(11)
        ours = net.sample(x, cond)
        torch.manual_seed(11)
        theirs = reference_predict(net, reference_scheduler(3, 4e-7), x, cond)
    assert len(calls) == 2 * 4  # K + 1 inner calls each
    # the steps t = 3, 2, 1, 0 reach the inner network as t · 1000 / 3, as the reference's time input
    torch.testing.assert_close(
        torch.stack([c[1][:, -1] for c in calls[:4]]),
        (torch.tensor([3.0, 2, 1, 0]) * 1000 / 3)[:, None].expand(-1, 4).to(dtype),
    )
    torch.testing.assert_close(ours, theirs / (torch.tensor([2.0, 0.5], dtype=dtype).view(1, 1, C, 1) / 0.3))
    # explicit noise tensors reproduce the drawn ones (the order the sampler draws them in)
    torch.manual_seed(11)
    noise = [torch.randn(4, T_OUT, C, N, dtype=dtype) for _ in range(4)]
    with torch.no_grad():
        torch.testing.assert_close(net.sample(x, cond, noise), ours)


def test_step_embedding_features_are_pdearenas_fourier_embedding() -> None:
    embedding = FourierEmbedding(1, 16, out_dim=64, layout="pdearena")
    features = []
    embedding.mlp[0].register_forward_hook(lambda _m, args, _out: features.append(args[0]))
    t = torch.tensor([0.0, 1000 / 3, 2000 / 3, 1000.0])
    embedding(t[:, None])
    torch.testing.assert_close(features[0], reference_fourier_embedding(t, 16), rtol=0, atol=0)
    net = refiner()
    assert [e.layout for e in net.inner.embed] == ["unit", "pdearena"]  # PDE scalar, then the step


def test_ddpm_needs_an_inner_network_that_embeds_the_step() -> None:
    with pytest.raises(
        ValueError, match=r"scheme=ddpm embeds the refinement step .* use models.unet.UNet or scheme=additive"
    ):
        PDERefiner(1, 1, 1, 1, inner={"_target_": "models.fno.FNO", "modes": 4, "width": 8})
    net = PDERefiner(
        1, 1, 1, 1, scheme="additive", inner={"_target_": "models.fno.FNO", "modes": 4, "width": 8}
    )
    assert net(torch.zeros(2, 1, 1, 16)).shape == (2, 1, 1, 16)


# --------------------------------------------------------------------------- the additive variant
def test_additive_noise_schedule_is_geometric_from_one_to_the_root_of_min_noise_std() -> None:
    net = refiner("additive", steps=3, min_noise_std=1e-4)
    expected = torch.tensor([1.0, 10 ** (-2 / 3), 10 ** (-4 / 3), 1e-2])
    torch.testing.assert_close(net.sigmas, expected, rtol=1e-6, atol=0)
    assert net.inner.cond_dim == 2  # the PDE conditioning plus the refinement step
    assert net.inner.time_history == T_IN + T_OUT  # history plus the current estimate
    assert [e.layout for e in net.inner.embed] == ["unit", "unit"]


@pytest.mark.parametrize("scheme", ["ddpm", "additive"])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_inference_calls_the_inner_network_k_plus_one_times(scheme: str, steps: int) -> None:
    net = refiner(scheme, steps=steps)
    calls = record_calls(net)
    with torch.no_grad():
        out = net(torch.randn(2, T_IN, C, N), torch.rand(2, 1))
    assert out.shape == (2, T_OUT, C, N) and bool(torch.isfinite(out).all())
    assert len(calls) == steps + 1
    if scheme == "additive":  # the step reaches the inner network as the last conditioning scalar k / K
        torch.testing.assert_close(
            torch.stack([c[1][:, -1] for c in calls]),
            (torch.arange(steps + 1) / steps)[:, None].expand(-1, 2),
        )


def test_additive_step_adds_known_noise_and_removes_the_predicted_noise() -> None:
    """``û⁰ = f(x, ε⁰)``; ``ũᵏ = ûᵏ⁻¹ + σ_k εᵏ``; ``ûᵏ = ũᵏ − σ_k f(x, ũᵏ)``; the output is ``ûᴷ`` over the scale."""
    net = refiner("additive", steps=3, min_noise_std=1e-4, difference_weight=0.5)
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
    torch.testing.assert_close(out, estimate * 0.5)  # data_std 1 over difference_weight 0.5: scale 2


def test_additive_loss_regresses_the_state_at_step_zero_and_the_noise_afterwards() -> None:
    """With scale ``s``: ``k = 0`` regresses ``s · y`` from noise; ``k ≥ 1`` sees ``s · y + σ_k ε``."""
    net = refiner("additive", steps=3, min_noise_std=1e-4, difference_weight=0.5)
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
    with pytest.raises(ValueError, match="scheme='ddim'; allowed: ddpm, additive"):
        refiner("ddim")
    with pytest.raises(ValueError, match="num_refinement_steps=0"):
        refiner(steps=0)
    with pytest.raises(ValueError, match=r"min_noise_std=0\.0"):
        refiner(min_noise_std=0.0)
    with pytest.raises(ValueError, match=r"difference_weight=-1\.0 must be > 0"):
        refiner(difference_weight=-1.0)
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
    with pytest.raises(ValueError, match=r"set_data_std: need 2 finite positive values, got \[1.0, 0.0\]"):
        refiner().set_data_std(torch.tensor([1.0, 0.0]))


# --------------------------------------------------------------------------- presets
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
    assert (net.scheme, net.difference_weight) == ("ddpm", 0.3)


def test_ks_preset_inner_net_starts_with_zeroed_block_outputs_and_readout() -> None:
    net = presets.build("pde_refiner", ndim=1, channels=1, time_history=1, time_future=1, cond_dim=2)
    blocks = [m for m in net.inner.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 22
    assert all(b.conv2.weight.abs().max() == 0 and b.conv2.bias.abs().max() == 0 for b in blocks)
    assert all(p.abs().max() == 0 for p in net.inner.readout[2].parameters())


def test_training_refines_the_raw_increment_over_the_difference_weight_on_ks_data() -> None:
    """The training module hands the refiner the run's normaliser std: at the step with ᾱ ≈ 1 (t = 0) the
    inner network sees the reference's refined quantity ``(u(t + Δt) − u(t)) / 0.3`` of the raw KS fields,
    up to that step's noise (std 6.5e-4)."""
    solver = KuramotoSivashinsky()
    times = TimeGrid(0.8, 0.8, 40).times()
    mean, std = channel_stats(generate(solver, 0, "stats", range(8), times).u)
    raw = generate(solver, 0, "train", range(8), times).u
    u = (raw - mean.float().reshape(1, 1, -1, 1)) / std.float().reshape(1, 1, -1, 1)
    x, y = u[:, :-1].flatten(0, 1)[:, None], u[:, 1:].flatten(0, 1)[:, None]
    increment = (raw[:, 1:] - raw[:, :-1]).flatten(0, 1)[:, None]

    net = presets.build("pde_refiner-small", ndim=1, channels=1, time_history=1, time_future=1, cond_dim=1)
    normalizer = Normalizer(mean, std, [], torch.zeros(1), torch.ones(1), torch.zeros(1, dtype=torch.bool))
    module = RefinerModule(net, normalizer, optimizer=lambda p: torch.optim.Adam(p))
    assert torch.equal(module.net.data_std, std.float())
    calls = record_calls(net)
    torch.manual_seed(0)
    with torch.no_grad():
        module.objective(x[:256], y[:256], torch.zeros(256, 1))
    inp, inner_cond, _ = calls[0]
    last = inner_cond[:, -1] == 0  # t = 0
    assert int(last.sum()) > 30
    torch.testing.assert_close(inp[last, 1:], increment[:256][last] / 0.3, rtol=0, atol=4e-3)
    print(f"\nKS refined quantity std {(increment / 0.3).std():.3f} (raw increment over Δt = 0.8 / 0.3)")
