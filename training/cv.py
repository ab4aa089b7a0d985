"""Cross-validation: ``fit`` on each fold of a run's split, one result per fold as soon as it finishes.

The split comes from the run config alone (``cv.folds``, ``cv.seed``, the data's labels and groups),
so every caller — the HPO objective, retraining, the dashboard plots — sees the same folds.

    >>> for result in cross_validate(config, on_epoch=lambda fold, stats: print(fold.number, stats.f1)):
    ...     print(f"fold {result.fold.number}/{result.fold.count}: {result.fit.best_f1:.3f}")
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.batches import LoadedData, load_data
from training.config import RunConfig
from training.folds import make_folds
from training.loop import EpochStats, FitResult, fit

__all__ = ["Fold", "FoldResult", "cross_validate", "out_of_fold", "split"]


@dataclass(frozen=True, eq=False)
class Fold:
    index: int  # 0-based position in the split
    count: int  # folds in the split
    train_idx: np.ndarray  # sorted int64 indices into the data's table
    val_idx: np.ndarray

    @property
    def number(self) -> int:
        """1-based, as users read it (logs, metric and file names)."""
        return self.index + 1


@dataclass(frozen=True, eq=False)
class FoldResult:
    fold: Fold
    fit: FitResult


OnFoldEpoch = Callable[[Fold, EpochStats], bool | None]


def split(config: RunConfig, data: LoadedData) -> list[Fold]:
    """The run's folds: stratified, and grouped whenever the data has groups."""
    table = data.table
    pairs = make_folds(table.labels, table.groups, config.cv.folds, config.cv.seed, classes=table.classes)
    return [Fold(k, len(pairs), train, val) for k, (train, val) in enumerate(pairs)]


def cross_validate(
    config: RunConfig,
    *,
    data: LoadedData | None = None,
    on_epoch: OnFoldEpoch | None = None,
    checkpoint_dir: str | Path | None = None,
) -> Iterator[FoldResult]:
    """Train every fold in turn; ``on_epoch(fold, stats)`` is ``fit``'s hook with the fold added.

    With ``checkpoint_dir``, fold k keeps its checkpoints in ``checkpoint_dir/fold-<k>`` (1-based),
    so an interrupted run resumes each fold where it stopped.
    """
    data = data or load_data(config.data)
    for fold in split(config, data):
        yield FoldResult(
            fold,
            fit(
                config,
                fold.train_idx,
                fold.val_idx,
                on_epoch=functools.partial(on_epoch, fold) if on_epoch is not None else None,
                checkpoint_dir=Path(checkpoint_dir) / f"fold-{fold.number}" if checkpoint_dir else None,
                data=data,
            ),
        )


def out_of_fold(results: Sequence[FoldResult], n_images: int, n_classes: int) -> np.ndarray:
    """(n_images, n_classes) validation probabilities at each fold's best epoch; zeros where no fold ran."""
    probs = np.zeros((n_images, n_classes), dtype=np.float32)
    for result in results:
        probs[result.fold.val_idx] = result.fit.oof_probs
    return probs
