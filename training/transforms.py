"""Augmentation presets (albumentations, per image, uint8 HWC) and batched normalization on the device.

Images arrive already resized by the decoded-image cache, so presets only augment. Normalization and
the HWC -> CHW layout change happen once per batch on the training device, which keeps the data
loader cheap and moves 4x fewer bytes (uint8) to a GPU.
"""

from __future__ import annotations

import albumentations as A
import torch
import torch.nn.functional as F
from timm.data import Mixup

from training.config import AugmentConfig
from training.memory import reuse_freed_blocks

__all__ = ["PRESETS", "Normalizer", "build_augment", "build_mixup", "mix_batch"]


def _light(s: float, size: int) -> list[A.BasicTransform]:
    return [A.Affine(translate_percent=(-0.06 * s, 0.06 * s), scale=(1 - 0.06 * s, 1 + 0.06 * s), p=0.5)]


def _medium(s: float, size: int) -> list[A.BasicTransform]:
    return [
        A.Affine(
            translate_percent=(-0.08 * s, 0.08 * s),
            scale=(1 - 0.15 * s, 1 + 0.15 * s),
            rotate=(-15 * s, 15 * s),
            p=0.7,
        ),
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=0.5),
    ]


def _heavy(s: float, size: int) -> list[A.BasicTransform]:
    hole = (max(1, int(size * 0.05)), max(1, int(size * (0.05 + 0.15 * s))))
    return [
        A.RandomResizedCrop(size=(size, size), scale=(1 - 0.5 * s, 1.0), p=1.0),
        *_medium(s, size),
        A.HueSaturationValue(int(20 * s), int(30 * s), int(20 * s), p=0.5),
        A.GaussNoise(std_range=(0.01, 0.01 + 0.05 * s), p=0.3),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=hole, hole_width_range=hole, p=0.5 * s),
    ]


# preset name -> builder(strength, size); "none" means no per-image work at all.
PRESETS = {"none": None, "light": _light, "medium": _medium, "heavy": _heavy}


def build_augment(cfg: AugmentConfig, size: int) -> A.Compose | None:
    """The training-time augmentation for one image, or None when there is nothing to do.

    Horizontal flips are not here: the loader flips whole batches at once (see ``uses_hflip``).
    """
    builder = PRESETS[cfg.preset]
    transforms = [] if builder is None else builder(cfg.strength, size)
    return A.Compose(transforms) if transforms else None


def uses_hflip(cfg: AugmentConfig) -> bool:
    return cfg.hflip and cfg.preset != "none"


def build_mixup(cfg: AugmentConfig, n_classes: int) -> Mixup | None:
    """timm's batch mixing (mixup and/or cutmix) as ``cfg`` sets it, or None when it mixes nothing.

    It draws from numpy's global generator: the training loop seeds that per epoch.
    """
    if cfg.mix_prob == 0 or (cfg.mixup_alpha == 0 and cfg.cutmix_alpha == 0):
        return None
    # Label smoothing stays with the loss, which smooths the mixed targets as Mixup would.
    return Mixup(
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        prob=cfg.mix_prob,
        label_smoothing=0.0,
        num_classes=n_classes,
    )


def mix_batch(mixup: Mixup, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mix the normalized NCHW batch ``x`` in place; returns its (B, C) class probabilities.

    Mixup pairs image i with image B-1-i and so needs an even batch: an odd one (a fold's last
    batch) mixes all but its last image, which keeps its one-hot target.
    """
    targets = F.one_hot(y, mixup.num_classes).to(x.dtype)
    even = len(y) - len(y) % 2
    if even:
        targets[:even] = mixup(x[:even], y[:even])[1]
    return targets


class Normalizer:
    """uint8 NHWC batch -> normalized float NCHW on ``device`` (channels_last memory layout on CUDA).

    On the CPU it also makes the process reuse freed batch-sized memory (``reuse_freed_blocks``).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        if device.type == "cpu":
            reuse_freed_blocks()
        self.device = device
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.scale = 1.0 / std_t
        self.shift = -torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255 / std_t

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # NHWC permuted to NCHW *is* channels_last in memory, which CUDA convolutions prefer; CPU kernels
        # want plain NCHW, made in the same pass that converts to float.
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        layout = torch.preserve_format if self.device.type == "cuda" else torch.contiguous_format
        return x.to(torch.float32, memory_format=layout).mul_(self.scale).add_(self.shift)
