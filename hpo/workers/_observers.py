"""The observers a worker attaches to its objective, as the study's attrs configure them."""

from __future__ import annotations

import logging

import optuna

from hpo.study import artifact_location
from hpo.tracking import ArtifactObserver, ObserverGroup, TrialObserver, tracking_observer
from storage import StorageError, open_artifact_store

__all__ = ["observers_for"]

log = logging.getLogger(__name__)


def observers_for(study: optuna.Study) -> ObserverGroup:
    """The observers a worker attaches to its objective, as configured in the study's attrs."""
    observers: list[TrialObserver] = []
    observers += _artifact_observers(study)
    observers += tracking_observer(study)  # MLflow child runs, when the study is tracked
    return ObserverGroup(observers)


def _artifact_observers(study: optuna.Study) -> list[TrialObserver]:
    """Plots for the dashboard, into the artifact directory `hpo study create` recorded."""
    location = artifact_location(study)
    if location is None:
        return []
    try:
        return [ArtifactObserver(open_artifact_store(location))]
    except StorageError as exc:  # no plots is no reason to stop training
        log.warning("trial plots disabled: %s", exc)
        return []
