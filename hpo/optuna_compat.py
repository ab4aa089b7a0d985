"""The Optuna internals foldtune relies on, in one place: an Optuna upgrade that moves one touches here.

Each is used because Optuna offers no public way to do the same thing:

- a running trial's storage id (``Trial._trial_id``): system attrs, heartbeats and retries are keyed by it,
  and Optuna 5 trials hide their system attrs, so the stored ``FrozenTrial`` is read back;
- a study's storage and id (``Study._storage``, ``Study._study_id``): reloading a study on the same
  connection, and counting its trials by state in one read;
- the artifact attr prefix and store protocol of ``optuna.artifacts``: an artifact must be written
  before the trial lists it (see ``hpo.tracking.upload_png``);
- the name of the private module whose logger reports a failed trial (``OPTIMIZE_LOGGER``): the
  worker filters those lines, as its objective logs each failure its own way;
- the RDB storage's table models, to count trials and read durations or the last ended trials
  without loading every trial (Optuna's own ``get_n_trials`` loads them all), and to fill the large
  studies the benchmarks measure (``add_trials`` writes one transaction per trial and recounts the
  earlier ones each time: over a minute for 10,000).
"""

from __future__ import annotations

import datetime as dt
import json

import optuna
from optuna.artifacts._protocol import ArtifactStore
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ARTIFACTS_ATTR_PREFIX",
    "OPTIMIZE_LOGGER",
    "ArtifactStore",
    "bulk_add_trials",
    "finished_seconds",
    "origin_counts",
    "recent_ended",
    "stored_trial",
    "study_id",
    "study_storage",
    "trial_counts",
    "trial_id",
]

OPTIMIZE_LOGGER = "optuna.study._optimize"  # logs "Trial N failed with ..." and its traceback


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a running trial (unique across studies, unlike ``trial.number``)."""
    return trial._trial_id


def stored_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial as its storage holds it, system attrs included."""
    return trial.storage.get_trial(trial._trial_id)


def study_storage(study: optuna.Study, *, cached: bool = True) -> BaseStorage:
    """The study's storage. A Study wraps RDB storages in Optuna's trial cache, whose ``get_all_trials``
    reads every trial of the study into it whatever states are asked for: ``cached=False`` gives the
    storage behind it, where a states filter is a WHERE clause."""
    storage = study._storage
    return storage if cached else getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def finished_seconds(storage: BaseStorage, study_id: int) -> list[float] | None:
    """How long each COMPLETE or PRUNED trial took, from one two-column query on an RDB storage.

    Loading every trial (params, attrs, intermediate values) to read two timestamps takes tens of
    seconds on a 10,000-trial study; Optuna's table models answer in milliseconds. None when the
    storage is not an RDB one (journal, gRPC): the caller then loads the trials.
    """
    storage = _rdb(storage)
    if storage is None:
        return None
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trial = models.TrialModel  # Optuna 5 keeps naive UTC times in these columns; a difference needs no zone
    query = sa.select(trial._datetime_start_utc, trial._datetime_complete_utc).where(
        trial.study_id == study_id, trial.state.in_([TrialState.COMPLETE, TrialState.PRUNED])
    )
    with storage.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [(end - start).total_seconds() for start, end in rows if start is not None and end is not None]


def trial_counts(storage: BaseStorage, study_id: int) -> dict[TrialState, int]:
    """Trials of the study by state. Optuna's ``get_n_trials`` loads every trial to count them; on an
    RDB storage this is one GROUP BY instead, elsewhere one load of all trials."""
    rdb = _rdb(storage)
    if rdb is None:
        trials = storage.get_all_trials(study_id, deepcopy=False)
        return {state: n for state in TrialState if (n := sum(t.state == state for t in trials))}
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trial = models.TrialModel
    query = sa.select(trial.state, sa.func.count()).where(trial.study_id == study_id).group_by(trial.state)
    with rdb.engine.connect() as conn:
        return dict(conn.execute(query).all())


