"""Promotion-type ASHA in the workers: a trial stopped at a rung is paused, not lost.

- **Pause.** At a rung (:func:`hpo.study.rung_steps`) a trial outside the top 1/eta of the trials that
  reached it ends PRUNED with the record ``paused: {"rung": r, "step": s}`` (r is the 1-based rung,
  s its step) and keeps its checkpoint folder.
- **Promote.** When a worker asks for its next trial, a paused trial that now ranks in the top 1/eta
  at its rung (the highest rung first, then the best value) is continued by a new trial: same params,
  user attr ``continues: <paused trial>`` (``origin`` copied), and the system attr ``continues``
  ``{"trial", "after_step", "root"}``. The objective resumes ``root``'s checkpoints and reports only
  steps after ``after_step``, so no epoch runs twice and no step is reported twice.
- **Once.** Promotions happen under :func:`hpo.study.budget_lock` and are listed in the study record
  (``promoted``), so two workers never continue the same trial, also across restarts.
- **Disk.** At most ``keep`` paused trials keep their checkpoints (the study's ``keep_paused``); past
  it the worst-ranked go first (the largest share of peers above them at their rung, then the lower
  rung). When the budget is met every paused trial's checkpoints go. A trial whose checkpoints were
  deleted is listed in ``released`` and never promoted.
- **Budget.** A paused trial and its continuation count as one finished trial: the finished count is
  COMPLETE + PRUNED - promoted (:func:`hpo.records.unbudgeted`).

Checkpoints live under each worker's ``--checkpoint-dir``: a continuation finds them when workers share
that folder (one machine, or a shared volume); elsewhere it trains from epoch 0 with a warning.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.records import study_record, trial_record, write_study
from hpo.study import ETA, budget_lock, in_top, rung_values

__all__ = [
    "CONTINUES",
    "Continuation",
    "Paused",
    "Promotion",
    "chain_root",
    "checkpoint_folder",
    "continuation_of",
    "is_paused",
]

log = logging.getLogger(__name__)

CONTINUES = "continues"  # the system attr a continuation carries (its retries copy it)


@dataclass(frozen=True)
class Continuation:
    trial: int  # the paused trial this one continues
    after_step: int  # that trial's last reported step
    root: int  # the trial whose checkpoint folder both use


class Paused(optuna.TrialPruned):
    """Pruned at a rung with its checkpoints kept: a later promotion may continue it."""


def continuation_of(trial: FrozenTrial) -> Continuation | None:
    raw = trial.system_attrs.get(CONTINUES)
    return Continuation(int(raw["trial"]), int(raw["after_step"]), int(raw["root"])) if raw else None


def chain_root(trial: FrozenTrial) -> int:
    """Whose checkpoints ``trial`` resumes: a continuation the paused trial's, a retry the first try's."""
    if (continued := continuation_of(trial)) is not None:
        return continued.root
    return int(trial.system_attrs.get("failed_trial", trial.number))


def checkpoint_folder(checkpoint_root: str | Path, study_name: str, root: int) -> Path:
    return Path(checkpoint_root) / study_name / f"trial-{root}"


def is_paused(trial: FrozenTrial) -> bool:
    """Ended by a pause (a retry's record starts without one: see ``Objective``)."""
    return trial.state == TrialState.PRUNED and bool(trial_record(trial).get("paused"))


class Promotion:
    """Pauses, promotions and paused checkpoints of one study, seen from one worker process."""

    def __init__(self, url: str, *, checkpoint_root: str | Path, keep: int, eta: int = ETA) -> None:
        self.url, self.checkpoint_root, self.keep, self.eta = url, Path(checkpoint_root), keep, eta

    def promote(self, study: optuna.Study) -> int | None:
        """Queue the continuation of the best promotable paused trial; its number, or None.

        Call under :func:`hpo.study.budget_lock`: the queued trial is the next one any worker pops.
        """
        trials = study.get_trials(deepcopy=False)
        settled = self._settled(study)
        promotable = [
            t
            for t in trials
            if is_paused(t)
            and t.number not in settled
            and in_top(t.intermediate_values[_step(t)], rung_values(trials, _step(t)), eta=self.eta)
        ]
        if not promotable:
            return None
        best = max(promotable, key=lambda t: (_step(t), t.intermediate_values[_step(t)]))
        user_attrs = {CONTINUES: best.number}
        if "origin" in best.user_attrs:
            user_attrs["origin"] = best.user_attrs["origin"]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=best.params,
                distributions=best.distributions,
                user_attrs=user_attrs,
                system_attrs={
                    CONTINUES: {"trial": best.number, "after_step": _step(best), "root": chain_root(best)}
                },
            )
        )
        write_study(study, {"promoted": [*study_record(study).get("promoted", []), best.number]})
        log.info("trial %d promoted at rung %d: a new trial continues it", best.number, _rung(best))
        return best.number

    def keep_bound(self, study: optuna.Study, pausing: int) -> None:
        """Trial ``pausing`` is being paused: delete the checkpoints of the worst-ranked paused trials
        beyond ``keep`` (it may be one of them)."""
        with budget_lock(self.url, study.study_name):
            trials = study.get_trials(deepcopy=False)
            kept = self._kept(study, trials, pausing=pausing)
            if len(kept) <= self.keep:
                return
            by_rank = sorted(kept, key=lambda t: _standing(t, trials), reverse=True)  # worst first
            self._release(study, by_rank[: len(kept) - self.keep])

    def release_all(self, study: optuna.Study) -> None:
        """The budget is met: no paused trial will be promoted. Call under the budget lock."""
        self._release(study, self._kept(study, study.get_trials(deepcopy=False)))

    def _settled(self, study: optuna.Study) -> set[int]:
        record = study_record(study)
        return {*record.get("promoted", []), *record.get("released", [])}

    def _kept(
        self, study: optuna.Study, trials: list[FrozenTrial], *, pausing: int | None = None
    ) -> list[FrozenTrial]:
        """Paused trials still holding checkpoints, and the one being paused now (still RUNNING)."""
        settled = self._settled(study)
        return [
            t
            for t in trials
            if (is_paused(t) or (t.number == pausing and trial_record(t).get("paused")))
            and t.number not in settled
        ]

    def _release(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        if not trials:
            return
        for t in trials:
            shutil.rmtree(
                checkpoint_folder(self.checkpoint_root, study.study_name, chain_root(t)), ignore_errors=True
            )
        write_study(
            study, {"released": [*study_record(study).get("released", []), *(t.number for t in trials)]}
        )
        log.info("deleted the checkpoints of paused trials %s", ", ".join(str(t.number) for t in trials))


def _step(trial: FrozenTrial) -> int:
    return int(trial_record(trial)["paused"]["step"])


def _rung(trial: FrozenTrial) -> int:
    return int(trial_record(trial)["paused"]["rung"])


def _standing(trial: FrozenTrial, trials: list[FrozenTrial]) -> tuple[float, int, float]:
    """Larger is worse: the share of peers above it at its rung, then the lower rung, the lower value."""
    step = _step(trial)
    value = trial.intermediate_values[step]
    values = rung_values(trials, step)
    return sum(v > value for v in values) / len(values), -step, -value
