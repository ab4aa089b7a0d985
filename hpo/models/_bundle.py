"""The model bundle: everything ``hpo predict`` needs, in plain files, and its MLflow pyfunc face.

A bundle is a directory::

    bundle.json          format, class names, TTA default, vote, class bias, provenance, one entry per
                         member (with its weight in the vote)
    member-<i>.safetensors   the member's state_dict (tensors only: loading it can never run code)

Each member carries its own resolved run config, image size and normalization, so a top-k ensemble
may mix architectures and input sizes; predict preprocesses every member exactly as it was trained
(``training.cache`` decoding and resizing, the model's mean/std). Nothing in a bundle is pickled.

The format imports neither MLflow nor pandas: predicting from a local bundle loads neither. Its
MLflow face, the pyfunc wrapper, lives in ``hpo.models._pyfunc``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hpo.errors import UserError
from training.config import ConfigError, RunConfig, apply_overrides
from training.models import apply_freeze, build_model

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_FORMAT",
    "TTA_MODES",
    "VOTES",
    "Bundle",
    "Member",
    "build_member_model",
    "find_bundle",
    "load_bundle",
    "save_bundle",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "foldtune-bundle/1"
BUNDLE_FILE = "bundle.json"
# TTA mode -> the views whose probabilities are averaged (identity always included).
TTA_MODES: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "hflip": ("identity", "hflip"),
    "vflip": ("identity", "vflip"),
    "flips": ("identity", "hflip", "vflip", "hvflip"),
}
VOTES = ("soft", "hard")


@dataclass(frozen=True)
class Member:
    """One trained model of an ensemble: weights, the config it was trained with, its preprocessing."""

    config: RunConfig
    state: dict[str, torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    trial: int | None = None  # study trial the config came from
    fold: int | None = None  # CV fold it was trained on; None = all data
    cv_f1: float | None = None  # the trial's CV macro-F1 in the study
    epochs: int | None = None  # epochs trained
    weight: float | None = None  # share in the soft vote; None: equal shares for all members

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], **info: Any) -> Member:
        """From the plain state ``training.loop`` saves as ``best.pt`` (or with weights swapped in)."""
        return cls(
            config=RunConfig.from_dict(state["config"], where="checkpoint"),
            state={k: v.detach().cpu() for k, v in state["model"].items()},
            mean=tuple(float(v) for v in state["mean"]),
            std=tuple(float(v) for v in state["std"]),
            **info,
        )


@dataclass(frozen=True)
class Bundle:
    classes: tuple[str, ...]
    members: list[Member]
    tta: str = "none"  # default TTA mode for predict
    vote: str = "soft"  # default vote over members
    info: dict[str, Any] = field(default_factory=dict)  # provenance: study, trials, mode, cv_f1
    # per-class offsets added to the vote's log-probabilities (fitted on OOF predictions for
    # macro-F1); None: plain argmax
    bias: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a bundle needs at least one member")
        if self.tta not in TTA_MODES:
            raise ValueError(f"unknown TTA mode {self.tta!r}")
        if self.vote not in VOTES:
            raise ValueError(f"unknown vote {self.vote!r}")
        if self.bias is not None and len(self.bias) != len(self.classes):
            raise ValueError(f"bias has {len(self.bias)} values for {len(self.classes)} classes")

    @property
    def image_sizes(self) -> list[int]:
        return sorted({m.image_size for m in self.members})

    @property
    def weights(self) -> list[float] | None:
        """Each member's share in the vote, summing to 1; None when every member counts alike."""
        if all(m.weight is None for m in self.members):
            return None
        raw = [m.weight if m.weight is not None else 0.0 for m in self.members]
        return [w / sum(raw) for w in raw]

    def describe(self) -> dict[str, Any]:
        """bundle.json without the weights."""
        return {
            "format": BUNDLE_FORMAT,
            "classes": list(self.classes),
            "tta": {"default": self.tta, "modes": list(TTA_MODES)},
            "vote": self.vote,
            "bias": list(self.bias) if self.bias is not None else None,
            "info": self.info,
            "members": [
                {
                    "file": f"member-{i}.safetensors",
                    "trial": m.trial,
                    "fold": m.fold,
                    "cv_f1": m.cv_f1,
                    "epochs": m.epochs,
                    "weight": m.weight,
                    "image_size": m.image_size,
                    "mean": list(m.mean),
                    "std": list(m.std),
                    "config": m.config.to_dict(),
                }
                for i, m in enumerate(self.members)
            ],
        }


