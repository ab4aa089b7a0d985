"""Classification losses by name: logits (B, C) and targets in, a scalar out.

Targets are int64 class indices (B,) or class probabilities (B, C), as batch mixing (mixup, cutmix)
makes them; every loss, class weights included, takes both, and one-hot probabilities give exactly
the loss of their class indices.

Adding a loss is one factory ``(cfg, weight) -> nn.Module`` plus one line in ``LOSSES``.
``weight`` is the per-class weight tensor when ``loss.class_weights`` is on, else None. Weights
are registered as buffers, so ``loss.to(device)`` moves them with the module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.config import ConfigError, LossConfig

__all__ = ["LOSSES", "CrossEntropyLoss", "FocalLoss", "SoftF1Loss", "build_loss", "inverse_frequency_weights"]

logger = logging.getLogger(__name__)


def _probabilities(targets: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices (B,) or class probabilities (B, C) as (B, C) probabilities."""
    if targets.is_floating_point():
        return targets.to(dtype)
    return F.one_hot(targets, num_classes=n_classes).to(dtype)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """torch's cross-entropy, with class-weighted soft targets averaged as class indices are.

    For class indices torch divides the weighted sum by the targets' total weight; for probabilities
    it divides by the batch size, so mixing a batch would change the loss's scale. Here both divide
    by the total weight of the targets.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.weight is None or not targets.is_floating_point():
            return super().forward(logits, targets)
        per_sample = F.cross_entropy(
            logits, targets, weight=self.weight, label_smoothing=self.label_smoothing, reduction="none"
        )
        return per_sample.sum() / (targets * self.weight).sum()


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_target) ** gamma``.

    For class probabilities ``t`` it is ``sum_c -t_c (1 - p_c) ** gamma log p_c``. With ``gamma=0``
    it equals (weighted) cross-entropy, including the weighted-mean reduction.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = logits.float().log_softmax(dim=1)
        t = _probabilities(targets, logits.shape[1], log_p.dtype)
        # the clamp keeps the gradient of (1 - p)^gamma finite where p rounds to exactly 1
        modulator = (1.0 - log_p.exp()).clamp(min=1e-6) ** self.gamma
        loss = -t * modulator * log_p
        if self.weight is None:
            return loss.sum(dim=1).mean()
        return (loss * self.weight).sum() / (t * self.weight).sum()


class SoftF1Loss(nn.Module):
    """``1 - macro F1`` with softmax probabilities as soft counts, so it is differentiable.

    Averaged over the classes present in the batch's targets: a class absent from the batch has no
    true positives to earn, and counting it would put a floor under the loss that no model can beat.
    Probability mass on absent classes still costs, as it is missing from the present classes' TP.
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)
        truth = _probabilities(targets, logits.shape[1], probs.dtype)
        tp = (probs * truth).sum(0)
        fp = (probs * (1 - truth)).sum(0)
        fn = ((1 - probs) * truth).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        present = truth.sum(0) > 0
        return 1.0 - f1[present].mean()


def _ce(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    return CrossEntropyLoss(weight=weight)


def _focal(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    return FocalLoss(gamma=cfg.gamma, weight=weight)


def _label_smoothing(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    # on mixed targets too: smoothing the mixture is what timm's Mixup(label_smoothing=...) does
    return CrossEntropyLoss(weight=weight, label_smoothing=cfg.smoothing)


def _soft_f1(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    if weight is not None:
        logger.info("soft_f1 ignores loss.class_weights: macro F1 already weighs every class equally")
    return SoftF1Loss()


LOSSES: dict[str, Callable[[LossConfig, torch.Tensor | None], nn.Module]] = {
    "ce": _ce,
    "focal": _focal,
    "label_smoothing": _label_smoothing,
    "soft_f1": _soft_f1,
}


def inverse_frequency_weights(class_counts: np.ndarray) -> torch.Tensor:
    """Per-class weights proportional to ``1 / count``, with mean 1 over the classes that occur.

    A class with no training examples gets weight 1: it never appears as a training target, but a
    neutral weight keeps its validation samples counted instead of dropped (or made infinite).
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise ValueError(f"class_counts must be a 1-d array of non-negative counts, got {class_counts!r}")
    weights = np.ones_like(counts)
    seen = counts > 0
    if seen.any():
        inverse = 1.0 / counts[seen]
        weights[seen] = inverse / inverse.mean()
    if not seen.all():
        logger.warning("classes %s have no training examples; weight 1", np.flatnonzero(~seen).tolist())
    return torch.tensor(weights, dtype=torch.float32)


def build_loss(cfg: LossConfig, class_counts: np.ndarray) -> nn.Module:
    """The loss named by ``cfg.name``; ``class_counts[c]`` counts class ``c`` in the training fold."""
    factory = LOSSES.get(cfg.name)
    if factory is None:
        raise ConfigError(f"loss.name: unknown loss '{cfg.name}'; use one of: {', '.join(sorted(LOSSES))}")
    weight = inverse_frequency_weights(class_counts) if cfg.class_weights else None
    return factory(cfg, weight)