def origin_counts(storage: BaseStorage, study_id: int, key: str) -> dict[str, int]:
    """How many trials of the study hold each value of user attr ``key``; on an RDB storage one
    GROUP BY over the attrs table instead of loading every trial."""
    rdb = _rdb(storage)
    if rdb is None:
        counts: dict[str, int] = {}
        for t in storage.get_all_trials(study_id, deepcopy=False):
            if key in t.user_attrs:
                counts[t.user_attrs[key]] = counts.get(t.user_attrs[key], 0) + 1
        return counts
    import json

    import sqlalchemy as sa
    from optuna.storages._rdb import models

    attr, trial = models.TrialUserAttributeModel, models.TrialModel
    query = (
        sa.select(attr.value_json, sa.func.count())
        .join(trial, trial.trial_id == attr.trial_id)
        .where(trial.study_id == study_id, attr.key == key)
        .group_by(attr.value_json)
    )
    with rdb.engine.connect() as conn:
        return {json.loads(value): n for value, n in conn.execute(query).all()}


def recent_ended(storage: BaseStorage, study_id: int, *, since: dt.datetime, n: int) -> list[FrozenTrial]:
    """The last ``n`` trials that ended (complete, pruned or failed) at or after ``since``, oldest first;
    on an RDB storage without loading the study's other trials."""
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    rdb = _rdb(storage)
    if rdb is None:
        trials = [
            t
            for t in storage.get_all_trials(study_id, deepcopy=False, states=ended)
            if t.datetime_complete and t.datetime_complete >= since
        ]
        return sorted(trials, key=lambda t: t.datetime_complete)[-n:]  # type: ignore[arg-type, return-value]
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trial = models.TrialModel
    since_utc = since.astimezone(dt.UTC).replace(tzinfo=None)  # the column holds naive UTC
    query = (
        sa.select(trial.trial_id)
        .where(trial.study_id == study_id, trial.state.in_(ended), trial._datetime_complete_utc >= since_utc)
        .order_by(trial._datetime_complete_utc.desc(), trial.trial_id.desc())
        .limit(n)
    )
    with rdb.engine.connect() as conn:
        ids = [row[0] for row in conn.execute(query).all()]
    return [storage.get_trial(i) for i in reversed(ids)]


def bulk_add_trials(storage: BaseStorage, study_id: int, trials: list[FrozenTrial]) -> None:
    """Add finished ``trials`` (params, value, user attrs, intermediate values; numbered from 0) to the
    study ``study_id``, which must hold none yet, in one transaction of multi-row INSERTs."""
    rdb = _rdb(storage)
    if rdb is None:
        raise ValueError("bulk_add_trials needs an RDB storage (SQLite, PostgreSQL, MySQL)")
    import sqlalchemy as sa
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    def utc(moment: dt.datetime | None) -> dt.datetime | None:  # the columns hold naive UTC
        if moment is None or moment.tzinfo is None:
            return moment
        return moment.astimezone(dt.UTC).replace(tzinfo=None)

    trial = models.TrialModel
    with rdb.engine.begin() as conn:
        count = sa.select(sa.func.count()).select_from(trial).where(trial.study_id == study_id)
        if conn.execute(count).scalar():
            raise ValueError(f"study {study_id} already has trials; bulk_add_trials fills empty studies")
        rows = [
            {
                "number": t.number,
                "study_id": study_id,
                "state": t.state,
                "datetime_start": utc(t.datetime_start),
                "datetime_complete": utc(t.datetime_complete),
            }
            for t in trials
        ]
        returning = sa.insert(trial.__table__).returning(trial.trial_id, sort_by_parameter_order=True)
        params, values, attrs, steps = [], [], [], []
        for trial_id, t in zip(conn.execute(returning, rows).scalars(), trials, strict=True):
            params += [
                {
                    "trial_id": trial_id,
                    "param_name": key,
                    "param_value": t.distributions[key].to_internal_repr(value),
                    "distribution_json": distribution_to_json(t.distributions[key]),
                }
                for key, value in t.params.items()
            ]
            if t.value is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(t.value)
                values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
            attrs += [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in t.user_attrs.items()
            ]
            for step, value in t.intermediate_values.items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                steps.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": stored,
                        "intermediate_value_type": kind,
                    }
                )
        for model, table_rows in (
            (models.TrialParamModel, params),
            (models.TrialValueModel, values),
            (models.TrialUserAttributeModel, attrs),
            (models.TrialIntermediateValueModel, steps),
        ):
            if table_rows:
                conn.execute(sa.insert(model.__table__), table_rows)


def _rdb(storage: BaseStorage):
    """The RDBStorage behind ``storage`` (a Study wraps it in Optuna's cache), or None."""
    from optuna.storages import RDBStorage

    storage = getattr(storage, "_backend", storage)  # optuna.storages._CachedStorage
    return storage if isinstance(storage, RDBStorage) else None
