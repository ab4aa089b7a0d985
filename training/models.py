"""Models by timm name: creation with pretrained weights, freezing, input requirements.

``model.pretrained`` is False (random init), a local weights file, or True for timm's weights of the
model: from the Hugging Face cache when they are there (no network), else downloaded once
(``training.weights``). A missing file, or weights neither cached nor downloadable, is a ConfigError
raised before timm is called, so nothing waits on a download that cannot happen.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import timm
from timm.data import resolve_data_config
from timm.models import group_parameters
from timm.utils import freeze
from torch import nn

from training.config import ConfigError, ModelConfig
from training.weights import check_model_name, fetch, weights_for

__all__ = [
    "apply_freeze",
    "build_model",
    "check_image_size",
    "min_input_size",
    "normalization",
    "stage_count",
]

logger = logging.getLogger(__name__)

# what timm.utils.freeze can turn into FrozenBatchNorm2d (BatchNormAct2d subclasses BatchNorm2d)
_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Create ``cfg.name`` from timm with a fresh ``num_classes`` classifier and optional weights.

    Raises:
        ConfigError: unknown model name, missing weights file or cache entry, weights that do not
            fit the architecture, or an option the model does not support.
    """
    check_model_name(cfg.name)
    kwargs: dict = {"num_classes": num_classes}
    if cfg.drop_rate > 0:  # passed only when set: a few timm models take no drop_rate at all
        kwargs["drop_rate"] = cfg.drop_rate
    if cfg.drop_path_rate > 0:  # likewise: VGG, for one, has no residual branches to drop
        kwargs["drop_path_rate"] = cfg.drop_path_rate

    source = "random init"
    if cfg.pretrained is not False:
        file = _local_file(cfg.pretrained) if isinstance(cfg.pretrained, str) else _pretrained_file(cfg.name)
        # timm loads `file` instead of downloading, and drops the classifier when num_classes differs
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(file)})
        source = str(file)

    try:
        model = timm.create_model(cfg.name, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"model.name: timm model '{cfg.name}' rejected an option ({exc}); "
            "set model.drop_rate and model.drop_path_rate to 0 or choose another model"
        ) from None
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        if source == "random init":
            raise
        raise ConfigError(
            f"model.pretrained: weights in '{source}' do not fit '{cfg.name}' "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "use weights saved from this architecture or set it to false"
        ) from None
    logger.info("built %s with %d classes (%s)", cfg.name, num_classes, source)
    return model


def apply_freeze(model: nn.Module, mode: str) -> None:
    """Make parameters trainable per ``mode``: "none", "head" (classifier only) or "stages:N".

    "stages:N" freezes the stem plus the first N stages, as timm's coarse parameter groups define
    them (``model.group_matcher(coarse=True)``). Frozen BatchNorm layers become FrozenBatchNorm2d:
    a frozen layer should compute what it computed before training, and ``model.train()`` would
    otherwise let its running statistics drift with every batch, which matters most for the small
    batches that fine-tuning runs with.
    """
    for param in model.parameters():
        param.requires_grad_(True)
    if mode == "none":
        return
    head = _classifier_param_names(model)
    if mode == "head":
        frozen = {name for name, _ in model.named_parameters() if name not in head}
    elif match := re.fullmatch(r"stages:(\d+)", mode):
        stem, stages = _stem_and_stages(model, head)
        n = int(match.group(1))
        if n > len(stages):
            raise ConfigError(
                f"model.freeze: '{mode}' asks for {n} stages but {type(model).__name__} has "
                f"{len(stages)}; use stages:0 to stages:{len(stages)} or 'head'"
            )
        frozen = set(stem).union(*stages[:n])
    else:
        raise ConfigError(f"model.freeze: unknown mode '{mode}'; use 'none', 'head' or 'stages:N'")
    _freeze(model, frozen)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("freeze=%s: %d trainable parameters", mode, trainable)


def stage_count(model: nn.Module) -> int:
    """How many stages ``stages:N`` can freeze for this model."""
    return len(_stem_and_stages(model, _classifier_param_names(model))[1])


def normalization(model: nn.Module) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The (mean, std) the model's weights were trained with, from its pretrained config."""
    data_cfg = resolve_data_config({}, model=model)
    mean = tuple(float(v) for v in data_cfg["mean"])
    std = tuple(float(v) for v in data_cfg["std"])
    return mean, std  # type: ignore[return-value]


def min_input_size(model: nn.Module) -> int:
    """Smallest square image side that still leaves the last feature map at least 1x1.

    That is the model's total stride (the reduction of its last feature stage); models with a fixed
    input size (most ViTs) need exactly their configured size.
    """
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    if pretrained_cfg.get("fixed_input_size"):
        return int(pretrained_cfg["input_size"][-1])
    sizes = [1]
    if pretrained_cfg.get("min_input_size"):
        sizes.append(int(pretrained_cfg["min_input_size"][-1]))
    feature_info = getattr(model, "feature_info", None)
    if feature_info:
        sizes.append(int(feature_info[-1]["reduction"]))
    else:
        sizes.append(32)  # the usual total stride of an ImageNet classifier
    return max(sizes)


def check_image_size(model: nn.Module, name: str, image_size: int) -> None:
    """Raise a ConfigError when ``image_size`` is below :func:`min_input_size` of ``model`` (``name``)."""
    if image_size < (smallest := min_input_size(model)):
        raise ConfigError(
            f"data.image_size: {image_size} px is too small for {name}; use at least {smallest}"
        )


# --- weights ------------------------------------------------------------------------------------


def _local_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.pretrained: weights file '{value}' not found; give an existing "
            ".safetensors/.pth/.bin file, true for timm's pretrained weights, or false"
        )
    return path


def _pretrained_file(name: str) -> Path:
    """timm's weights of ``name`` from the cache, downloaded first when they are not there."""
    return fetch(weights_for(name)).path


# --- freezing -----------------------------------------------------------------------------------


def _classifier_param_names(model: nn.Module) -> set[str]:
    classifier = model.get_classifier()
    modules = classifier if isinstance(classifier, tuple | list) else (classifier,)
    ids = {id(p) for module in modules for p in module.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def _stem_and_stages(model: nn.Module, head: set[str]) -> tuple[list[str], list[list[str]]]:
    """Parameter names of the stem and of each stage, in forward order, from timm's coarse groups."""
    matcher = model.group_matcher(coarse=True)
    groups = [names for _, names in sorted(group_parameters(model, matcher).items())]
    # the last group(s) hold the classifier, with whatever norm/pool sits next to it
    body = [names for names in groups if head.isdisjoint(names)]
    if isinstance(matcher, dict) and matcher.get("stem") and body:
        return body[0], body[1:]
    return [], body


def _freeze(model: nn.Module, frozen: set[str]) -> None:
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    frozen_norms = [
        name
        for name, module in model.named_modules()
        if isinstance(module, _BATCH_NORMS)
        and module.affine
        and all(f"{name}.{p}" in frozen for p, _ in module.named_parameters(recurse=False))
    ]
    if frozen_norms:
        freeze(model, frozen_norms, include_bn_running_stats=True)
