"""The peers' training: a plain PyTorch loop as Ray Tune and Optuna users write it, and the quick space
as ``trial.suggest_*`` calls.

A ``Dataset`` that opens, decodes and resizes every image with PIL each time it is read (so in every
epoch of every trial: no shared cache), albumentations for augmentation and normalization, a
``DataLoader`` with no worker processes (one CPU per trial), a timm model, torch optimizers, losses and
schedules. Each key of the quick space means what it means in foldtune's training (the same
optimizers, focal loss, schedules and ``light`` preset), so a config is the same experiment to every
peer; the loop is otherwise what such users write (weight decay on every parameter, per-image
normalization on the CPU).

Shared by the Ray Tune trainable (``benchmarks.peer_ray``), the plain Optuna script
(``benchmarks.peer_optuna``) and the judge: ``benchmarks.peers`` re-scores every peer's picks with
:func:`holdout_f1`, so no foldtune code decides the figure that is compared.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import timm
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from PIL import Image
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "Manifest",
    "Setup",
    "add_setup_arguments",
    "cross_validate",
    "holdout_f1",
    "read_manifest",
    "setup_from",
    "suggest_quick",
    "train_and_validate",
]

# Values of the quick space's conditional keys when their condition does not hold (never used then;
# kept so that every config is a complete record).
DEFAULTS: dict[str, Any] = {
    "optim.momentum": 0.9,
    "optim.nesterov": False,
    "loss.gamma": 2.0,
    "loss.smoothing": 0.1,
    "augment.strength": 0.5,
}


@dataclass(frozen=True)
class Setup:
    """The quick space's fixed part, as every peer runs it."""

    folds: int = 3
    epochs: int = 6  # budget.max_epochs per fold
    patience: int = 2  # budget.patience: stop a fold after this many epochs without a better F1
    image_size: int = 32
    model: str = "test_resnet"

    def to_args(self) -> list[str]:
        """The command-line form that :func:`add_setup_arguments` reads back (for the peers' processes)."""
        return [
            *("--folds", str(self.folds), "--epochs", str(self.epochs), "--patience", str(self.patience)),
            *("--image-size", str(self.image_size), "--model", self.model),
        ]


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """What each peer script takes: the data, the fixed part of the space, the seed and the deadline."""
    parser.add_argument("--search", type=Path, required=True, help="manifest of the images to search on")
    parser.add_argument("--folds", type=int, default=Setup.folds)
    parser.add_argument("--epochs", type=int, default=Setup.epochs)
    parser.add_argument("--patience", type=int, default=Setup.patience)
    parser.add_argument("--image-size", type=int, default=Setup.image_size)
    parser.add_argument("--model", default=Setup.model)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--deadline", type=float, required=True, help="time.time() at which the budget ends")


def setup_from(args: argparse.Namespace) -> Setup:
    return Setup(args.folds, args.epochs, args.patience, args.image_size, args.model)


@dataclass(frozen=True)
class Manifest:
    files: list[str]  # absolute paths
    labels: np.ndarray  # int64 index into ``classes``
    groups: np.ndarray  # str group (writer, person) per image
    classes: tuple[str, ...]


def read_manifest(path: Path, classes: Sequence[str] | None = None) -> Manifest:
    """``path,label,group`` rows (paths absolute or relative to the CSV); ``classes`` fix the label order."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = tuple(classes) if classes is not None else tuple(sorted({row["label"] for row in rows}))
    index = {name: i for i, name in enumerate(names)}
    return Manifest(
        files=[str((Path(path).parent / row["path"]).resolve()) for row in rows],
        labels=np.array([index[row["label"]] for row in rows], dtype=np.int64),
        groups=np.array([row.get("group", "") for row in rows]),
        classes=names,
    )


# --- the search space, define-by-run ----------------------------------------------------------


def suggest_quick(trial: Any) -> dict[str, Any]:
    """search_spaces/quick.yaml's params in its order, conditions as ``if``; returns what was suggested."""
    p: dict[str, Any] = {}
    p["optim.name"] = trial.suggest_categorical("optim.name", ["sgd", "adam", "adamw"])
    p["optim.lr"] = trial.suggest_float("optim.lr", 1e-4, 3e-2, log=True)
    p["optim.weight_decay"] = trial.suggest_float("optim.weight_decay", 1e-6, 1e-2, log=True)
    if p["optim.name"] == "sgd":
        p["optim.momentum"] = trial.suggest_float("optim.momentum", 0.8, 0.99)
        p["optim.nesterov"] = trial.suggest_categorical("optim.nesterov", [False, True])
    p["loss.name"] = trial.suggest_categorical("loss.name", ["ce", "focal", "label_smoothing"])
    if p["loss.name"] == "focal":
        p["loss.gamma"] = trial.suggest_float("loss.gamma", 1.0, 3.0)
    if p["loss.name"] == "label_smoothing":
        p["loss.smoothing"] = trial.suggest_float("loss.smoothing", 0.02, 0.2)
    p["augment.preset"] = trial.suggest_categorical("augment.preset", ["none", "light"])
    if p["augment.preset"] == "light":
        p["augment.strength"] = trial.suggest_float("augment.strength", 0.1, 0.9)
    p["sched.name"] = trial.suggest_categorical("sched.name", ["cosine", "onecycle", "step"])
    p["budget.batch_size"] = trial.suggest_int("budget.batch_size", 32, 128, step=32)
    return p


