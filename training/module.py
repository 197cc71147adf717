"""Lightning modules: one for direct surrogates (FNO, U-Net, SineNet, LSM), one for PDE-Refiner.

Training objectives (all on normalised fields):

* one-step: predict the next ``T_out`` frames from the last ``T_in``;
* pushforward (Brandstetter, Worrall & Welling 2022): unroll ``k ~ U{0..unroll_steps}`` steps without
  gradient, then take the loss on the next step — the model learns from its own input distribution;
* unrolled training (``unroll_grad=True``): backpropagate through all ``unroll_steps + 1`` steps, each
  fed the previous step's prediction (backpropagation through time, the FNO papers' recipe);
* input noise: Gaussian noise of std ``input_noise`` on the (normalised) input frames;
* ``predict_difference``: the network predicts the change from the last input frame.

The objective gives one loss per sample and step; ``reduction`` reduces them over the steps and then over
the batch: ``mean`` (the default) or ``sum``. ``loss=rel_l2, reduction=sum`` with ``unroll_grad`` and one
frame per step is the FNO scripts' training loss (``fourier_2d_time.py``: the sum over the ``T`` steps of
``LpLoss(size_average=False)``, the per-sample relative L2 summed over the batch). ``training_step``
returns the loss and, under ``sample_losses``, the per-sample losses ``[B]`` (detached).

Validation runs autoregressive rollouts over the fixed validation trajectories and logs the metrics the
registry (:mod:`evaluation.registry`) marks for validation, among them the correlation time (first drop of
the Pearson correlation below ``correlation_threshold``, in PDE time units, averaged over trajectories),
the metric that checkpoints are selected on.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from evaluation import metrics, registry
from evaluation.rollout import rollout, rollout_steps
from models.base import SurrogateNet
from solvers.errors import check_choice, check_int, check_number

log = logging.getLogger("pdestream")

LEAD_TIMES = "lead_times"
"""Key of the validation rollouts' lead times ``[B, T]`` among the values gathered over an epoch."""


def mse_loss(pred: Tensor, true: Tensor) -> Tensor:
    """Mean squared error of each sample over its frames, ``[B]``."""
    return metrics.mse(pred, true).mean(-1)


def rel_l2_loss(pred: Tensor, true: Tensor) -> Tensor:
    """Relative L2 error of each sample (per frame, averaged over its frames), ``[B]``."""
    return metrics.relative_l2(pred, true).mean(-1)


