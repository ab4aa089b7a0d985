"""Optimizers and learning-rate schedules by name, behind one schedule interface.

The training loop calls ``step_batch()`` after every optimizer step and ``step_epoch(val_loss)``
after every validation; each schedule acts on the call that fits it and ignores the other, so the
loop never branches on scheduler names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.optim import lr_scheduler

from training.config import ConfigError, OptimConfig, SchedConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "LRSchedule",
    "build_optimizer",
    "build_scheduler",
    "peak_lr_epoch",
]

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
    normalization scales towards zero. With ``layer_decay`` < 1 the model's layers (timm's fine
    parameter groups, stem first) get learning rates falling by that factor per layer below the head:
    pretrained early layers move less than the new classifier. Parameters or param groups are used
    as given, minus frozen tensors.
    """
    factory = OPTIMIZERS.get(cfg.name)
    if factory is None:
        raise ConfigError(
            f"optim.name: unknown optimizer '{cfg.name}'; use one of: {', '.join(sorted(OPTIMIZERS))}"
        )
    if isinstance(params, nn.Module):
        no_decay = params.no_weight_decay() if hasattr(params, "no_weight_decay") else ()
        if cfg.layer_decay < 1.0:
            groups: list = param_groups_layer_decay(
                params, cfg.weight_decay, no_weight_decay_list=no_decay, layer_decay=cfg.layer_decay
            )
            for group in groups:  # timm's schedulers read lr_scale; torch's read each group's lr
                group["lr"] = cfg.lr * group["lr_scale"]
        else:
            groups = param_groups_weight_decay(params, cfg.weight_decay, no_weight_decay_list=no_decay)
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
        warmup_steps: the first steps go to a linear ramp up to the optimizer's learning rate; the
            scheduler starts after it, from the full rate (a plateau does not count warmup losses).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None = None,
        *,
        every: Literal["batch", "epoch", "plateau"] = "epoch",
        max_steps: int | None = None,
        warmup_steps: int = 0,
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.every = every
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        # Made after the scheduler, which thereby records the full rates as its base; step 0 then
        # runs at lr / (warmup + 1), and the rate is full after `warmup_steps` steps.
        self.warmup = (
            lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps)
            if warmup_steps
            else None
        )
        self._steps = 0

    @property
    def lr(self) -> float:
        """Current learning rate of the head: the highest over the parameter groups (layer decay
        gives the lower layers less)."""
        return max(float(group["lr"]) for group in self.optimizer.param_groups)

    def step_batch(self) -> None:
        if self.every == "batch":
            self._step()

    def step_epoch(self, val_loss: float) -> None:
        if self.every == "epoch":
            self._step()
        elif self.every == "plateau":
            self._step(val_loss)

    def _step(self, *metric: float) -> None:
        if self.max_steps is not None and self._steps >= self.max_steps:
            return
        if self.warmup is not None and self._steps < self.warmup_steps:
            self.warmup.step()
        elif self.scheduler is not None:
            self.scheduler.step(*metric)
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/containers only, so it loads with ``torch.load(weights_only=True)``."""
        return {
            "steps": self._steps,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._steps = int(state["steps"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.warmup is not None and state.get("warmup") is not None:
            self.warmup.load_state_dict(state["warmup"])


# Each factory gets the warmup epochs, already fitted to the budget, and hands them to LRSchedule.
Factory = Callable[[SchedConfig, torch.optim.Optimizer, int, int, int], LRSchedule]


def _none(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int, warmup: int
) -> LRSchedule:
    return LRSchedule(optimizer, warmup_steps=warmup)


def _step(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int, warmup: int
) -> LRSchedule:
    scheduler = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return LRSchedule(optimizer, scheduler, every="epoch", warmup_steps=warmup)


def _cosine(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int, warmup: int
) -> LRSchedule:
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)
    return LRSchedule(optimizer, cosine, every="epoch", warmup_steps=warmup)


def _plateau(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int, warmup: int
) -> LRSchedule:
    scheduler = lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.factor, patience=cfg.patience
    )
    return LRSchedule(optimizer, scheduler, every="plateau", warmup_steps=warmup)


def _onecycle(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, epochs: int, steps: int, warmup: int
) -> LRSchedule:
    total = epochs * steps
    scheduler = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total,
        # its own rise is the warmup: warmup_epochs long when set, else OneCycleLR's 30%
        pct_start=warmup / epochs if warmup else 0.3,
        # keep optim.momentum / betas as configured, so they stay meaningful search dimensions
        cycle_momentum=False,
    )
    return LRSchedule(optimizer, scheduler, every="batch", max_steps=total - 1)


SCHEDULERS: dict[str, Factory] = {
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
    warmup = _fitted_warmup(cfg, epochs)
    if warmup < cfg.warmup_epochs:
        logger.warning(
            "sched.warmup_epochs=%d shortened to %d for %d epochs", cfg.warmup_epochs, warmup, epochs
        )
    return factory(cfg, optimizer, epochs, steps_per_epoch, warmup)


def _fitted_warmup(cfg: SchedConfig, epochs: int) -> int:
    # At least one epoch after warmup: a sampled warmup may not fit a short budget; shorten it, don't fail.
    return max(0, min(cfg.warmup_epochs, epochs - 1))


def peak_lr_epoch(cfg: SchedConfig, epochs: int) -> int:
    """The first epoch (1-based) that trains at the schedule's peak learning rate.

    Before it a trial is still warming up (a linear warmup, or one-cycle's rise), so its F1 says little
    about where it will end; a pruner should not judge it there against trials already at full rate.
    """
    warmup = _fitted_warmup(cfg, epochs)
    if cfg.name == "onecycle" and not warmup:
        return max(1, math.ceil(0.3 * epochs))  # OneCycleLR's own rise: the first 30 % of the steps
    return min(epochs, warmup + 1)
