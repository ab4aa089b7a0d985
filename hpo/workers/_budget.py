"""The study-wide trial budget, enforced where trials are created.

The budget counts COMPLETE + PRUNED trials across every worker on every machine, except those
copied from an earlier study when the study was created (they ran there, not here), and a paused
trial and its continuation as one (``--pruner asha``): see ``hpo.records.unbudgeted``. Under a
storage-wide lock a worker only starts a trial while finished + running < budget, and it waits
(failing stale trials meanwhile) while running trials may still fail and need a retry. So N workers
with ``--n-trials 12`` end with exactly 12 finished trials. Under the same lock a worker first
promotes a paused trial that now ranks at its rung (``hpo.workers._promotion``): that starts no new
configuration, so it needs no room in the budget; once the budget is met, the paused trials'
checkpoints are deleted.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings

import optuna
from optuna.trial import TrialState

from hpo.optuna_compat import recent_ended, study_id, study_storage, trial_counts
from hpo.records import study_record, unbudgeted
from hpo.study import StudySpec, budget_lock, build_pruner, build_sampler
from hpo.workers._failures import DEFAULT_MAX_FAILURES, WorkerStopped, study_streak
from hpo.workers._promotion import Promotion
from storage import open_storage

__all__ = ["HEARTBEAT_SECONDS", "BudgetReached", "BudgetedStudy"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_SECONDS = 30  # a killed worker's trial is failed and retried after 2 missed beats + 10 s


class BudgetReached(Exception):
    """The study has its budgeted number of finished trials (or the worker's time is up)."""


class BudgetedStudy(optuna.Study):
    """A Study whose ``ask`` enforces the study-wide trial budget across processes and machines, and
    stops the worker (:class:`WorkerStopped`) when the study's last ``max_failures`` trials all failed."""

    def __init__(
        self,
        name: str,
        url: str,
        spec: StudySpec,
        *,
        n_trials: int | None,
        deadline: float | None,
        seed: int,
        poll_seconds: float = 1.0,
        heartbeat: int = HEARTBEAT_SECONDS,
        max_failures: int = DEFAULT_MAX_FAILURES,
        since: dt.datetime | None = None,
        promotion: Promotion | None = None,
    ) -> None:
        super().__init__(
            study_name=name,
            storage=open_storage(url, heartbeat_interval=heartbeat),
            sampler=build_sampler(spec.sampler, seed=seed, space=spec.space),
            pruner=build_pruner(
                spec.pruner, folds=spec.base.cv.folds, max_epochs=spec.base.budget.max_epochs
            ),
        )
        self._url, self._n_trials, self._deadline, self._poll = url, n_trials, deadline, poll_seconds
        self._max_failures = max_failures
        self._promotion = promotion
        # Failures before the worker pool started are not its concern.
        self._started = since or dt.datetime.now()

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        while True:
            if self._deadline is not None and time.time() >= self._deadline:
                raise BudgetReached("time is up")
            self._stop_on_failures()
            if self._n_trials is None and self._promotion is None:
                return super().ask(fixed_distributions)
            with budget_lock(self._url, self.study_name):
                room = True
                if self._n_trials is not None:
                    # ONE read of the counts: with two, a trial finishing in between is counted in
                    # neither. Promotions change only under this lock.
                    counts = trial_counts(study_storage(self), study_id(self))
                    finished = sum(counts.get(s, 0) for s in _FINISHED) - unbudgeted(study_record(self))
                    if finished >= self._n_trials:
                        if self._promotion is not None:
                            self._promotion.release_all(self)
                        raise BudgetReached(f"{finished} trials finished")
                    room = finished + counts.get(TrialState.RUNNING, 0) < self._n_trials
                # A queued continuation is popped before anything is sampled.
                if (self._promotion is not None and self._promotion.promote(self) is not None) or room:
                    return super().ask(fixed_distributions)
            # Budget is covered by running trials, but one of them may still fail and need a retry.
            time.sleep(self._poll)
            with warnings.catch_warnings():  # "experimental" in Optuna since 2.9; the heartbeat relies on it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self)

    def _stop_on_failures(self) -> None:
        if not self._max_failures:
            return
        recent = recent_ended(study_storage(self), study_id(self), since=self._started, n=self._max_failures)
        if (reason := study_streak(recent, limit=self._max_failures, since=self._started)) is not None:
            raise WorkerStopped(reason)
