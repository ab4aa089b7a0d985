from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from training.metrics import classification_report, macro_f1


def test_report_matches_sklearn_and_counts() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    probs = rng.dirichlet(np.ones(3), size=200)
    probs[np.arange(100), y[:100]] += 1.0  # half the rows confidently right
    probs /= probs.sum(axis=1, keepdims=True)
    report = classification_report(y, probs, ["a", "b", "c"])
    assert report["macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert report["accuracy"] == pytest.approx((probs.argmax(1) == y).mean())
    assert np.array(report["confusion_matrix"]).sum() == 200
    assert sum(c["support"] for c in report["per_class"].values()) == 200
    assert 0.5 < report["auc_ovr"] <= 1.0


def test_absent_class_counts_as_zero_f1_and_single_class_has_no_auc() -> None:
    y = np.array([0, 0, 1, 1])
    assert macro_f1(y, y, n_classes=3) == pytest.approx(2 / 3)
    probs = np.eye(3)[[0, 0, 0, 0]]
    assert classification_report(np.zeros(4, dtype=int), probs, ["a", "b", "c"])["auc_ovr"] is None
