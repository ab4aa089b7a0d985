"""Classification losses by name: logits (B, C) and int64 targets (B,) in, a scalar out.

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

__all__ = ["LOSSES", "FocalLoss", "SoftF1Loss", "build_loss", "inverse_frequency_weights"]

logger = logging.getLogger(__name__)


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_target) ** gamma``.

    With ``gamma=0`` it equals (weighted) cross-entropy, including the weighted-mean reduction.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(logits, targets, reduction="none")
        # the clamp keeps the gradient of (1 - p)^gamma finite where p rounds to exactly 1
        modulator = (1.0 - torch.exp(-nll)).clamp(min=1e-6) ** self.gamma
        loss = modulator * nll
        if self.weight is None:
            return loss.mean()
        w = self.weight[targets]
        return (w * loss).sum() / w.sum()


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
        onehot = F.one_hot(targets, num_classes=logits.shape[1]).to(probs.dtype)
        tp = (probs * onehot).sum(0)
        fp = (probs * (1 - onehot)).sum(0)
        fn = ((1 - probs) * onehot).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        present = onehot.sum(0) > 0
        return 1.0 - f1[present].mean()


def _ce(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weight)


def _focal(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    return FocalLoss(gamma=cfg.gamma, weight=weight)


def _label_smoothing(cfg: LossConfig, weight: torch.Tensor | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.smoothing)


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
