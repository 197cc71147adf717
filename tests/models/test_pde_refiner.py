"""PDE-Refiner: noise schedule, K + 1 inner calls at inference, the refinement arithmetic, loss targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.pde_refiner import PDERefiner

T_IN, T_OUT, C, N = 2, 1, 2, 16


def refiner(steps: int = 3, sigma_min: float = 1e-2, cond_dim: int = 1) -> PDERefiner:
    torch.manual_seed(0)
    return PDERefiner(
        1,
        C,
        T_IN,
        T_OUT,
        cond_dim=cond_dim,
        inner="unet-small",
        inner_overrides={"hidden": 8, "channel_mults": (1, 2)},
        num_refinement_steps=steps,
        sigma_min=sigma_min,
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
    """``û⁰ = f(x, 0)``; ``ũᵏ = ûᵏ⁻¹ + σ_k εᵏ``; ``ûᵏ = ũᵏ − σ_k f(x, ũᵏ)``."""
    net = refiner(steps=3, sigma_min=1e-2)
    calls = record_calls(net)
    x, cond = torch.randn(2, T_IN, C, N), torch.rand(2, 1)
    noise = [torch.randn(2, T_OUT, C, N) for _ in range(3)]
    with torch.no_grad():
        out = net.sample(x, cond, noise)
    for inp, _, _ in calls:
        torch.testing.assert_close(inp[:, :T_IN], x)
    assert calls[0][0][:, T_IN:].abs().max() == 0
    estimate = calls[0][2]
    for k in range(1, 4):
        noised = estimate + net.sigmas[k] * noise[k - 1]
        torch.testing.assert_close(calls[k][0][:, T_IN:], noised)
        estimate = noised - net.sigmas[k] * calls[k][2]
    torch.testing.assert_close(out, estimate)


def test_loss_regresses_the_state_at_step_zero_and_the_noise_afterwards() -> None:
    net = refiner(steps=3, sigma_min=1e-2)
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
            assert estimate[i].abs().max() == 0
            targets.append(y[i])
        else:
            eps = (estimate[i] - y[i]) / net.sigmas[ki]
            assert 0.5 < eps.std() < 1.5  # unit Gaussian noise in units of σ_k
            targets.append(eps)
    torch.testing.assert_close(loss, F.mse_loss(pred, torch.stack(targets)))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="num_refinement_steps=0"):
        refiner(steps=0)
    with pytest.raises(ValueError, match=r"sigma_min=0\.0"):
        refiner(sigma_min=0.0)
    with pytest.raises(ValueError, match="not a refiner"):
        PDERefiner(1, 1, 1, 1, inner="pde_refiner-small")
    with pytest.raises(ValueError, match="not a preset; allowed"):
        PDERefiner(1, 1, 1, 1, inner="resnet")
    with pytest.raises(ValueError, match=r"cond .* is required"):
        refiner().loss(torch.randn(2, T_IN, C, N), torch.randn(2, T_OUT, C, N))
