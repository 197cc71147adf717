"""PDE-Refiner (Lippe, Veeling, Perdikaris, Turner & Brandstetter, "PDE-Refiner: Achieving Accurate Long
Rollouts with Neural PDE Solvers", NeurIPS 2023).

One conditioned network ``f(x, ũ, t)`` (a U-Net in the presets) is called ``K + 1`` times per time step; each
call sees the history ``x`` and a noised estimate ``ũ`` of the next state and returns a prediction from which a
less noisy estimate follows. The decreasing noise levels make the later calls resolve ever smaller amplitudes,
i.e. the low-energy (high-frequency) part of the spectrum that a plain MSE objective neglects.

Two schemes (``scheme``):

``ddpm`` (the presets; the authors' algorithm, PDEArena ``pdearena/models/pderefiner.py``, commit ``78a8b03``):
  a DDPM over ``K + 1`` steps ``t = K … 0`` with ``β_t = min_noise_std^((K − t) / K)`` (so ``β_K = 1``: step
  ``K`` starts from pure noise) and ``ᾱ_t = ∏_{s ≤ t} (1 − β_s)``, both stored in float32 as diffusers'
  ``DDPMScheduler`` stores them. Training draws ``t ~ U{0 … K}`` and ``ε ~ N(0, 1)``, feeds
  ``√ᾱ_t y + √(1 − ᾱ_t) ε`` and regresses the velocity ``v = √ᾱ_t ε − √(1 − ᾱ_t) y``; the loss of an example is
  the squared error averaged over space and summed over output frames and fields (PDEArena's
  ``CustomMSELoss``). Sampling starts from ``ε ~ N(0, 1)`` and takes the DDPM posterior step (``x̂₀ = √ᾱ_t ũ −
  √(1 − ᾱ_t) v̂``, mean ``√ᾱ_{t−1} β_t / (1 − ᾱ_t) · x̂₀ + √(1 − β_t) (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · ũ``, variance
  ``(1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t`` for ``t > 0``, none at ``t = 0``: the "fixed_small" variance of
  diffusers, without clipping). The step reaches the network as ``t · 1000 / K`` embedded with PDEArena's
  ``fourier_embedding`` (the inner network's ``step_embedding``). With ``min_noise_std = 4e-7`` and ``K = 3`` the
  noise standard deviations ``√(1 − ᾱ_t)`` of steps 2, 1, 0 are 0.086153, 0.0073971 and 6.459e-4 (the last
  one set by float32's resolution of ``1 − 4e-7``).

``additive`` (an explicit-noise variant): refinement steps ``k = 1 … K`` add noise of standard deviation
  ``σ_k = √min_noise_std^(k / K)`` to the current estimate, predict that noise and subtract it; step 0 predicts
  the state from pure noise. Training draws ``k ~ U{0 … K}``: ``k = 0`` regresses the state, ``k ≥ 1`` the
  noise; the loss is averaged over frames and fields. The step enters as ``k / K`` with the network's usual
  conditioning features. Each step is a plain "add known noise, predict it, remove it" that can be checked
  exactly; its noise levels are ``√min_noise_std^(k/K)`` (6.3246e-4 for the last step, 2.1 % below the
  reference's float32 value), its estimates unscaled by ``√ᾱ``.

The refined quantity. Both schemes refine the target in the data's raw units divided by ``difference_weight``:
PDEArena refines ``(u(t + Δt) − u(t)) / difference_weight`` of its raw fields (0.3 for Kuramoto-Sivashinsky,
``configs/kuramotosivashinsky1d.yaml``). pdestream's module hands the refiner the increment of the
*normalised* field; the refiner multiplies it by the data's per-channel standard deviation (``data_std``, set
from the run's normaliser by :class:`training.module.RefinerModule` and stored with the weights) and divides it
by ``difference_weight``, which is therefore the reference's quantity exactly, whatever the normalisation.
Which amplitudes a step resolves is set by the noise levels relative to that quantity's spread; for another
equation or time step, choose ``difference_weight`` so that the refined quantity's spread matches the KS
set-up's (``benchmarks/refiner_scale.py`` measures it per PDE).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from models.base import SurrogateNet, network_class

SCHEMES = ("ddpm", "additive")
STEP_SCALE = 1000.0
"""PDEArena's ``time_multiplier`` numerator: the network sees the DDPM step ``t`` as ``t · 1000 / K``."""


