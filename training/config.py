"""One typed config for a training run: data, model, loss, optimizer, scheduler, augment, cv, budget.

A trial is this config plus overrides at dotted paths (``optim.lr``); the resolved config is stored
with every trial and inside every checkpoint, so any run can be repeated exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "AugmentConfig",
    "BudgetConfig",
    "CVConfig",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedConfig",
    "apply_overrides",
    "config_paths",
]


class ConfigError(ValueError):
    """A user-facing configuration problem; the message says what is wrong and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: str = "sample"  # CSV manifest, ImageFolder root, mask-layout root, or "sample"
    format: Literal["auto", "csv", "imagefolder", "mask", "sample"] = "auto"
    image_size: int = Field(32, ge=8, le=1024)  # square side in pixels after resize
    cache_dir: str = ".hpo/cache"  # decoded-image cache shared by folds, trials and workers


class ModelConfig(_Section):
    name: str = "test_resnet"  # any timm model name
    # False: random init; True: offline Hugging Face cache; a path: local weights file
    pretrained: bool | str = False
    freeze: str = "none"  # none | head (train classifier only) | stages:N (freeze stem + first N stages)
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)  # dropout before the classifier
    drop_path_rate: float = Field(
        0.0, ge=0.0, lt=1.0
    )  # stochastic depth: chance a residual branch is skipped

    @field_validator("freeze")
    @classmethod
    def _freeze_mode(cls, value: str) -> str:
        if value in ("none", "head") or re.fullmatch(r"stages:\d+", value):
            return value
        raise ValueError("must be 'none', 'head' or 'stages:N' (e.g. stages:2)")


class LossConfig(_Section):
    name: Literal["ce", "focal", "label_smoothing", "soft_f1"] = "ce"
    class_weights: bool = False  # inverse-frequency weights from the training fold
    gamma: float = Field(2.0, ge=0.0)  # focal loss focusing parameter
    smoothing: float = Field(0.1, ge=0.0, lt=1.0)  # label smoothing amount


class OptimConfig(_Section):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = False  # SGD only
    # layer-wise LR decay: each layer group below the head trains at this times the lr of the one
    # above it (timm's parameter groups); 1.0 = off
    layer_decay: float = Field(1.0, gt=0.0, le=1.0)


class SchedConfig(_Section):
    name: Literal["none", "step", "cosine", "plateau", "onecycle"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)  # linear warmup before any schedule (onecycle: its rising phase)
    step_size: int = Field(3, ge=1)  # StepLR period in epochs
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # StepLR decay
    factor: float = Field(0.5, gt=0.0, lt=1.0)  # ReduceLROnPlateau decay
    patience: int = Field(1, ge=0)  # ReduceLROnPlateau patience in epochs


class AugmentConfig(_Section):
    preset: Literal["none", "light", "medium", "heavy"] = "light"
    strength: float = Field(0.5, ge=0.0, le=1.0)  # scales magnitudes and probabilities of the preset
    hflip: bool = True  # off for data where mirroring changes the class (digits, text)
    # batch mixing (timm's Mixup): Beta(alpha, alpha) mixing weights, 0 = off; with both on, each
    # mixed batch is mixup or cutmix with equal chance; mix_prob is the chance a batch is mixed
    mixup_alpha: float = Field(0.0, ge=0.0)
    cutmix_alpha: float = Field(0.0, ge=0.0)
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)


class CVConfig(_Section):
    folds: int = Field(3, ge=2, le=20)
    seed: int = 0  # fold assignment seed; same seed, same folds
    oversample: bool = False  # repeat rare classes inside the training fold only


class BudgetConfig(_Section):
    max_epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    accum_steps: int = Field(1, ge=1)  # gradient accumulation: effective batch = batch_size * accum_steps
    grad_clip: float | None = Field(None, gt=0.0)  # max gradient norm, None = off
    # exponential moving average of the weights (timm's ModelEmaV3, warmed up over the first steps);
    # validation and the saved weights then come from the average; 0 = off
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    patience: int | None = Field(3, ge=1)  # early stopping patience in epochs, None = off
    monitor: Literal["val_loss", "f1"] = "f1"  # what early stopping and the best checkpoint follow
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    seed: int = 0  # weight init and shuffling


class RunConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    augment: AugmentConfig = AugmentConfig()
    cv: CVConfig = CVConfig()
    budget: BudgetConfig = BudgetConfig()

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "config") -> RunConfig:
        """Validate a nested dict; a failure becomes one ConfigError naming the key and the fix."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, where)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def cache_path(self) -> Path:
        return Path(self.data.cache_dir)


def config_paths() -> set[str]:
    """Every dotted leaf path of RunConfig (``optim.lr``, ``budget.max_epochs``, ...)."""
    return {
        f"{section}.{key}"
        for section, field in RunConfig.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]
    }


def apply_overrides(config: RunConfig, overrides: dict[str, Any], *, where: str = "overrides") -> RunConfig:
    """Return a new config with values set at dotted paths; unknown paths are a ConfigError."""
    known = config_paths()
    raw = config.to_dict()
    for path, value in overrides.items():
        if path not in known:
            raise ConfigError(f"{where}: unknown config key '{path}'; use one of: {', '.join(sorted(known))}")
        section, key = path.split(".", 1)
        raw[section][key] = value
    return RunConfig.from_dict(raw, where=where)


def _describe(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"]) or "(root)"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key '{path}'; remove it or check its spelling"
    return f"{where}: invalid value for '{path}' ({err['msg']}); got {err.get('input')!r}"
