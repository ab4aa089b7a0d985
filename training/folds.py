"""Cross-validation folds (stratified, grouped whenever groups are known) and in-fold oversampling.

Grouping is what keeps validation honest: with a person's seven photos spread over train and
validation, the model is scored on faces it has already seen.

:func:`check_folds` tells, with numpy alone, whether :func:`make_folds` would refuse the data: checks
before a study starts need no scikit-learn import (about 2 s), which the trial processes pay anyway.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from training.config import ConfigError

__all__ = ["check_folds", "make_folds", "oversample"]

logger = logging.getLogger(__name__)


def make_folds(
    labels: np.ndarray,
    groups: np.ndarray | None,
    n_folds: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` (train, val) pairs of sorted int64 indices; the same seed gives the same folds.

    With ``groups`` no group is ever on both sides of a split. ``classes`` only names classes in
    error messages.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if n_folds < 2:
        raise ConfigError(f"cv.folds is {n_folds}; use at least 2 folds")
    _check_enough(labels, groups, n_folds, classes)
    x = np.zeros(len(labels))
    if groups is None:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, labels)
    else:
        splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, labels, groups)
    folds = [(np.sort(tr).astype(np.int64), np.sort(va).astype(np.int64)) for tr, va in splits]
    if any(len(va) == 0 for _, va in folds):  # StratifiedGroupKFold's greedy fill can leave one empty
        raise _empty_fold(n_folds)
    return folds


def check_folds(
    labels: np.ndarray,
    groups: np.ndarray | None,
    n_folds: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> None:
    """Raise the ConfigError :func:`make_folds` would raise for these arguments, without scikit-learn.

    Without groups, enough images per class give every fold one of each class. With groups, whether a
    validation fold stays empty depends on StratifiedGroupKFold's greedy fill, which
    :func:`group_fold_sizes` replays on class counts.
    """
    labels = np.asarray(labels)
    if n_folds < 2:
        raise ConfigError(f"cv.folds is {n_folds}; use at least 2 folds")
    _check_enough(labels, groups, n_folds, classes)
    if groups is not None and (group_fold_sizes(labels, groups, n_folds, seed) == 0).any():
        raise _empty_fold(n_folds)


def group_fold_sizes(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Images per validation fold of ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``.

    The same arithmetic in the same order as scikit-learn's ``_iter_test_indices`` and
    ``_find_best_fold`` (1.x), so float ties between folds break the same way; tests compare the two.
    Each group goes, in order of falling spread of its class counts (ties in shuffled order), to the
    fold whose per-class shares it leaves most even, the fold with fewer images on a tie.
    """
    _, y_inv, y_cnt = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    _, groups_inv = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(groups_inv.max()) + 1
    counts = np.zeros((n_groups, len(y_cnt)))
    np.add.at(counts, (groups_inv, y_inv), 1)
    perm = np.arange(n_groups)
    np.random.RandomState(seed).shuffle(perm)
    counts = counts[perm]
    per_fold = np.zeros((n_folds, len(y_cnt)))
    for group in np.argsort(-np.std(counts, axis=1), kind="stable"):
        best, min_eval, min_samples = 0, np.inf, np.inf
        for i in range(n_folds):
            per_fold[i] += counts[group]
            fold_eval = np.mean(np.std(per_fold / y_cnt.reshape(1, -1), axis=0))
            per_fold[i] -= counts[group]
            samples = np.sum(per_fold[i])
            if fold_eval < min_eval or (np.isclose(fold_eval, min_eval) and samples < min_samples):
                best, min_eval, min_samples = i, fold_eval, samples
        per_fold[best] += counts[group]
    return per_fold.sum(axis=1).astype(np.int64)


def oversample(train_idx: np.ndarray, labels: np.ndarray, *, seed: int, ratio: float = 0.5) -> np.ndarray:
    """``train_idx`` plus seeded repeats of rare classes, each raised to ``ratio`` x the largest.

    Only members of ``train_idx`` are repeated, so validation images can never leak into training.
    Returned sorted; the training loader shuffles.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"oversample ratio is {ratio}; use a value between 0 and 1")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    train_labels = np.asarray(labels)[train_idx]
    present, counts = np.unique(train_labels, return_counts=True)
    if len(counts) == 0:
        return train_idx
    target = math.ceil(ratio * counts.max())
    rng = np.random.default_rng(seed)
    extra = [
        rng.choice(train_idx[train_labels == c], size=target - n, replace=True)
        for c, n in zip(present, counts, strict=True)
        if n < target
    ]
    return np.sort(np.concatenate([train_idx, *extra]))


def _check_enough(
    labels: np.ndarray, groups: np.ndarray | None, n_folds: int, classes: Sequence[str] | None
) -> None:
    """Every class needs an image (with groups: a group) in every validation fold."""

    def name(c: int) -> str:
        return f"'{classes[c]}'" if classes is not None else str(c)

    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise ConfigError(
                f"cv.folds={n_folds} but the data has only {n_groups} groups; {_fewer(n_groups)}"
            )
    for c in np.unique(labels):
        members = labels == c
        count = int(members.sum())
        if count < n_folds:
            raise ConfigError(
                f"class {name(c)} has {count} image(s) but cv.folds={n_folds}; {_fewer(count)} "
                "or add images of that class"
            )
        if groups is not None:
            n_groups = len(np.unique(groups[members]))
            if n_groups < n_folds:
                raise ConfigError(
                    f"class {name(c)} appears in only {n_groups} group(s) but cv.folds={n_folds}; "
                    f"{_fewer(n_groups)} or add images of that class from other groups"
                )


def _empty_fold(n_folds: int) -> ConfigError:
    return ConfigError(
        f"cv.folds={n_folds}: a validation fold came out empty with these groups; lower cv.folds"
    )


def _fewer(limit: int) -> str:
    return f"lower cv.folds to {limit}" if limit >= 2 else "k-fold needs at least 2 per class"
