"""One MLflow child run per trial under the study's parent run; the parent's state follows the budget."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from hpo.errors import UserError, short_error
from hpo.records import COST_KEYS, study_record, trial_record, unbudgeted
from hpo.study import is_feasible
from hpo.tracking._metric_names import (
    BEST_CV_F1,
    BEST_EPOCH,
    BEST_F1,
    CV_F1,
    F1_STD,
    FINISHED_TRIALS,
    epoch_metrics,
    fold_key,
    key,
)
from hpo.tracking._mlflow import StudyTracking, flat_params, study_tracking
from hpo.tracking._observers import TrialObserver
from storage import redact
from training.config import RunConfig

if TYPE_CHECKING:  # torch and timm: only trial processes load them, and they have by now
    from training.cv import Fold, FoldResult
    from training.loop import EpochStats

__all__ = ["BUDGET_MET", "MlflowObserver", "finish_study_run", "tracking_observer"]

log = logging.getLogger(__name__)

_STATUS = {  # Optuna trial state -> MLflow run status
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "FINISHED",  # pruning is a normal end; the foldtune.state tag says pruned
    TrialState.FAIL: "FAILED",
}
BUDGET_MET = "budget met"  # the study run's foldtune.state once its budget of finished trials is met


def tracking_observer(study: optuna.Study) -> list[MlflowObserver]:
    """The MLflow observer for a worker when the study is tracked, else nothing."""
    tracking = study_tracking(study)
    if tracking is None:
        return []
    # Workers must not stall a trial for minutes while MLflow retries a dead server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        observer = MlflowObserver(tracking, tracking.uri())
    except UserError as exc:
        log.warning("MLflow tracking disabled for this worker: %s", exc)
        return []
    observer.reopen_study_run()
    return [observer]


def finish_study_run(study: optuna.Study, *, budget: int | None) -> bool:
    """End the study's MLflow run once ``budget`` finished (complete + pruned) trials are in: status
    FINISHED, ``foldtune.state`` "budget met", ``best_cv_f1`` and ``finished_trials`` logged.

    Called by every worker that meets the budget: a run already ended this way is left alone. Does
    nothing for an untracked study, no budget (a timeout is not the study's end) or a budget not met.
    MLflow errors are a warning, never an exception. Returns whether the run is ended now.
    """
    tracking = study_tracking(study)
    if tracking is None or budget is None:
        return False
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    counted = len(finished) - unbudgeted(study_record(study))
    if counted < budget:
        return False
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking.uri())
        run_id = tracking.parent_run_id
        run = client.get_run(run_id)
        if run.info.status == "FINISHED" and run.data.tags.get("foldtune.state") == BUDGET_MET:
            return True
        complete = [
            t.value
            for t in finished
            if t.state == TrialState.COMPLETE and t.value is not None and is_feasible(t)  # within the limits
        ]
        if complete:
            client.log_metric(run_id, BEST_CV_F1, max(complete))
        client.log_metric(run_id, FINISHED_TRIALS, counted)
        client.set_tag(run_id, "foldtune.state", BUDGET_MET)
        client.set_tag(run_id, "foldtune.reason", f"{len(finished)} of a budget of {budget} trials finished")
        client.set_terminated(run_id, status="FINISHED")
    except Exception as exc:
        log.warning("MLflow: the study's run was not ended (ignored): %s", short_error(exc))
        return False
    log.info("MLflow: study run %s ended: budget of %d trials met", tracking.parent_run_id, budget)
    return True


class MlflowObserver(TrialObserver):
    """One child run per trial under the study's parent run: params, per-epoch metrics, state, config.

    Metrics (``hpo.tracking._metric_names``), each logged once: ``fold<k>/<name>`` (k from 1) at
    step = epoch (train_loss, val_loss, f1, accuracy, lr, epoch_seconds, images_per_sec),
    ``fold<k>/best_f1`` and ``fold<k>/best_epoch`` per fold, and ``cv_f1`` (the trial's value) and
    ``f1_std`` at the end. Figures (``fold<k>_curves.png``, ``curves.png`` and, for
    a complete trial, the out-of-fold ``confusion.png``) arrive through :meth:`put_png` from
    ``TrialFigures``. After an MLflow error the trial's run is left alone, so a dead server costs one
    timeout per trial, not one per epoch.
    """

    def __init__(self, tracking: StudyTracking, uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking = tracking
        self.client = MlflowClient(tracking_uri=uri)
        self.runs: dict[int, str] = {}  # trial number -> run id

    def reopen_study_run(self) -> None:
        """A worker starting on a study whose run ended (budget met, then raised) marks it running
        again, so MLflow never shows a finished study with trials still coming in."""
        run_id = self.tracking.parent_run_id
        try:
            run = self.client.get_run(run_id)
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
                self.client.set_tag(run_id, "foldtune.state", "running")
        except Exception as exc:
            log.warning("MLflow: the study's run state was not updated (ignored): %s", short_error(exc))

    def put_png(self, trial: optuna.Trial, filename: str, png: bytes) -> None:
        """A trial figure (``TrialFigures`` renders it) as an artifact of the trial's run."""

        def log_png(run_id: str) -> None:
            with tempfile.TemporaryDirectory(prefix="hpo-figure-") as tmp:
                path = Path(tmp) / filename
                path.write_bytes(png)
                self.client.log_artifact(run_id, str(path))

        self._guard(trial, f"logging {filename}", log_png)

    def _guard(self, trial: optuna.Trial, what: str, fn, *args: Any) -> None:
        run_id = self.runs.get(trial.number)
        if run_id is None:
            return
        try:
            fn(run_id, *args)
        except Exception as exc:
            self.runs.pop(trial.number, None)
            log.warning(
                "MLflow: %s of trial %d failed; no more tracking for it: %s",
                what,
                trial.number,
                short_error(exc),
            )

    def on_trial_start(self, trial: optuna.Trial, config: RunConfig) -> None:
        from mlflow.entities import Param

        attrs = trial_record(trial)
        tags = {
            "mlflow.parentRunId": self.tracking.parent_run_id,
            "foldtune.study": trial.study.study_name,
            "foldtune.trial": str(trial.number),
            "foldtune.storage": self.tracking.storage,
            "foldtune.host": str(attrs.get("host", "")),
            "foldtune.device": str(attrs.get("device", "")),
            "foldtune.state": "running",
        }
        try:
            run = self.client.create_run(
                self.tracking.experiment_id, run_name=f"trial-{trial.number}", tags=tags
            )
        except Exception as exc:
            log.warning("MLflow: no run for trial %d: %s", trial.number, short_error(exc))
            return
        self.runs[trial.number] = run.info.run_id
        params = [Param(k, v) for k, v in flat_params(config).items()]

        def log_start(run_id: str) -> None:
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=params[i : i + 100])
            self.client.log_dict(run_id, config.to_dict(), "config.json")

        self._guard(trial, "logging params", log_start)

    def on_epoch(self, trial: optuna.Trial, fold: Fold, stats: EpochStats) -> None:
        from mlflow.entities import Metric

        def log_epoch(run_id: str) -> None:
            now = _now_ms()
            values = epoch_metrics(fold_key(fold.number), stats)
            metrics = [Metric(k, v, now, stats.epoch) for k, v in values.items()]
            self.client.log_batch(run_id, metrics=metrics)

        self._guard(trial, "logging an epoch", log_epoch)

    def on_fold(self, trial: optuna.Trial, result: FoldResult) -> None:
        from mlflow.entities import Metric

        def log_fold(run_id: str) -> None:
            now, number, fit = _now_ms(), result.fold.number, result.fit
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(key(fold_key(number), BEST_F1), fit.best_f1, now, 0),
                    Metric(key(fold_key(number), BEST_EPOCH), float(fit.best_epoch), now, 0),
                ],
            )

        self._guard(trial, "logging a fold", log_fold)

    def on_trial_end(
        self, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None
    ) -> None:
        def log_end(run_id: str) -> None:
            if value is not None:
                self.client.log_metric(run_id, CV_F1, value)
            record = trial_record(trial)
            std = record.get("f1_std")
            if std is not None:
                self.client.log_metric(run_id, F1_STD, float(std))
            for metric in COST_KEYS:  # what the trial's model costs to serve
                if (figure := record.get(metric)) is not None:
                    self.client.log_metric(run_id, metric, float(figure))
            if device := record.get("cost_device"):
                self.client.set_tag(run_id, "foldtune.cost_device", device)
            self.client.set_tag(run_id, "foldtune.state", state.name.lower())
            if reason:
                self.client.set_tag(run_id, "foldtune.reason", redact(reason)[:5000])
            self.client.set_terminated(run_id, status=_STATUS.get(state, "FAILED"))

        self._guard(trial, "ending the run", log_end)
        self.runs.pop(trial.number, None)


def _now_ms() -> int:
    return int(time.time() * 1000)
