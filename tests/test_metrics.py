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


def test_mask_attribute_f1_scores_each_attribute_apart() -> None:
    from training.metrics import mask_attribute_f1

    # every class once; predictions keep mask and gender but move each age band one up
    y_true = np.arange(18)
    y_pred = y_true - y_true % 3 + (y_true % 3 + 1) % 3
    scores = mask_attribute_f1(y_true, y_pred)
    assert scores == {"mask": 1.0, "gender": 1.0, "age": 0.0}
    # the mask confused on half the images: that attribute alone drops, by sklearn's count
    wrong_mask = np.where(y_true < 9, (y_true + 6) % 18, y_true)
    scores = mask_attribute_f1(y_true, wrong_mask)
    assert scores["gender"] == scores["age"] == 1.0
    expected = f1_score(y_true // 6, wrong_mask // 6, average="macro", labels=[0, 1, 2], zero_division=0)
    assert scores["mask"] == pytest.approx(expected) and scores["mask"] < 1.0


def test_mask_classes_get_readable_names_and_other_layouts_keep_theirs() -> None:
    from training.layouts import MASK_CLASSES, class_names

    names = class_names(MASK_CLASSES, "mask")
    assert names[0] == "0 wear/male/<30" and names[4] == "4 wear/female/30-59"
    assert names[8] == "8 incorrect/male/>=60" and names[17] == "17 not wear/female/>=60"
    assert class_names(MASK_CLASSES, "csv") == MASK_CLASSES  # 0..17 in a manifest mean anything
    assert class_names(("cat", "dog"), "mask") == ("cat", "dog")
    y = np.arange(18)
    report = classification_report(y, np.eye(18)[y], MASK_CLASSES, layout="mask")
    assert report["per_class"]["4"]["name"] == "4 wear/female/30-59"
    assert report["attribute_f1"] == {"mask": 1.0, "gender": 1.0, "age": 1.0}
    assert "attribute_f1" not in classification_report(y, np.eye(18)[y], MASK_CLASSES, layout="csv")
