"""Trial figures: learning curves and confusion matrices, rendered once per trial and stored where users
look - the dashboard's artifact store, the trial's MLflow run, or both.

Per finished fold: ``fold<k>_curves.png`` (train/val loss and val macro-F1 by epoch) and
``fold<k>_confusion.png`` (that fold's out-of-fold predictions at its best epoch). At trial end:
``curves.png`` with every fold, including a fold cut short by pruning, and, for a complete trial,
``confusion.png`` over all out-of-fold predictions. Classes carry their readable names (mask layout:
"4 wear/female/30-59"). :class:`TrialFigures` renders each figure once and hands the PNG to every
sink: :class:`ArtifactSink` lists it on the trial's page in `hpo dashboard`, ``MlflowObserver``
logs it to the trial's run.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

import numpy as np
import optuna
from optuna.artifacts import ArtifactMeta
from optuna.trial import TrialState

from hpo.optuna_compat import ARTIFACTS_ATTR_PREFIX, ArtifactStore, trial_id
from hpo.tracking._observers import TrialObserver
from hpo.tracking._plots import plot_confusion, plot_curves
from training.batches import load_data
from training.config import RunConfig
from training.cv import Fold, FoldResult
from training.data import ImageTable
from training.loop import EpochStats

__all__ = ["ArtifactSink", "PngSink", "TrialFigures", "upload_png"]

log = logging.getLogger(__name__)


class PngSink(Protocol):
    """Where a trial's figures go; a sink that fails is logged and skipped, the others still get them."""

    def put_png(self, trial: optuna.Trial, filename: str, png: bytes) -> None: ...


class ArtifactSink:
    """The study's Optuna artifact store: the figures appear on the trial's page in `hpo dashboard`."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def put_png(self, trial: optuna.Trial, filename: str, png: bytes) -> None:
        upload_png(self.store, trial, filename, io.BytesIO(png))


class TrialFigures(TrialObserver):
    """Renders each trial's figures once and hands them to ``sinks``; one per worker process, trials
    in sequence. Put it before an observer that ends the trial's MLflow run, so the last figures
    reach the run before it ends."""

    def __init__(self, sinks: Sequence[PngSink]) -> None:
        self.sinks = list(sinks)
        self._reset(None)

    def _reset(self, table: ImageTable | None) -> None:
        self._table = table  # labels and class names of the trial's data
        self._epochs: dict[int, list[EpochStats]] = {}  # fold index -> epochs seen so far
        self._oof: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # fold index -> (true, predicted) labels

    def on_trial_start(self, trial: optuna.Trial, config: RunConfig) -> None:
        self._reset(load_data(config.data).table)  # opened already by the objective: no work

    def on_epoch(self, trial: optuna.Trial, fold: Fold, stats: EpochStats) -> None:
        history = self._epochs.setdefault(fold.index, [])
        del history[stats.epoch - 1 :]  # a resumed fold replays its saved epochs from epoch 1
        history.append(stats)

    def on_fold(self, trial: optuna.Trial, result: FoldResult) -> None:
        if self._table is None:
            raise RuntimeError("on_fold before on_trial_start")
        fold, fit = result.fold, result.fit
        self._epochs[fold.index] = list(fit.history)
        self._oof[fold.index] = (self._table.labels[fold.val_idx], fit.oof_probs.argmax(axis=1))
        # Curves per fold show a running trial's progress; one out-of-fold confusion matrix at the end
        # says what k per-fold ones would (which cost twice a curve each).
        best = f"best epoch {fit.best_epoch}, macro-F1 {fit.best_f1:.4f}"
        where = f"trial {trial.number}, fold {fold.number}: {best}"
        self._publish(
            trial, f"fold{fold.number}_curves.png", plot_curves({fold.index: fit.history}, title=where)
        )

    def on_trial_end(
        self, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None
    ) -> None:
        epochs = {k: h for k, h in sorted(self._epochs.items()) if h}
        if epochs:
            title = f"trial {trial.number}: {state.name.lower()}"
            self._publish(trial, "curves.png", plot_curves(epochs, title=title))
        if state == TrialState.COMPLETE and self._oof and self._table is not None:
            y_true = np.concatenate([t for t, _ in self._oof.values()])
            y_pred = np.concatenate([p for _, p in self._oof.values()])
            score = f"mean fold macro-F1 {value:.4f}" if value is not None else "complete"
            title = f"trial {trial.number}, out-of-fold: {score}"
            self._publish(
                trial, "confusion.png", plot_confusion(y_true, y_pred, self._table.class_names, title=title)
            )
        self._reset(None)

    def _publish(self, trial: optuna.Trial, filename: str, figure) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        png = buffer.getvalue()
        for sink in self.sinks:
            try:
                sink.put_png(trial, filename, png)
            except Exception as exc:  # a lost plot is no reason to lose the trial, or the other sinks
                name = type(sink).__name__
                log.warning("%s: %s of trial %d not stored (ignored): %s", name, filename, trial.number, exc)
        log.debug("trial %d: %s to %d sink(s)", trial.number, filename, len(self.sinks))


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
        trial_id(trial), ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(asdict(meta))
    )
    return artifact_id
