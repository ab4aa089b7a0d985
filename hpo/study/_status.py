"""A study's state in plain data (rendered by the CLI): status, one summary per study, one row per trial.

>>> study_status(study, target=100).failures      # doctest: +SKIP
[FailureGroup(reason='ValueError: ...', count=12, last_trial=41)]
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_compat import finished_seconds, origin_counts, study_id, study_storage, trial_counts
from hpo.records import (
    COST_KEYS,
    ORIGIN_KINDS,
    Progress,
    StudyRecord,
    origin_kind,
    study_record,
    trial_record,
    unbudgeted,
)
from hpo.study._limits import best_feasible, is_feasible

__all__ = [
    "FailureGroup",
    "RunningTrial",
    "StudyStatus",
    "StudySummary",
    "study_status",
    "study_summaries",
    "trial_rows",
]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class RunningTrial:
    number: int
    host: str
    device: str
    worker: str  # host:pid/device
    elapsed_s: float
    progress: str


@dataclass(frozen=True)
class FailureGroup:
    """Failed trials that share a reason."""

    reason: str
    count: int
    last_trial: int


@dataclass(frozen=True)
class StudyStatus:
    name: str
    counts: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    running: list[RunningTrial] = field(default_factory=list)
    mean_trial_s: float | None = None
    eta_s: float | None = None  # for `budget` finished trials at the current pace
    budget: int | None = None  # the study-wide number of finished trials the workers run to
    finished: int = 0  # complete + pruned as the budget counts them (hpo.records.unbudgeted)
    failures: list[FailureGroup] = field(default_factory=list)  # most frequent reason first
    # --pruner asha: trials paused at a rung, paused trials promoted, continuations (any state)
    pauses: dict[str, int] | None = None
    # trials by where they came from: warm, start, sampled, copied (hpo.records, origin)
    origins: dict[str, int] = field(default_factory=dict)
    copied: int = 0  # finished trials copied from earlier studies: in counts, not in finished
    limits: dict[str, float] = field(default_factory=dict)  # the study's cost limits; best = best feasible
    infeasible: int = 0  # complete trials over a limit (latency_ms): never the best
    cost_devices: list[str] = field(default_factory=list)  # where the complete trials' latency was measured

    @property
    def workers(self) -> list[str]:
        """The worker processes running a trial now."""
        return sorted({r.worker for r in self.running})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "counts": self.counts,
            "budget": self.budget,
            "finished": self.finished,
            "pauses": self.pauses,
            "copied": self.copied,
            "origins": self.origins,
            "best": {"number": self.best_number, "value": self.best_value, "params": self.best_params},
            "running": [asdict(r) for r in self.running],
            "workers": self.workers,
            "failures": [asdict(f) for f in self.failures],
            "limits": self.limits,
            "infeasible": self.infeasible,
            "cost_devices": self.cost_devices,
            "mean_trial_s": self.mean_trial_s,
            "eta_s": self.eta_s,
        }


def study_status(study: optuna.Study, *, target: int | None = None) -> StudyStatus:
    """The study now, from targeted storage reads: a 10,000-trial study loads only its running and
    failed trials whole (counts, best trial and durations come from light queries)."""
    storage, sid = study_storage(study, cached=False), study_id(study)
    counts = {state.name.lower(): n for state, n in trial_counts(storage, sid).items()}
    record = study_record(study)
    best, limits = _best(storage, sid, record)
    infeasible, devices = 0, set()
    if limits:  # the complete trials are read whole only for a study with limits
        for t in storage.get_all_trials(sid, deepcopy=False, states=(TrialState.COMPLETE,)):
            infeasible += not is_feasible(t)
            devices.add(trial_record(t).get("cost_device"))
    now = dt.datetime.now()
    running = [
        RunningTrial(
            number=t.number,
            host=str(trial_record(t).get("host", "?")),
            device=str(trial_record(t).get("device", "?")),
            worker=str(trial_record(t).get("worker", "?")),
            elapsed_s=(now - t.datetime_start).total_seconds() if t.datetime_start else 0.0,
            progress=_progress_text(trial_record(t).get("progress")),
        )
        for t in storage.get_all_trials(sid, deepcopy=False, states=(TrialState.RUNNING,))
    ]
    seconds = finished_seconds(storage, sid)
    if seconds is None:
        finished_trials = storage.get_all_trials(sid, deepcopy=False, states=_FINISHED)
        seconds = [t.duration.total_seconds() for t in finished_trials if t.duration]
    mean_s = statistics.fmean(seconds) if seconds else None
    finished = counts.get("complete", 0) + counts.get("pruned", 0) - unbudgeted(record)
    eta = None
    if target is not None and mean_s is not None:
        eta = max(0, target - finished) * mean_s / max(1, len(running))
    return StudyStatus(
        name=study.study_name,
        counts=counts,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else {},
        running=running,
        mean_trial_s=mean_s,
        eta_s=eta,
        budget=target,
        finished=finished,
        failures=_failure_groups(storage.get_all_trials(sid, deepcopy=False, states=(TrialState.FAIL,))),
        pauses=_pauses(record, storage, sid),
        origins=_by_kind(origin_counts(storage, sid, "origin")),
        copied=record.get("copied", 0),
        limits=limits,
        infeasible=infeasible,
        cost_devices=sorted(d for d in devices if d),
    )


def _pauses(record: StudyRecord, storage: BaseStorage, sid: int) -> dict[str, int] | None:
    """Paused, promoted and continued trials of an asha study (None for other pruners): these read
    every trial's attrs, which other studies' status never needs."""
    if record.get("foldtune", {}).get("pruner") != "asha":
        return None
    trials = storage.get_all_trials(sid, deepcopy=False)
    return {
        "paused": sum(bool(trial_record(t).get("paused")) for t in trials if t.state == TrialState.PRUNED),
        "promoted": len(record.get("promoted", [])),
        "continued": sum("continues" in trial_record(t) for t in trials),
    }


def _by_kind(origins: dict[str, int]) -> dict[str, int]:
    kinds = {kind: 0 for kind in ORIGIN_KINDS}
    for origin, n in origins.items():
        kinds[origin_kind(origin)] = kinds.get(origin_kind(origin), 0) + n
    return {kind: n for kind, n in kinds.items() if n}


def _best(
    storage: BaseStorage, sid: int, record: dict[str, Any]
) -> tuple[FrozenTrial | None, dict[str, float]]:
    """The best complete trial, feasible under the study's limits when it has any; and the limits."""
    limits = dict((record.get("foldtune") or {}).get("limits") or {})
    if limits:
        return best_feasible(
            storage.get_all_trials(sid, deepcopy=False, states=(TrialState.COMPLETE,))
        ), limits
    try:
        return storage.get_best_trial(sid), limits
    except ValueError:  # no complete trial yet
        return None, limits