def default_tta(configs: list[RunConfig]) -> str:
    """hflip when every member was trained treating a mirrored image as the same class."""
    return "hflip" if all(c.augment.hflip for c in configs) else "none"


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write the bundle into a new ``directory`` (built beside it, then renamed into place)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        for i, member in enumerate(bundle.members):
            # clone: safetensors refuses tensors that share storage (tied or viewed weights)
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in member.state.items()}
            save_file(tensors, tmp / f"member-{i}.safetensors", metadata={"format": BUNDLE_FORMAT})
        (tmp / BUNDLE_FILE).write_text(json.dumps(bundle.describe(), indent=1))
        tmp.chmod(0o755)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def find_bundle(path: str | Path) -> Path:
    """The bundle directory inside ``path``: a bundle itself, or an MLflow model directory holding one."""
    path = Path(path)
    for candidate in (path, path / "artifacts" / "bundle", path / "bundle"):
        if (candidate / BUNDLE_FILE).is_file():
            return candidate
    raise UserError(
        f"{path}: no foldtune model bundle ({BUNDLE_FILE}) found; give a directory written by "
        "`hpo retrain`, an MLflow model directory, or models:/NAME@ALIAS"
    )


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle; weights come from safetensors, so loading cannot execute code."""
    directory = find_bundle(path)
    where = directory / BUNDLE_FILE
    try:
        raw = json.loads(where.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{where}: cannot read the bundle description ({exc}); retrain the model") from None
    if raw.get("format") != BUNDLE_FORMAT:
        raise UserError(
            f"{where}: format {raw.get('format')!r} is not {BUNDLE_FORMAT}; "
            "retrain the model with this foldtune version"
        )
    members = []
    for entry in raw["members"]:
        file = directory / entry["file"]
        try:
            state = load_file(file)
        except (OSError, ValueError) as exc:
            raise UserError(f"{file}: cannot read member weights ({exc}); retrain the model") from None
        members.append(
            Member(
                config=RunConfig.from_dict(entry["config"], where=str(where)),
                state=state,
                mean=tuple(entry["mean"]),
                std=tuple(entry["std"]),
                trial=entry.get("trial"),
                fold=entry.get("fold"),
                cv_f1=entry.get("cv_f1"),
                epochs=entry.get("epochs"),
                weight=entry.get("weight"),
            )
        )
    return Bundle(
        classes=tuple(raw["classes"]),
        members=members,
        tta=raw["tta"]["default"],
        vote=raw.get("vote", "soft"),
        info=raw.get("info", {}),
        bias=tuple(raw["bias"]) if raw.get("bias") is not None else None,
    )


def build_member_model(member: Member, n_classes: int) -> nn.Module:
    """The member's network with its weights, in eval mode on the CPU.

    Built exactly as training built it (same timm name, same freezing, so FrozenBatchNorm layers
    match the saved keys), but never from pretrained weights: the bundle holds all of them.
    """
    cfg = apply_overrides(member.config, {"model.pretrained": False}, where="bundle member")
    try:
        model = build_model(cfg.model, n_classes)
        apply_freeze(model, cfg.model.freeze)
        model.load_state_dict(member.state)
    except (RuntimeError, ConfigError) as exc:
        raise UserError(
            f"bundle member (trial {member.trial}, fold {member.fold}): weights do not fit "
            f"{cfg.model.name} ({' '.join(str(exc).split())[:200]}); retrain the model"
        ) from None
    return model.eval()
