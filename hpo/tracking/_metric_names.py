"""The MLflow metric names foldtune logs, in one place: the trial runs, the study's run and retrain's.

Keys are joined with ``/`` as MLflow's UI groups them: ``fold2/f1`` on a trial's run,
``trial3/seed1/fold2/best_f1`` on a retrain run. Folds are numbered from 1, as users read them.
docs/mlflow.md names these metrics for users; change both together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch: only training processes load it
    from training.loop import EpochStats

__all__ = [
    "BEST_CV_F1",
    "BEST_EPOCH",
    "BEST_F1",
    "BIASED_HELDOUT_OOF_F1",
    "BIASED_OOF_F1",
    "CV_F1",
    "ENSEMBLE_OOF_F1",
    "F1_STD",
    "FINISHED_TRIALS",
    "OOF",
    "OOF_F1",
    "TRAIN",
    "WEIGHT",
    "epoch_metrics",
    "fold_key",
    "key",
    "report_metrics",
    "seed_key",
    "trial_key",
]

# A trial's run (and retrain's, per trial and for the version): the study's cross-validated macro-F1.
CV_F1 = "cv_f1"
F1_STD = "f1_std"  # population std of the trial's fold F1s
# Per fold, once the fold ends: its best epoch and that epoch's macro-F1.
BEST_F1 = "best_f1"
BEST_EPOCH = "best_epoch"
# The study's run, once its budget is met (retrain updates BEST_CV_F1 too).
BEST_CV_F1 = "best_cv_f1"
FINISHED_TRIALS = "finished_trials"
# Retrain's report of the version (``report_metrics``): on out-of-fold predictions (folds mode) or
# on a subset of the training images (full mode).
OOF = "oof"
TRAIN = "train"
# Retrain's post-hoc ensemble, all on out-of-fold predictions (``hpo.models._oof``).
OOF_F1 = f"{OOF}_f1"  # per candidate trial (and seed) too: ``trial3/oof_f1``
WEIGHT = "weight"  # a trial's share in the blend
ENSEMBLE_OOF_F1 = "ensemble_oof_f1"
BIASED_OOF_F1 = "biased_oof_f1"  # bias fitted and scored on the same predictions: optimistic
BIASED_HELDOUT_OOF_F1 = "biased_heldout_oof_f1"  # bias fitted on the other folds, scored on each

# Per epoch, at step = epoch: EpochStats field -> metric name. On a full-data retrain the
# "validation" images are training images, so what they score is named as a training number.
_EPOCH = {
    "train_loss": "train_loss",
    "val_loss": "val_loss",
    "f1": "f1",
    "accuracy": "accuracy",
    "lr": "lr",
    "seconds": "epoch_seconds",
    "images_per_sec": "images_per_sec",
}
_EPOCH_ON_TRAINING_IMAGES = {
    **_EPOCH,
    "val_loss": "train_subset_loss",
    "f1": "train_f1",
    "accuracy": "train_accuracy",
}


def key(*parts: str) -> str:
    """``key(trial_key(3), fold_key(2), BEST_F1)`` -> ``"trial3/fold2/best_f1"``."""
    return "/".join(parts)


def fold_key(number: int) -> str:
    """A fold's part of a key, numbered from 1: ``fold2``."""
    return f"fold{number}"


def trial_key(number: int) -> str:
    return f"trial{number}"


def seed_key(seed: int) -> str:
    return f"seed{seed}"


def epoch_metrics(prefix: str, stats: EpochStats, *, on_training_images: bool = False) -> dict[str, float]:
    """An epoch's metrics under ``prefix`` (``fold2``, ``trial3/full``); log them at step = epoch."""
    names = _EPOCH_ON_TRAINING_IMAGES if on_training_images else _EPOCH
    return {key(prefix, name): float(getattr(stats, field)) for field, name in names.items()}


def report_metrics(report: dict, *, prefix: str) -> dict[str, float]:
    """A classification report's headline numbers: ``<prefix>_f1``, ``<prefix>_accuracy`` and, for
    the mask layout, ``<prefix>_<attribute>_f1`` (mask, gender, age); ``prefix``: OOF | TRAIN."""
    metrics = {f"{prefix}_f1": float(report["macro_f1"]), f"{prefix}_accuracy": float(report["accuracy"])}
    for attribute, f1 in report.get("attribute_f1", {}).items():
        metrics[f"{prefix}_{attribute}_f1"] = float(f1)
    return metrics
