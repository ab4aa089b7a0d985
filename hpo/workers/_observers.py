"""The observers a worker attaches to its objective, as the study's attrs configure them."""

from __future__ import annotations

import logging

import optuna

from hpo.study import artifact_location
from hpo.tracking import ArtifactSink, ObserverGroup, PngSink, TrialFigures, TrialObserver, tracking_observer
from storage import StorageError, open_artifact_store

__all__ = ["observers_for"]

log = logging.getLogger(__name__)


def observers_for(study: optuna.Study) -> ObserverGroup:
    """The observers a worker attaches to its objective, as configured in the study's attrs."""
    mlflow = tracking_observer(study)  # MLflow child runs, when the study is tracked
    sinks: list[PngSink] = [*_artifact_sinks(study), *mlflow]
    # Figures first: each is rendered once for every sink, and reaches the run before the run ends.
    figures: list[TrialObserver] = [TrialFigures(sinks)] if sinks else []
    return ObserverGroup([*figures, *mlflow])


def _artifact_sinks(study: optuna.Study) -> list[PngSink]:
    """Plots for the dashboard, into the artifact directory `hpo study create` recorded."""
    location = artifact_location(study)
    if location is None:
        return []
    try:
        return [ArtifactSink(open_artifact_store(location))]
    except StorageError as exc:  # no plots is no reason to stop training
        log.warning("trial plots for the dashboard disabled: %s", exc)
        return []