# module-level functions, not lambdas: the module must pickle (trainer.strategy=ddp_spawn)
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mse_loss, "rel_l2": rel_l2_loss}
REDUCTIONS = ("mean", "sum")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.01
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` then cosine decay to ``min_factor`` × lr at ``total_steps``.

    A warm-up longer than half the run (a short run with the default warm-up, e.g. ``max_steps=20``)
    is capped at a tenth of the run, with a notice, so short runs and sweeps over ``max_steps`` work.
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"scheduler: need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps} and {total_steps}"
        )
    if warmup_steps > total_steps // 2:
        capped = total_steps // 10
        _notice(
            f"scheduler: warmup_steps={warmup_steps} is more than half of total_steps={total_steps}; "
            f"warming up over {capped} steps (a tenth of the run)"
        )
        warmup_steps = capped

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_decay(
    optimizer: torch.optim.Optimizer, step_size: int, gamma: float
) -> torch.optim.lr_scheduler.StepLR:
    """The learning rate times ``gamma`` every ``step_size`` optimizer steps (StepLR counted in steps; the FNO
    scripts step theirs once an epoch: ``StepLR(step_size=100, gamma=0.5)`` over 50 batches an epoch is
    ``step_size=5000`` here)."""
    check_int("scheduler.step_size", step_size, 1)
    check_number("scheduler.gamma", gamma, 0, 1, low_open=True)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)


def cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine annealing from the learning rate ``lr`` to ``eta_min`` at ``total_steps``, without warm-up:
    ``eta_min + (lr − eta_min)(1 + cos(π s / total_steps)) / 2`` at step ``s``. PDEArena's
    ``LinearWarmupCosineAnnealingLR`` with ``warmup_epochs=0`` (``pdearena/lr_scheduler.py``), stepped every
    optimizer step instead of once an epoch."""
    check_int("scheduler.total_steps", total_steps, 1)
    check_number("scheduler.eta_min", eta_min, low=0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)


@functools.cache
def _notice(message: str) -> None:
    """Log ``message`` once per process (the scheduler is built more than once per run)."""
    log.info(message)


class SurrogateModule(pl.LightningModule):
    """Trains a :class:`~models.base.SurrogateNet` on batches ``{"x", "y", "params", "dt"}``.

    Args:
        net: the network (built from ``conf/model``).
        normalizer: the data's normaliser (``normalize``/``denormalize`` fields, ``cond`` for the
            conditioning vector); its statistics are buffers, so they travel with the checkpoint.
        optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: factory ``optimizer -> LRScheduler`` stepped every optimizer step, or ``None``.
        loss: ``"mse"`` or ``"rel_l2"``.
        predict_difference: predict the increment from the last input frame.
        unroll_steps: pushforward/unrolled steps before (or along with) the loss step.
        unroll_grad: backpropagate through the unrolled steps instead of the pushforward trick.
        reduction: ``"mean"`` or ``"sum"`` of the per-sample losses over the steps and the batch.
        input_noise: std of Gaussian noise added to the normalised inputs during training.
        correlation_threshold: the Pearson correlation that defines the validation correlation time.
        config: the composed run configuration, stored in the checkpoint for provenance and rebuilding.
    """

    def __init__(
        self,
        net: SurrogateNet,
        normalizer: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        loss: str = "mse",
        predict_difference: bool = True,
        unroll_steps: int = 0,
        unroll_grad: bool = False,
        reduction: str = "mean",
        input_noise: float = 0.0,
        correlation_threshold: float = 0.8,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.check_options(loss, unroll_steps, reduction, input_noise, correlation_threshold)
        self.save_hyperparameters(ignore=["net", "normalizer", "optimizer", "scheduler"])
        self.net, self.normalizer = net, normalizer
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.loss_fn = LOSSES[loss]
        self._val: dict[str, list[Tensor]] = {}
        self.val_sample: tuple[Tensor, Tensor, Tensor] | None = None  # prediction, truth, times

    @staticmethod
    def check_options(
        loss: str = "mse",
        unroll_steps: int = 0,
        reduction: str = "mean",
        input_noise: float = 0.0,
        correlation_threshold: float = 0.8,
        **_: Any,
    ) -> None:
        """Refuse bad ``module.*`` settings with one sentence (:class:`ConfigError`); also called before the data
        is built, since ``data.target_frames`` derives from ``unroll_steps``."""
        check_choice("module.loss", loss, list(LOSSES))
        check_int("module.unroll_steps", unroll_steps, 0)
        check_choice("module.reduction", reduction, list(REDUCTIONS))
        check_number("module.input_noise", input_noise, low=0)
        check_number(
            "module.correlation_threshold", correlation_threshold, 0, 1, low_open=True, high_open=True
        )

    # ------------------------------------------------------------------ prediction
    def _advance(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """Next ``T_out`` normalised frames from normalised history ``x``."""
        out = self.net(x, cond)
        return out + x[:, -1:] if self.hparams.predict_difference else out

    def predictor(self, params: Mapping[str, Tensor], dt: Tensor) -> Callable[[Tensor], Tensor]:
        """A one-step predictor in physical units for these trajectories (for rollouts)."""
        cond = self.normalizer.cond(params, dt)

        def predict(history: Tensor) -> Tensor:
            return self.normalizer.denormalize(self._advance(self.normalizer.normalize(history), cond))

        return predict

    def forward(self, x: Tensor, params: Mapping[str, Tensor], dt: Tensor) -> Tensor:
        """Next ``T_out`` frames (physical units) from the history ``x`` ``[B, T_in, C, *S]``."""
        return self.predictor(params, dt)(x)

    # ------------------------------------------------------------------ training
    def objective(self, x: Tensor, y: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Per-sample loss ``[B]`` of one step from normalised history ``x`` to normalised target ``y``,
        and the prediction it scored (``None`` when the loss scores none), which unrolled training feeds back."""
        pred = self._advance(x, cond)
        return self.loss_fn(pred, y), pred

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        x = self.normalizer.normalize(batch["x"])
        y = self.normalizer.normalize(batch["y"])
        cond = self.normalizer.cond(batch["params"], batch["dt"])
        t_out = self.net.time_future
        steps = self.hparams.unroll_steps + 1
        if y.shape[1] < steps * t_out:
            raise ValueError(
                f"the data gives {y.shape[1]} target frames but unroll_steps={steps - 1} with "
                f"model.time_future={t_out} needs {steps * t_out}; set data.target_frames accordingly"
            )
        if self.hparams.input_noise:
            x = x + self.hparams.input_noise * torch.randn_like(x)
        if self.hparams.unroll_grad:
            losses, pred = [], None
            for k in range(steps):
                if k:  # feed the previous step's prediction back, inside the graph
                    pred = self._advance(x, cond) if pred is None else pred
                    x = torch.cat([x, pred], dim=1)[:, -x.shape[1] :]
                loss, pred = self.objective(x, y[:, k * t_out : (k + 1) * t_out], cond)
                losses.append(loss)
            step_losses = torch.stack(losses, dim=1)  # [B, steps]
        else:
            k = int(torch.randint(steps, (1,)).item()) if steps > 1 else 0
            with torch.no_grad():
                for _ in range(k):
                    x = torch.cat([x, self._advance(x, cond)], dim=1)[:, -x.shape[1] :]
            step_losses = self.objective(x, y[:, k * t_out : (k + 1) * t_out], cond)[0][:, None]
        reduce = torch.sum if self.hparams.reduction == "sum" else torch.mean
        sample_losses = reduce(step_losses, dim=1)
        loss = reduce(sample_losses)
        if self._logs_this_step():
            self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return {"loss": loss, "sample_losses": sample_losses.detach()}

    def on_train_start(self) -> None:
        self._fit_start_step = self.global_step

    def _logs_this_step(self) -> bool:
        """Whether this step's loss is logged: on the steps Lightning writes to the loggers
        (``trainer.log_every_n_steps``), the first of the fit and the last, so that ``self.log``'s bookkeeping
        (about 0.4 ms, a few % of a small model's step) is not paid on every step; outside a Trainer, always."""
        trainer = self._trainer
        if trainer is None:
            return True
        first = self.global_step == getattr(self, "_fit_start_step", self.global_step)
        last = 0 < trainer.max_steps <= trainer.global_step + 1
        return first or last or trainer.fast_dev_run or trainer._logger_connector.should_update_logs

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the random state, so that a resumed run draws the same unroll steps and noise."""
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied at the first training batch, not now: creating the resumed run's DataLoader
        # iterators draws from the global RNG, which the uninterrupted run did before the checkpoint.
        self._resume_rng = checkpoint.get("rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        rng = getattr(self, "_resume_rng", None)
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self._resume_rng = None

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ validation / test
    def rollout_metrics(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        """Autoregressive rollout over full trajectories ``batch["u"]`` ``[B, T, C, *S]``: the validation
        metrics and the lead times ``[B, T]`` (each trajectory's own, ``batch["dt"]`` apart)."""
        u = batch["u"]
        t_in, t_out = self.net.time_history, self.net.time_future
        steps = rollout_steps(u.shape[1], t_in, t_out)
        pred = rollout(self.predictor(batch["params"], batch["dt"]), u[:, :t_in], steps)
        true = u[:, t_in : t_in + pred.shape[1]]
        steps = torch.arange(1, pred.shape[1] + 1, device=pred.device, dtype=pred.dtype)
        times = batch["dt"].reshape(-1, 1).to(pred.dtype) * steps  # each trajectory's own lead times
        if not self._val:  # the first validation batch: keep one rollout for the figure callback
            self.val_sample = (pred[:1].detach().cpu(), true[:1].detach().cpu(), times[0].cpu())
        scope = registry.Scope(times, (self.hparams.correlation_threshold,))
        scored = registry.Rollout(pred, true, scope)
        return {m.name: m.compute(scored) for m in registry.validation_metrics()}, times

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        values, times = self.rollout_metrics(batch)
        for key, value in {**values, LEAD_TIMES: times}.items():
            self._val.setdefault(key, []).append(value.detach())

    def on_validation_epoch_end(self) -> None:
        """Log every validation metric of :mod:`evaluation.registry` as ``val/<name>``: the mean over
        trajectories (per-step metrics: also over lead times, and ``_first`` / ``_last`` step), at the
        module's correlation threshold; ``val/corr_time`` is the checkpoint selection key."""
        if not self._val:
            return
        gathered = {}
        for key, values in self._val.items():
            value = self.all_gather(torch.cat(values))
            gathered[key] = value.flatten(0, 1) if self.trainer.world_size > 1 else value
        self._val.clear()
        scope = registry.Scope(gathered.pop(LEAD_TIMES), (self.hparams.correlation_threshold,))
        logged = {}
        for metric in registry.validation_metrics():
            values = gathered[metric.name]
            if metric.kind == registry.PER_MODEL:
                values = metric.of_mean(values.double().mean(0, keepdim=True), scope)
            if metric.thresholded:
                values = values[..., 0]
            if "time" in metric.dims:
                curve = values.mean(0)
                logged |= {f"val/{metric.name}_first": curve[0], f"val/{metric.name}_last": curve[-1]}
                values = curve
            logged[f"val/{metric.name}"] = values.mean()
        # the values are gathered already, equal on every rank: sync_dist only confirms it to Lightning
        self.log("val/corr_time", logged.pop("val/corr_time"), prog_bar=True, sync_dist=True)
        self.log_dict(logged, sync_dist=True)


class RefinerModule(SurrogateModule):
    """PDE-Refiner training: the objective is the refiner's own denoising loss (Lippe et al. 2023).

    Everything else — normalisation, pushforward, difference targets, rollouts, EMA, logging — is the
    direct surrogate's; inference calls the refiner, which runs its K+1 network evaluations. The refiner
    learns the normaliser's per-channel standard deviation, so that it refines the raw-unit target over its
    ``difference_weight`` as the reference does.
    """

    def __init__(self, net: SurrogateNet, normalizer: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(net, normalizer, *args, **kwargs)
        self.net.set_data_std(normalizer.std)

    def objective(self, x: Tensor, y: Tensor, cond: Tensor | None) -> tuple[Tensor, None]:
        target = y - x[:, -1:] if self.hparams.predict_difference else y
        return self.net.loss(x, target, cond), None
