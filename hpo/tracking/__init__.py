"""Tracking: side channels that watch trials without steering them.

- MLflow: one parent run per study, one child run per trial (:class:`MlflowObserver`), the
  tracking URI rules and a client that fails fast (:func:`client`, :func:`check_reachable`);
- the study's run ends when its budget is met (:func:`finish_study_run`);
- trial figures: each trial's learning curves and confusion matrices, rendered once
  (:class:`TrialFigures`) for the dashboard's artifact store (:class:`ArtifactSink`) and the trial's
  MLflow run (:class:`MlflowObserver` is a sink too);
- the observer hooks the objective calls (:class:`TrialObserver`), each failure isolated.
"""

from hpo.tracking._artifacts import ArtifactSink, PngSink, TrialFigures, upload_png
from hpo.tracking._mlflow import (
    DEFAULT_TRACKING_DB,
    StudyTracking,
    check_reachable,
    client,
    enable_tracking,
    experiment_id_for,
    flat_params,
    mlflow_uris,
    requested_tracking_uri,
    resolve_tracking_uri,
    server_problem,
    study_tracking,
)
from hpo.tracking._mlflow_observer import BUDGET_MET, MlflowObserver, finish_study_run, tracking_observer
from hpo.tracking._observers import ObserverGroup, TrialObserver
from hpo.tracking._plots import plot_confusion, plot_curves

__all__ = [
    "BUDGET_MET",
    "DEFAULT_TRACKING_DB",
    "ArtifactSink",
    "MlflowObserver",
    "ObserverGroup",
    "PngSink",
    "StudyTracking",
    "TrialFigures",
    "TrialObserver",
    "check_reachable",
    "client",
    "enable_tracking",
    "experiment_id_for",
    "finish_study_run",
    "flat_params",
    "mlflow_uris",
    "plot_confusion",
    "plot_curves",
    "requested_tracking_uri",
    "resolve_tracking_uri",
    "server_problem",
    "study_tracking",
    "tracking_observer",
    "upload_png",
]
