from __future__ import annotations

import math

import numpy as np
import pytest

from training.config import ConfigError
from training.folds import make_folds, oversample


def _grouped_data(n_groups: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mask-like data: 7 images per person, 5 wear + 1 incorrect + 1 not wear, 18 classes."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{g:04d}" for g in range(n_groups)], 7).astype(object)
    person = rng.integers(0, 6, size=n_groups)  # gender x age band, fixed per person
    wear = np.tile([0, 0, 0, 0, 0, 1, 2], n_groups)
    labels = (wear * 6 + np.repeat(person, 7)).astype(np.int64)
    return labels, groups


def _assert_partition(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> None:
    all_val = np.concatenate([va for _, va in folds])
    assert sorted(all_val.tolist()) == list(range(n))  # every image validated exactly once
    for tr, va in folds:
        assert tr.dtype == va.dtype == np.int64
        assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()  # sorted, no repeats
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == n


def test_group_folds_never_share_a_group() -> None:
    labels, groups = _grouped_data()
    folds = make_folds(labels, groups, 5, seed=0)
    assert len(folds) == 5
    _assert_partition(folds, len(labels))
    for tr, va in folds:
        assert set(groups[tr]).isdisjoint(groups[va])


def test_folds_are_deterministic_by_seed() -> None:
    labels, groups = _grouped_data()
    for g in (groups, None):
        a, b, c = (make_folds(labels, g, 4, seed=s) for s in (7, 7, 8))
        assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
        assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("grouped", [True, False])
def test_stratification_is_roughly_balanced(grouped: bool) -> None:
    labels, groups = _grouped_data(n_groups=200)
    folds = make_folds(labels, groups if grouped else None, 5, seed=1)
    _assert_partition(folds, len(labels))
    overall = np.bincount(labels, minlength=18) / len(labels)
    for _, va in folds:
        share = np.bincount(labels[va], minlength=18) / len(va)
        assert np.abs(share - overall).max() < (0.03 if grouped else 0.005)
        assert abs(len(va) - len(labels) / 5) <= (0.1 * len(labels) / 5 if grouped else 1)


def test_ungrouped_folds_on_plain_labels() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    folds = make_folds(labels, None, 3, seed=0)
    _assert_partition(folds, 60)
    for _, va in folds:
        assert np.bincount(labels[va]).tolist() in ([3, 7, 10], [4, 6, 10], [3, 6, 10], [4, 7, 10])


def test_too_small_class_names_it_and_suggests_fewer_folds() -> None:
    labels = np.array([0] * 10 + [1] * 10 + [2] * 3)
    with pytest.raises(ConfigError) as excinfo:
        make_folds(labels, None, 5, seed=0, classes=("cat", "dog", "newt"))
    message = str(excinfo.value)
    assert "'newt'" in message and "3 image(s)" in message and "lower cv.folds to 3" in message
    with pytest.raises(ConfigError, match="class 2 has 3"):
        make_folds(labels, None, 5, seed=0)
    with pytest.raises(ConfigError, match="k-fold needs at least 2 per class"):
        make_folds(np.array([0, 0, 0, 1]), None, 2, seed=0)


def test_class_in_too_few_groups() -> None:
    labels = np.array([0] * 12 + [1] * 6)
    groups = np.array([f"g{i % 6}" for i in range(12)] + ["h1"] * 3 + ["h2"] * 3, dtype=object)
    with pytest.raises(ConfigError) as excinfo:
        make_folds(labels, groups, 3, seed=0, classes=("ok", "rare"))
    message = str(excinfo.value)
    assert "'rare' appears in only 2 group(s)" in message and "lower cv.folds to 2" in message
    assert len(make_folds(labels, groups, 2, seed=0)) == 2


def test_too_few_groups_overall() -> None:
    labels = np.array([0, 1] * 6)
    groups = np.array(["a", "a", "b", "b"] * 3, dtype=object)
    with pytest.raises(ConfigError, match="only 2 groups"):
        make_folds(labels, groups, 3, seed=0)


def test_one_fold_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least 2 folds"):
        make_folds(np.array([0, 1, 0, 1]), None, 1, seed=0)


# ---------------------------------------------------------------------------------------------
# Oversampling
# ---------------------------------------------------------------------------------------------


def test_oversample_stays_inside_training_fold_and_lifts_rare_classes() -> None:
    labels = np.repeat(np.arange(4), [200, 60, 12, 90])
    folds = make_folds(labels, None, 3, seed=0)
    for tr, va in folds:
        out = oversample(tr, labels, seed=0, ratio=0.5)
        assert np.isin(out, tr).all() and not np.isin(out, va).any()
        assert np.isin(tr, out).all()  # nothing dropped
        before = np.bincount(labels[tr], minlength=4)
        after = np.bincount(labels[out], minlength=4)
        target = math.ceil(0.5 * before.max())
        for c in range(4):
            assert after[c] == max(before[c], target)
        assert (np.diff(out) >= 0).all()


def test_oversample_is_seeded_and_ratio_checked() -> None:
    labels = np.repeat(np.arange(3), [50, 5, 20])
    train = np.arange(len(labels))[::2]
    a = oversample(train, labels, seed=3)
    assert np.array_equal(a, oversample(train, labels, seed=3))
    assert not np.array_equal(a, oversample(train, labels, seed=4))
    assert np.array_equal(oversample(train, labels, seed=3, ratio=0.0), train)
    full = oversample(train, labels, seed=3, ratio=1.0)
    assert len(set(np.bincount(labels[full]).tolist())) == 1
    with pytest.raises(ConfigError, match="between 0 and 1"):
        oversample(train, labels, seed=0, ratio=1.5)