def _failure_groups(trials: list[FrozenTrial]) -> list[FailureGroup]:
    groups: dict[str, list[int]] = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            reason = trial_record(t).get("fail_reason") or "handed back for retry, or its worker went silent"
            groups.setdefault(reason, []).append(t.number)
    return sorted(
        (FailureGroup(reason, len(numbers), max(numbers)) for reason, numbers in groups.items()),
        key=lambda g: (-g.count, -g.last_trial),
    )


def _progress_text(progress: Progress | None) -> str:
    if not progress:
        return "starting"
    return f"fold {progress['fold']}/{progress['folds']} epoch {progress['epoch']}/{progress['epochs']}"


# ---------------------------------------------------------------------------------------------
# Every study of a storage: counts by storage queries, without loading any study's trials
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySummary:
    name: str
    direction: str
    counts: dict[str, int]
    best_value: float | None
    best_number: int | None
    budget: int | None
    foldtune: bool  # made by `hpo study create` (holds a foldtune spec)

    @property
    def finished(self) -> int:
        return self.counts.get("complete", 0) + self.counts.get("pruned", 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished}


def study_summaries(storage: BaseStorage) -> list[StudySummary]:
    summaries = []
    for frozen in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        study_id = storage.get_study_id_from_name(frozen.study_name)
        counts = {state.name.lower(): n for state, n in trial_counts(storage, study_id).items()}
        record = study_record(frozen)
        best, _ = _best(storage, study_id, record)
        summaries.append(
            StudySummary(
                name=frozen.study_name,
                direction=frozen.direction.name.lower(),
                counts=counts,
                best_value=best.value if best else None,
                best_number=best.number if best else None,
                budget=record.get("budget"),
                foldtune="foldtune" in record,
            )
        )
    return summaries


# ---------------------------------------------------------------------------------------------
# One row per trial
# ---------------------------------------------------------------------------------------------


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Number, state, value, params, fold F1s, cost figures (``feasible`` under the study's limits),
    duration, worker, fail/prune reason, origin, and the paused trial it continues (``--pruner asha``)
    of every trial."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        record = trial_record(t)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": dict(t.params),
                "fold_f1": record.get("fold_f1", []),
                **{key: record.get(key) for key in COST_KEYS},
                "cost_device": record.get("cost_device"),
                "feasible": is_feasible(t),
                "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
                "worker": record.get("worker"),
                "origin": record.get("origin"),
                "reason": record.get("fail_reason") or record.get("prune_reason"),
                "continues": record.get("continues"),
            }
        )
    return rows
