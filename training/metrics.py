"""Classification metrics from true labels and predicted probabilities (scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from training.layouts import MASK_ATTRIBUTES, MASK_CLASSES, class_names, mask_attributes

__all__ = ["classification_report", "macro_f1", "mask_attribute_f1"]


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    # labels= keeps classes absent from a small validation fold in the average (as a leaderboard does).
    return float(f1_score(y_true, y_pred, labels=np.arange(n_classes), average="macro", zero_division=0))


def mask_attribute_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Macro-F1 of each attribute of the mask layout's 18 classes (indices 0-17): mask, gender, age.

    A prediction of the wrong class may still get the mask or the gender right; this says which
    attribute a model confuses.
    """
    truth, predicted = mask_attributes(np.asarray(y_true)), mask_attributes(np.asarray(y_pred))
    return {
        name: macro_f1(truth[name], predicted[name], len(values)) for name, values in MASK_ATTRIBUTES.items()
    }


def classification_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str] | tuple[str, ...],
    *,
    layout: str | None = None,
) -> dict[str, Any]:
    """Macro-F1, accuracy, per-class precision/recall/F1/support, confusion matrix and one-vs-rest AUC.

    ``per_class`` is keyed by class, each with its readable ``name`` (``training.layouts.class_names``
    of ``layout``). For the mask layout's 18 classes the report adds ``attribute_f1``: macro-F1 of
    mask, gender and age band (:func:`mask_attribute_f1`).
    """
    labels = np.arange(len(classes))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    names = class_names(classes, layout)
    report = {
        "macro_f1": macro_f1(y_true, y_pred, len(classes)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "auc_ovr": _auc_ovr(y_true, probs, labels),
        "per_class": {
            cls: {
                "name": names[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, cls in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if layout == "mask" and tuple(classes) == MASK_CLASSES:
        report["attribute_f1"] = mask_attribute_f1(y_true, y_pred)
    return report


def _auc_ovr(y_true: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Macro one-vs-rest AUC over the classes present; None when fewer than two are present."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if len(present) == 2 and len(labels) == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    scores = [roc_auc_score(y_true == c, probs[:, c]) for c in present]
    return float(np.mean(scores))
