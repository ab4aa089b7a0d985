"""Tracking: side channels that watch trials without steering them.

- MLflow: one parent run per study, one child run per trial (:class:`MlflowObserver`), the
  tracking URI rules and a client that fails fast (:func:`client`, :func:`check_reachable`);
- the study's run ends when its budget is met (:func:`finish_study_run`);
- trial figures: each trial's learning curves and confusion matrices, rendered once
  (:class:`TrialFigures`) for the dashboard's artifact store (:class:`ArtifactSink`) and the trial's
  MLflow run (:class:`MlflowObserver` is a sink too);
- the observer hooks the objective calls (:class:`TrialObserver`), each failure isolated.

The names load on first use: `hpo study create` and the worker pool process, which need only the
MLflow helpers, do not pay for torch, timm and albumentations (the figures need the training data).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # public name -> the private module that defines it
    "ArtifactSink": "hpo.tracking._artifacts",
    "PngSink": "hpo.tracking._artifacts",
    "TrialFigures": "hpo.tracking._artifacts",
    "upload_png": "hpo.tracking._artifacts",
    "DEFAULT_TRACKING_DB": "hpo.tracking._mlflow",
    "StudyTracking": "hpo.tracking._mlflow",
    "check_reachable": "hpo.tracking._mlflow",
    "client": "hpo.tracking._mlflow",
    "enable_tracking": "hpo.tracking._mlflow",
    "experiment_id_for": "hpo.tracking._mlflow",
    "flat_params": "hpo.tracking._mlflow",
    "mlflow_uris": "hpo.mlflow_compat",
    "requested_tracking_uri": "hpo.tracking._mlflow",
    "resolve_tracking_uri": "hpo.tracking._mlflow",
    "server_problem": "hpo.tracking._mlflow",
    "study_tracking": "hpo.tracking._mlflow",
    "BUDGET_MET": "hpo.tracking._mlflow_observer",
    "MlflowObserver": "hpo.tracking._mlflow_observer",
    "finish_study_run": "hpo.tracking._mlflow_observer",
    "tracking_observer": "hpo.tracking._mlflow_observer",
    "ObserverGroup": "hpo.tracking._observers",
    "TrialObserver": "hpo.tracking._observers",
    "plot_confusion": "hpo.tracking._plots",
    "plot_curves": "hpo.tracking._plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hpo.tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