class PDERefiner(SurrogateNet):
    """PDE-Refiner around a conditioned inner network.

    Args:
        ndim, channels, time_history, time_future, cond_dim: the :class:`SurrogateNet` contract.
        inner: the inner network's config: ``_target_`` (a registered network class, e.g.
            ``models.unet.UNet``) and its architecture options; the refiner adds the shape keys (``ndim``,
            ``channels``, ``time_history + time_future`` input frames, ``time_future``, ``cond_dim + 1``) and,
            for ``scheme="ddpm"``, ``step_embedding=True``.
        scheme: ``"ddpm"`` (PDEArena's algorithm) or ``"additive"`` (see the module docstring).
        num_refinement_steps: ``K``; inference costs ``K + 1`` calls of the inner network.
        min_noise_std: PDEArena's ``min_noise_std``: ``β`` of the last step (``"ddpm"``), or the square of the
            last step's noise standard deviation (``"additive"``).
        difference_weight: the refined quantity is the raw-unit target over ``difference_weight``.
        n: grid size, handed to the inner network (for its construction-time checks) when given.
    """

    def __init__(
        self,
        ndim: int,
        channels: int,
        time_history: int,
        time_future: int,
        cond_dim: int = 0,
        *,
        inner: Mapping[str, Any],
        scheme: str = "ddpm",
        num_refinement_steps: int = 3,
        min_noise_std: float = 4e-7,
        difference_weight: float = 1.0,
        n: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__(ndim, channels, time_history, time_future, cond_dim)
        if scheme not in SCHEMES:
            raise ValueError(f"PDERefiner: scheme={scheme!r}; allowed: {', '.join(SCHEMES)}")
        if not isinstance(num_refinement_steps, int) or num_refinement_steps < 1:
            raise ValueError(f"PDERefiner: num_refinement_steps={num_refinement_steps!r} must be an int >= 1")
        if not 0.0 < min_noise_std < 1.0:
            raise ValueError(f"PDERefiner: min_noise_std={min_noise_std!r} must lie in (0, 1)")
        if not difference_weight > 0:
            raise ValueError(f"PDERefiner: difference_weight={difference_weight!r} must be > 0")
        if not isinstance(inner, Mapping):
            raise ValueError(f"PDERefiner: inner={inner!r} must be a network config with a _target_")
        options = {k: v for k, v in inner.items() if k != "_target_"}
        cls = network_class(inner.get("_target_"), "PDERefiner: inner._target_")
        if issubclass(cls, PDERefiner):
            raise ValueError(
                f"PDERefiner: inner._target_={inner['_target_']!r} must be a plain network, not a refiner"
            )
        shape = {"ndim", "channels", "time_history", "time_future", "cond_dim", "n", "step_embedding"}
        fixed = sorted(shape & set(options))
        if fixed:
            raise ValueError(f"PDERefiner: inner sets {fixed}; the refiner sets the inner network's shape")
        if scheme == "ddpm":
            if "step_embedding" not in inspect.signature(cls).parameters:
                raise ValueError(
                    f"PDERefiner: scheme=ddpm embeds the refinement step as PDEArena does, which "
                    f"inner._target_={inner['_target_']!r} cannot; use models.unet.UNet or scheme=additive"
                )
            options["step_embedding"] = True
        self.scheme = scheme
        self.num_refinement_steps = K = num_refinement_steps
        self.difference_weight = float(difference_weight)
        if scheme == "ddpm":
            # diffusers' DDPMScheduler(trained_betas=...): float32 β, α = 1 − β, ᾱ = cumprod(α); β_K = 1.
            betas = torch.tensor([min_noise_std ** ((K - t) / K) for t in range(K + 1)], dtype=torch.float32)
            self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0), persistent=False)
        else:
            k = torch.arange(K + 1, dtype=torch.float64)
            # sigmas[k] = √min_noise_std^(k/K); sigmas[0] = 1 is never a noise level (step 0 sees no estimate).
            sigmas = (min_noise_std ** (0.5 * k / K)).float()
            self.register_buffer("sigmas", sigmas, persistent=False)
        # The data's per-channel standard deviation (raw units per normalised unit), set by the training module.
        self.register_buffer("data_std", torch.ones(channels))
        self.inner = cls(
            ndim=ndim,
            channels=channels,
            time_history=time_history + time_future,
            time_future=time_future,
            cond_dim=cond_dim + 1,
            **options,
            **({} if n is None else {"n": n}),
        )
        self.translation_step = self.inner.translation_step

    def set_data_std(self, std: Tensor) -> None:
        """Per-channel standard deviation ``[C]`` of the raw data (the normaliser's): the refined quantity is
        ``target · data_std / difference_weight`` for a target in normalised units."""
        std = torch.as_tensor(std).flatten()
        if std.shape != self.data_std.shape or not bool((std > 0).all() and torch.isfinite(std).all()):
            raise ValueError(
                f"PDERefiner.set_data_std: need {self.channels} finite positive values, got {std.tolist()}"
            )
        self.data_std.copy_(std)

    def _scale(self, like: Tensor) -> Tensor:
        """``data_std / difference_weight`` shaped to broadcast over ``[B, T, C, *S]``."""
        shape = (1, 1, self.channels, *([1] * self.ndim))
        return (self.data_std / self.difference_weight).to(like.dtype).reshape(shape)

    def _call_inner(self, x: Tensor, estimate: Tensor, cond: Tensor | None, step: Tensor) -> Tensor:
        """One call ``f(x, estimate, step)``; ``step`` is ``[B]`` (the DDPM step ``t``, or the additive ``k``)."""
        scale = STEP_SCALE if self.scheme == "ddpm" else 1.0
        step = (step.to(x.dtype) * (scale / self.num_refinement_steps))[:, None]
        return self.inner(
            torch.cat([x, estimate], dim=1), step if cond is None else torch.cat([cond, step], 1)
        )

    def sample(self, x: Tensor, cond: Tensor | None = None, noise: Sequence[Tensor] | None = None) -> Tensor:
        """Refined prediction ``[B, T_out, C, *S]`` (normalised units) from history ``x`` ``[B, T_in, C, *S]``.

        ``noise`` holds the ``K + 1`` standard-normal tensors (each of the output's shape) that the sampler
        draws, in its order: the starting estimate, then one per later step; by default they are drawn from
        the global generator when needed, in the order and shapes PDEArena's sampler draws them.
        """
        K = self.num_refinement_steps
        if noise is not None and len(noise) != K + 1:
            raise ValueError(f"PDERefiner.sample: need {K + 1} noise tensors, got {len(noise)}")
        shape = (x.shape[0], self.time_future, *x.shape[2:])

        def draw(i: int) -> Tensor:
            return torch.randn(shape, dtype=x.dtype, device=x.device) if noise is None else noise[i]

        steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if self.scheme == "additive":
            estimate = self._call_inner(x, draw(0), cond, steps)
            for k in range(1, K + 1):
                sigma = self.sigmas[k].to(x.dtype)
                noised = estimate + sigma * draw(k)
                estimate = noised - sigma * self._call_inner(x, noised, cond, steps + k)
            return estimate / self._scale(estimate)
        alphas = self.alphas_cumprod.float()  # the schedule's arithmetic in float32, as diffusers' scheduler
        estimate = draw(0)
        for i, t in enumerate(range(K, -1, -1)):
            v = self._call_inner(x, estimate, cond, steps + t)
            a_t = alphas[t]
            a_prev = alphas[t - 1] if t > 0 else torch.ones((), dtype=alphas.dtype, device=alphas.device)
            alpha, beta = a_t / a_prev, 1 - a_t / a_prev
            start = a_t**0.5 * estimate - (1 - a_t) ** 0.5 * v
            mean = (a_prev**0.5 * beta / (1 - a_t)) * start + (
                alpha**0.5 * (1 - a_prev) / (1 - a_t)
            ) * estimate
            if t > 0:
                variance = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20)
                mean = mean + variance**0.5 * draw(i + 1)
            estimate = mean
        return estimate / self._scale(estimate)

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        history = x.unflatten(1, (self.time_history, self.channels))
        return self.sample(history, cond).flatten(1, 2)

    def loss(self, x: Tensor, y: Tensor, cond: Tensor | None = None) -> Tensor:
        """Training loss ``[B]`` for history ``x`` ``[B, T_in, C, *S]`` and target ``y`` ``[B, T_out, C, *S]``
        (normalised units; refined as ``y · data_std / difference_weight``).

        ``"ddpm"``: ``t ~ U{0 … K}``, then ``ε``; the network sees ``√ᾱ_t y + √(1 − ᾱ_t) ε`` and regresses
        ``√ᾱ_t ε − √(1 − ᾱ_t) y``; squared error averaged over space, summed over frames and fields.
        ``"additive"``: ``k ~ U{0 … K}``, then ``ε``; ``k = 0`` regresses ``y`` from the estimate ``ε``,
        ``k ≥ 1`` regresses ``ε`` from ``y + σ_k ε``; squared error averaged over everything but the batch.
        """
        if self.cond_dim == 0:
            cond = None
        elif cond is None:
            raise ValueError(
                f"PDERefiner.loss: cond [B, {self.cond_dim}] is required (cond_dim={self.cond_dim})"
            )
        k = torch.randint(0, self.num_refinement_steps + 1, (x.shape[0],), device=x.device)
        y = y * self._scale(y)
        eps = torch.randn_like(y)
        per_example = (-1, *([1] * (y.ndim - 1)))
        if self.scheme == "ddpm":
            # as the reference: noising in the data's dtype (diffusers' add_noise), the target in float32
            a = self.alphas_cumprod.float()[k].view(per_example)
            a_data = a.to(y.dtype)
            noised = a_data**0.5 * y + (1 - a_data) ** 0.5 * eps
            target = a**0.5 * eps - (1 - a) ** 0.5 * y
            error = (self._call_inner(x, noised, cond, k) - target).pow(2)
            return error.flatten(3).mean(-1).sum((1, 2))
        first = (k == 0).view(per_example)
        sigma = self.sigmas.to(y.dtype)[k].view(per_example)
        estimate = torch.where(first, eps, y + sigma * eps)
        target = torch.where(first, y, eps)
        return (self._call_inner(x, estimate, cond, k) - target).pow(2).flatten(1).mean(1)
