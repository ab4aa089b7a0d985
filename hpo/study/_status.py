"""A study's state in plain data: counts, best trial, running trials, ETA (rendered by the CLI)."""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.records import Progress, trial_record

__all__ = ["RunningTrial", "StudyStatus", "study_status"]


@dataclass(frozen=True)
class RunningTrial:
    number: int
    host: str
    device: str
    worker: str  # host:pid/device
    elapsed_s: float
    progress: str


@dataclass(frozen=True)
class StudyStatus:
    name: str
    counts: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    running: list[RunningTrial] = field(default_factory=list)
    mean_trial_s: float | None = None
    eta_s: float | None = None  # for `target` finished trials at the current pace

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "counts": self.counts,
            "best": {"number": self.best_number, "value": self.best_value, "params": self.best_params},
            "running": [r.__dict__ for r in self.running],
            "mean_trial_s": self.mean_trial_s,
            "eta_s": self.eta_s,
        }


def study_status(study: optuna.Study, *, target: int | None = None) -> StudyStatus:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.duration]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value or 0.0) if complete else None
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
        for t in trials
        if t.state == TrialState.RUNNING
    ]
    mean_s = statistics.fmean(t.duration.total_seconds() for t in done) if done else None
    eta = None
    if target is not None and mean_s is not None:
        remaining = max(0, target - len(done))
        eta = remaining * mean_s / max(1, len(running))
    return StudyStatus(
        name=study.study_name,
        counts={k: v for k, v in counts.items() if v},
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else {},
        running=running,
        mean_trial_s=mean_s,
        eta_s=eta,
    )


def _progress_text(progress: Progress | None) -> str:
    if not progress:
        return "starting"
    return f"fold {progress['fold']}/{progress['folds']} epoch {progress['epoch']}/{progress['epochs']}"