# --- data ---------------------------------------------------------------------------------------


class ImageFiles(Dataset):
    """Decodes and resizes a file on every read, as a torchvision/albumentations tutorial does."""

    def __init__(self, files: Sequence[str], labels: np.ndarray, size: int, transform: A.Compose) -> None:
        self.files, self.labels, self.size, self.transform = files, labels, size, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as img:
            img = img.convert("RGB")
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
            pixels = np.asarray(img)
        return self.transform(image=pixels)["image"], int(self.labels[i])


def _transforms(p: dict[str, Any], *, train: bool, mean, std, seed: int) -> A.Compose:
    steps: list[A.BasicTransform] = []
    if train and p["augment.preset"] == "light":  # foldtune's `light`: a small shift and zoom
        s = p.get("augment.strength", DEFAULTS["augment.strength"])
        steps.append(
            A.Affine(translate_percent=(-0.06 * s, 0.06 * s), scale=(1 - 0.06 * s, 1 + 0.06 * s), p=0.5)
        )
    return A.Compose([*steps, A.Normalize(mean=mean, std=std), ToTensorV2()], seed=seed)


# --- model, loss, optimizer, schedule -------------------------------------------------------------


class FocalLoss(nn.Module):
    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(logits, targets, reduction="none")
        return ((1.0 - torch.exp(-nll)).clamp(min=1e-6) ** self.gamma * nll).mean()


def _loss(p: dict[str, Any]) -> nn.Module:
    if p["loss.name"] == "focal":
        return FocalLoss(p.get("loss.gamma", DEFAULTS["loss.gamma"]))
    if p["loss.name"] == "label_smoothing":
        return nn.CrossEntropyLoss(label_smoothing=p.get("loss.smoothing", DEFAULTS["loss.smoothing"]))
    return nn.CrossEntropyLoss()


def _optimizer(p: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    lr, wd = p["optim.lr"], p["optim.weight_decay"]
    if p["optim.name"] == "sgd":
        momentum = p.get("optim.momentum", DEFAULTS["optim.momentum"])
        nesterov = p.get("optim.nesterov", DEFAULTS["optim.nesterov"])
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd
        )
    optimizer = torch.optim.Adam if p["optim.name"] == "adam" else torch.optim.AdamW
    return optimizer(model.parameters(), lr=lr, weight_decay=wd)


def _schedule(p: dict[str, Any], optimizer, epochs: int, steps: int):
    """(scheduler, steps per batch?): onecycle steps every batch, the others every epoch."""
    if p["sched.name"] == "onecycle":
        total = epochs * steps
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=p["optim.lr"], total_steps=total, cycle_momentum=False
        ), True
    if p["sched.name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1), False
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs), False


# --- train one split ------------------------------------------------------------------------------


OnEpoch = Callable[[int, float], None]  # (1-based epoch, validation macro-F1)


