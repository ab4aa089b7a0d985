"""Trial plots for optuna-dashboard: learning curves and confusion matrices, uploaded as Optuna artifacts.

Per finished fold: ``fold<k>_curves.png`` (train/val loss and val macro-F1 by epoch) and
``fold<k>_confusion.png`` (that fold's out-of-fold predictions at its best epoch). At trial end:
``curves.png`` with every fold, including a fold cut short by pruning, and, for a complete trial,
``confusion.png`` over all out-of-fold predictions. Files go to the study's artifact store and are
listed on the trial's page in `hpo dashboard`.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.artifacts import ArtifactMeta
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.trial import TrialState

from hpo.tracking._observers import TrialObserver
from hpo.tracking._plots import plot_confusion, plot_curves
from training.batches import load_data
from training.config import RunConfig
from training.folds import make_folds
from training.loop import EpochStats, FitResult

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

__all__ = ["ArtifactObserver", "plot_confusion", "plot_curves", "upload_png"]

log = logging.getLogger(__name__)


class ArtifactObserver(TrialObserver):
    """Uploads each trial's plots to ``store``; one instance per worker process, trials in sequence."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._reset(None)

    def _reset(self, config: RunConfig | None) -> None:
        self._config = config
        self._epochs: dict[int, list[EpochStats]] = {}  # fold -> epochs seen so far
        self._folds: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._oof: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # fold -> (true, predicted) labels

    def on_trial_start(self, trial: optuna.Trial, config: RunConfig) -> None:
        self._reset(config)

    def on_epoch(self, trial: optuna.Trial, fold: int, stats: EpochStats) -> None:
        history = self._epochs.setdefault(fold, [])
        del history[stats.epoch - 1 :]  # a resumed fold replays its saved epochs from epoch 1
        history.append(stats)

    def on_fold(self, trial: optuna.Trial, fold: int, result: FitResult) -> None:
        self._epochs[fold] = list(result.history)
        classes, y_val = self._validation_labels(fold)
        if len(y_val) != len(result.oof_probs):
            raise ValueError(
                f"fold {fold + 1} has {len(y_val)} validation images but {len(result.oof_probs)} predictions"
            )
        predicted = result.oof_probs.argmax(axis=1)
        self._oof[fold] = (y_val, predicted)
        where = f"trial {trial.number}, fold {fold + 1}"
        self._upload(trial, f"fold{fold + 1}_curves.png", plot_curves({fold: result.history}, title=where))
        f1 = f"best epoch {result.best_epoch}, macro-F1 {result.best_f1:.4f}"
        self._upload(
            trial,
            f"fold{fold + 1}_confusion.png",
            plot_confusion(y_val, predicted, classes, title=f"{where}: {f1}"),
        )

    def on_trial_end(
        self, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None
    ) -> None:
        epochs = {k: h for k, h in sorted(self._epochs.items()) if h}
        if epochs:
            title = f"trial {trial.number}: {state.name.lower()}"
            self._upload(trial, "curves.png", plot_curves(epochs, title=title))
        if state == TrialState.COMPLETE and self._oof and self._config is not None:
            classes = load_data(self._config.data).table.classes
            y_true = np.concatenate([t for t, _ in self._oof.values()])
            y_pred = np.concatenate([p for _, p in self._oof.values()])
            score = f"mean fold macro-F1 {value:.4f}" if value is not None else "complete"
            title = f"trial {trial.number}, out-of-fold: {score}"
            self._upload(trial, "confusion.png", plot_confusion(y_true, y_pred, classes, title=title))
        self._reset(None)

    def _validation_labels(self, fold: int) -> tuple[Sequence[str], np.ndarray]:
        """The fold's validation labels, from the same deterministic split the objective made."""
        if self._config is None:
            raise RuntimeError("on_fold before on_trial_start")
        data = load_data(self._config.data)
        labels = data.table.labels
        if self._folds is None:
            cv = self._config.cv
            self._folds = make_folds(labels, data.table.groups, cv.folds, cv.seed)
        return data.table.classes, labels[self._folds[fold][1]]

    def _upload(self, trial: optuna.Trial, filename: str, figure) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        buffer.seek(0)
        upload_png(self.store, trial, filename, buffer)
        log.debug("trial %d: uploaded %s", trial.number, filename)


def upload_png(store: ArtifactStore, trial: optuna.Trial, filename: str, body: io.BytesIO) -> str:
    """``optuna.artifacts.upload_artifact``, but the file is stored before the trial lists it.

    Optuna records the artifact in the trial first and writes the file second, so a dashboard
    polling meanwhile links a file that is not there yet (HTTP 500), and a failed write leaves that
    broken link for good. Same attr key and metadata, so Optuna and optuna-dashboard read it alike.
    """
    artifact_id = str(uuid.uuid4())
    store.write(artifact_id, body)
    meta = ArtifactMeta(artifact_id=artifact_id, filename=filename, mimetype="image/png", encoding=None)
    trial.storage.set_trial_system_attr(
        trial._trial_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(asdict(meta))
    )
    return artifact_id
