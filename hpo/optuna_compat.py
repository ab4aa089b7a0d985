"""The Optuna internals foldtune relies on, in one place: an Optuna upgrade that moves one touches here.

Each is used because Optuna offers no public way to do the same thing:

- a running trial's storage id (``Trial._trial_id``): system attrs, heartbeats and retries are keyed by it,
  and Optuna 5 trials hide their system attrs, so the stored ``FrozenTrial`` is read back;
- a study's storage and id (``Study._storage``, ``Study._study_id``): reloading a study on the same
  connection, and counting its trials by state in one read;
- the artifact attr prefix and store protocol of ``optuna.artifacts``: an artifact must be written
  before the trial lists it (see ``hpo.tracking.upload_png``).
"""

from __future__ import annotations

import optuna
from optuna.artifacts._protocol import ArtifactStore
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

__all__ = ["ARTIFACTS_ATTR_PREFIX", "ArtifactStore", "stored_trial", "study_id", "study_storage", "trial_id"]


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a running trial (unique across studies, unlike ``trial.number``)."""
    return trial._trial_id


def stored_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial as its storage holds it, system attrs included."""
    return trial.storage.get_trial(trial._trial_id)


def study_storage(study: optuna.Study) -> BaseStorage:
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id
