"""Cross-validation folds (stratified, grouped whenever groups are known) and in-fold oversampling.

Grouping is what keeps validation honest: with a person's seven photos spread over train and
validation, the model is scored on faces it has already seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from training.config import ConfigError

__all__ = ["make_folds", "oversample"]

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
        raise ConfigError(
            f"cv.folds={n_folds}: a validation fold came out empty with these groups; lower cv.folds"
        )
    return folds


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


def _fewer(limit: int) -> str:
    return f"lower cv.folds to {limit}" if limit >= 2 else "k-fold needs at least 2 per class"
