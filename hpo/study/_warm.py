"""Where a new study starts: the best configs of earlier studies, then the space's starts (or those a
shipped space lends), then the sampler; on the same data, earlier trials join with their results.

Everything is read and checked before the study exists (:func:`plan_seeds`), so a missing study or
a bad storage URL leaves nothing behind; :func:`add_seeds` then writes the plan into the new study.

    >>> seeds = plan_seeds(spec, warm_start=["old"], storage=url)  # doctest: +SKIP
    >>> add_seeds(study, seeds)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import UserError
from hpo.records import TrialRecord, copied_origin, start_origin, study_record, warm_origin
from hpo.space import SearchSpace, load_space, shipped_spaces
from hpo.study._spec import StudySpec
from storage import StorageError, file_path, normalize_url, open_storage, redact

__all__ = ["WARM_TOP", "Seed", "Seeds", "add_seeds", "plan_seeds"]

WARM_TOP = 4  # distinct best configs taken from each earlier study
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Seed:
    """A trial to enqueue: the values it fixes (the rest are sampled) and where it came from."""

    params: dict[str, Any]
    origin: str


@dataclass
class Seeds:
    """What a new study starts with: trials to enqueue in order, finished trials to add as they are."""

    enqueue: list[Seed] = field(default_factory=list)  # warm starts first, then the starts
    copies: list[FrozenTrial] = field(default_factory=list)  # same-data trials, mapped onto the space
    lender: str | None = None  # the shipped space whose starts were borrowed
    notes: list[str] = field(default_factory=list)  # one line each: what was dropped, lent, copied


def plan_seeds(
    spec: StudySpec,
    *,
    storage: str,
    starts: bool = True,
    warm_start: Sequence[str] = (),
    warm_storage: str | None = None,
) -> Seeds:
    """Read the earlier studies ``warm_start`` (in ``warm_storage``, else ``storage``) and the starts
    of the new study ``spec``.

    Raises UserError (or StorageError) for a study that is not there, a storage that cannot be
    opened, or a study without a COMPLETE trial.
    """
    space = spec.space
    seeds = Seeds()
    seen: set[str] = set()

    def push(params: dict[str, Any], origin: str) -> bool:
        key = json.dumps(params, sort_keys=True)
        if not params or key in seen:
            return False
        seen.add(key)
        seeds.enqueue.append(Seed(params, origin))
        return True

    url = warm_storage or storage
    for name in dict.fromkeys(warm_start):  # a study named twice lends once
        old = _open_earlier(name, url)
        complete = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise UserError(
                f"warm start: study '{name}' in {redact(url)} has no COMPLETE trial to start from; "
                "let it finish a trial first, or leave it out"
            )
        best_first = sorted(complete, key=lambda t: t.value, reverse=old.direction == StudyDirection.MAXIMIZE)
        taken = 0
        for trial in best_first:
            kept, notes = space.adapt(trial.params)
            if push(kept, warm_origin(name, trial.number)):
                seeds.notes += [f"warm start {name}#{trial.number}: {note}" for note in notes]
                taken += 1
                if taken == WARM_TOP:
                    break
        old_spec = study_record(old).get("foldtune") or {}
        if old_spec.get("data_fingerprint") == spec.data_fingerprint:
            curves = _steps(old_spec.get("base_config")) == _steps(spec.base.to_dict())
            finished = old.get_trials(deepcopy=False, states=_FINISHED)
            copies = [_copy(space, name, t, curve=curves) for t in finished]
            seeds.copies += copies
            seeds.notes.append(
                f"{len(copies)} finished trial(s) of '{name}' (same data) copied for the sampler; "
                "they do not count towards the budget"
            )

    if starts:
        own = space.starts
        if own is None:  # the space says nothing about starts; `starts: []` asks for none
            seeds.lender, own = _borrowed(space)
            if seeds.lender is not None:
                seeds.notes.append(
                    f"the space has no starts: {len(own)} lent by the shipped space '{seeds.lender}'"
                )
        for index, start in enumerate(own):
            push(start, start_origin(index))
    return seeds


def add_seeds(study: optuna.Study, seeds: Seeds) -> None:
    """Add the copies, then enqueue the seeds in order: workers pop waiting trials oldest first."""
    for trial in seeds.copies:
        study.add_trial(trial)
    for seed in seeds.enqueue:
        study.enqueue_trial(seed.params, user_attrs=dict(TrialRecord(origin=seed.origin)))


def _open_earlier(name: str, url: str) -> optuna.Study:
    try:
        path = file_path(normalize_url(url))
        if path is not None and not Path(path).exists():  # opening would leave an empty database behind
            raise UserError(
                f"warm start: {redact(url)} does not exist, so it holds no study '{name}'; "
                "name the storage the earlier study lives in"
            )
        backend = open_storage(url, heartbeat_interval=None)
    except StorageError as exc:
        raise UserError(f"warm start from study '{name}': {exc}") from None
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        names = sorted(s.study_name for s in backend.get_all_studies())
        there = f"studies there: {', '.join(names[:10])}" if names else "it holds no study"
        raise UserError(
            f"warm start: study '{name}' not found in {redact(url)} ({there}); name an existing study"
        ) from None


def _steps(base_config: dict[str, Any] | None) -> tuple[int, int] | None:
    """What a reported step means (``fold * max_epochs + epoch``): folds and epochs per fold."""
    if not base_config:
        return None
    return base_config["cv"]["folds"], base_config["budget"]["max_epochs"]


def _copy(space: SearchSpace, name: str, trial: FrozenTrial, *, curve: bool) -> FrozenTrial:
    """A finished trial of study ``name`` as a trial of ``space``: its params mapped, its value and
    record kept (the config it ran, so retrain can run it again), its times (so the study's mean
    trial time stays true), and its learning curve where the steps mean the same folds and epochs
    (``curve``), so that pruners compare like with like."""
    kept, _ = space.adapt(trial.params)  # values this space cannot take are left out silently: many trials
    return FrozenTrial(
        number=0,  # the storage numbers it
        trial_id=0,
        state=trial.state,
        value=trial.value,
        values=None,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=kept,
        distributions={path: space.params[path].distribution() for path in kept},
        user_attrs={**trial.user_attrs, **TrialRecord(origin=copied_origin(name, trial.number))},
        system_attrs={},
        intermediate_values=dict(trial.intermediate_values) if curve else {},
    )


def _borrowed(space: SearchSpace) -> tuple[str | None, list[dict[str, Any]]]:
    """The starts of the shipped space sharing the most param paths (on a tie, the one of fewest
    params: the closer space), mapped onto ``space``."""
    best: tuple[tuple[int, int], str, SearchSpace] | None = None
    for name in shipped_spaces():
        lender = load_space(name)
        score = (len(set(lender.params) & set(space.params)), -len(lender.params))
        if score[0] and lender.starts and (best is None or score > best[0]):
            best = (score, name, lender)
    if best is None:
        return None, []
    _, name, lender = best
    mapped = [kept for start in lender.starts if (kept := space.adapt(start)[0])]
    return (name, mapped) if mapped else (None, [])
