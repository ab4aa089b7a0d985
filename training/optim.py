"""Optimizers and learning-rate schedules by name, behind one schedule interface.

The training loop calls ``step_batch()`` after every optimizer step and ``step_epoch(val_loss)``
after every validation; each schedule acts on the call that fits it and ignores the other, so the
loop never branches on scheduler names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.optim import lr_scheduler

from training.config import ConfigError, OptimConfig, SchedConfig

__all__ = ["OPTIMIZERS", "SCHEDULERS", "LRSchedule", "build_optimizer", "build_scheduler"]

logger = logging.getLogger(__name__)

Params = nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]]


# --- optimizers ---------------------------------------------------------------------------------


def _sgd(cfg: OptimConfig, params: list) -> torch.optim.Optimizer:
    if cfg.nesterov and cfg.momentum == 0:
        raise ConfigError("optim.nesterov: Nesterov needs momentum; set optim.momentum > 0 or nesterov false")
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def _adam(cfg: OptimConfig, params: list) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _adamw(cfg: OptimConfig, params: list) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[OptimConfig, list], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}


def build_optimizer(cfg: OptimConfig, params: Params) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``params``.

    ``params`` may be a model: then frozen parameters are left out, and biases and norm weights
    (1-d tensors) get no weight decay, as timm's training script does; decaying them only pulls
    normalization scales towards zero. Parameters or param groups are used as given, minus frozen
    tensors.
    """
    factory = OPTIMIZERS.get(cfg.name)
    if factory is None:
        raise ConfigError(
            f"optim.name: unknown optimizer '{cfg.name}'; use one of: {', '.join(sorted(OPTIMIZERS))}"
        )
    if isinstance(params, nn.Module):
        no_decay = params.no_weight_decay() if hasattr(params, "no_weight_decay") else ()
        groups: list = param_groups_weight_decay(params, cfg.weight_decay, no_weight_decay_list=no_decay)
    else:
        groups = [p for p in params if not isinstance(p, torch.Tensor) or p.requires_grad]
    groups = [g for g in groups if not isinstance(g, dict) or g["params"]]
    if not groups:
        raise ConfigError("model.freeze: no trainable parameters left; freeze fewer stages or use 'head'")
    return factory(cfg, groups)


# --- schedules ----------------------------------------------------------------------------------


class LRSchedule:
    """One interface over every learning-rate schedule.

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        scheduler: a torch scheduler, or None for a constant learning rate.
        every: when the scheduler steps: "batch" (after each optimizer step), "epoch" (after each
            validation) or "plateau" (after each validation, given the validation loss).
        max_steps: optional cap on steps; extra calls are ignored (OneCycleLR raises past its end,
            and a loop that counts one partial accumulation step too many should not crash on it).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None = None,
        *,
        every: Literal["batch", "epoch", "plateau"] = "epoch",
        max_steps: int | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.every = every
        self.max_steps = max_steps
        self._steps = 0

    @property
    def lr(self) -> float:
        """Current learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step_batch(self) -> None:
        if self.every == "batch":
            self._step()

    def step_epoch(self, val_loss: float) -> None:
        if self.every == "epoch":
            self._step()
        elif self.every == "plateau":
            self._step(val_loss)

    def _step(self, *metric: float) -> None:
        if self.scheduler is None:
            return
        if self.max_steps is not None and self._steps >= self.max_steps:
            return
        self.scheduler.step(*metric)
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/containers only, so it loads with ``torch.load(weights_only=True)``."""
        return {
            "steps": self._steps,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._steps = int(state["steps"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _none(cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int) -> LRSchedule:
    return LRSchedule(optimizer)


def _step(cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int) -> LRSchedule:
    scheduler = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return LRSchedule(optimizer, scheduler, every="epoch")


def _cosine(cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int) -> LRSchedule:
    # At least one cosine epoch: a sampled warmup may not fit a short budget; shorten it, don't fail.
    warmup = min(cfg.warmup_epochs, epochs - 1)
    if warmup < cfg.warmup_epochs:
        logger.warning(
            "sched.warmup_epochs=%d shortened to %d for %d epochs", cfg.warmup_epochs, warmup, epochs
        )
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)
    if warmup == 0:
        return LRSchedule(optimizer, cosine, every="epoch")
    # epoch 0 runs at lr / (warmup + 1), reaching the full lr after `warmup` epochs
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    scheduler = lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
    return LRSchedule(optimizer, scheduler, every="epoch")


def _plateau(cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int) -> LRSchedule:
    scheduler = lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.factor, patience=cfg.patience
    )
    return LRSchedule(optimizer, scheduler, every="plateau")


def _onecycle(cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int) -> LRSchedule:
    total = epochs * steps
    scheduler = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total,
        # keep optim.momentum / betas as configured, so they stay meaningful search dimensions
        cycle_momentum=False,
    )
    return LRSchedule(optimizer, scheduler, every="batch", max_steps=total - 1)


SCHEDULERS: dict[str, Callable[[SchedConfig, torch.optim.Optimizer, int, int], LRSchedule]] = {
    "none": _none,
    "step": _step,
    "cosine": _cosine,
    "plateau": _plateau,
    "onecycle": _onecycle,
}


def build_scheduler(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int
) -> LRSchedule:
    """The schedule named by ``cfg.name``; ``steps_per_epoch`` counts optimizer steps, i.e. batches
    per epoch already divided by gradient accumulation."""
    factory = SCHEDULERS.get(cfg.name)
    if factory is None:
        raise ConfigError(
            f"sched.name: unknown scheduler '{cfg.name}'; use one of: {', '.join(sorted(SCHEDULERS))}"
        )
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}")
    return factory(cfg, optimizer, epochs, steps_per_epoch)