def train_and_validate(
    p: dict[str, Any],
    data: Manifest,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    setup: Setup,
    *,
    seed: int = 0,
    patience: int | None = None,
    on_epoch: OnEpoch | None = None,
) -> list[float]:
    """Train on ``train_idx`` for up to ``setup.epochs`` epochs; validation macro-F1 after each epoch.

    With ``patience``, stops after that many epochs without a better F1 (early stopping).
    """
    torch.manual_seed(seed)
    n_classes = len(data.classes)
    model = timm.create_model(setup.model, pretrained=False, num_classes=n_classes)
    cfg = timm.data.resolve_model_data_config(model)
    files = data.files
    train_set = ImageFiles(
        [files[i] for i in train_idx],
        data.labels[train_idx],
        setup.image_size,
        _transforms(p, train=True, mean=cfg["mean"], std=cfg["std"], seed=seed),
    )
    val_set = ImageFiles(
        [files[i] for i in val_idx],
        data.labels[val_idx],
        setup.image_size,
        _transforms(p, train=False, mean=cfg["mean"], std=cfg["std"], seed=seed),
    )
    batch = int(p["budget.batch_size"])
    train_loader = DataLoader(
        train_set,
        batch_size=batch,
        shuffle=True,
        drop_last=True,  # a last batch of one image breaks BatchNorm in training mode
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(val_set, batch_size=256, shuffle=False, num_workers=0)
    criterion = _loss(p)
    optimizer = _optimizer(p, model)
    scheduler, per_batch = _schedule(p, optimizer, setup.epochs, len(train_loader))

    scores: list[float] = []
    for epoch in range(1, setup.epochs + 1):
        model.train()
        for x, y in train_loader:
            loss = criterion(model(x), y)
            if not math.isfinite(loss.item()):
                return scores or [0.0]  # diverged: what a user's loop records as a failed run
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_batch:
                scheduler.step()
        if not per_batch:
            scheduler.step()
        scores.append(_macro_f1(model, val_loader, n_classes))
        if on_epoch is not None:
            on_epoch(epoch, scores[-1])
        if patience is not None and epoch - 1 - int(np.argmax(scores)) >= patience:
            break
    return scores


@torch.no_grad()
def _macro_f1(model: nn.Module, loader: DataLoader, n_classes: int) -> float:
    model.eval()
    truth, pred = [], []
    for x, y in loader:
        pred.append(model(x).argmax(dim=1).numpy())
        truth.append(y.numpy())
    y_true, y_pred = np.concatenate(truth), np.concatenate(pred)
    return float(f1_score(y_true, y_pred, labels=np.arange(n_classes), average="macro", zero_division=0))


# --- k-fold and the common judge ----------------------------------------------------------------


FoldEpoch = Callable[[int, int, float], None]  # (0-based fold, 1-based epoch, F1 credited so far)


def cross_validate(
    p: dict[str, Any],
    data: Manifest,
    folds: list[tuple[np.ndarray, np.ndarray]],
    setup: Setup,
    *,
    seed: int = 0,
    on_epoch: FoldEpoch | None = None,
) -> float:
    """Mean over folds of each fold's best-epoch macro-F1, with early stopping per fold.

    ``on_epoch`` gets the F1 credited so far (finished folds' F1 plus the current fold's best, over
    the number of folds): the value a pruner can compare across trials at the same fold and epoch.
    """
    fold_f1: list[float] = []
    for k, (train_idx, val_idx) in enumerate(folds):
        best = 0.0

        def report(epoch: int, f1: float, k: int = k) -> None:
            nonlocal best
            best = max(best, f1)
            if on_epoch is not None:
                on_epoch(k, epoch, (sum(fold_f1) + best) / len(folds))

        scores = train_and_validate(
            p, data, train_idx, val_idx, setup, seed=seed + k, patience=setup.patience, on_epoch=report
        )
        fold_f1.append(max(scores))
    return float(np.mean(fold_f1))


def holdout_f1(
    p: dict[str, Any], search: Manifest, holdout: Manifest, setup: Setup, *, seed: int = 0
) -> float:
    """The judge: train on the whole search set for ``setup.epochs`` epochs, macro-F1 on the held-out set.

    No early stopping and no epoch picked on the held-out images: the last epoch's model is scored.
    """
    both = Manifest(
        search.files + holdout.files,
        np.concatenate([search.labels, holdout.labels]),
        np.concatenate([search.groups, holdout.groups]),
        search.classes,
    )
    train_idx = np.arange(len(search.files))
    test_idx = np.arange(len(search.files), len(both.files))
    return train_and_validate(p, both, train_idx, test_idx, setup, seed=seed)[-1]
