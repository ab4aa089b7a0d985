"""Fail fast: a cause that fails every trial stops the workers with its reason.

Failures do not count toward the budget, so without a limit a worker whose every trial fails
(missing weights, an unwritable disk) records failed trials forever. Two limits stop it:

- this worker: ``limit`` trials in a row of its own failed (:class:`FailureStreak`, an optimize
  callback);
- the study: the last ``limit`` trials that ended since this worker started, on any worker, all
  failed (:func:`study_streak`, checked before each new trial), so N workers stop after about
  ``limit`` failures between them, not N x ``limit``.

Only trials the objective failed count (they carry a ``fail_reason``); a trial handed back on
SIGTERM or failed for a silent heartbeat says nothing about the configuration.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import traceback
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_compat import OPTIMIZE_LOGGER
from hpo.records import trial_record
from storage import redact

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_FAILURES",
    "FailureLog",
    "FailureStreak",
    "WorkerStopped",
    "failure_key",
    "quiet_optuna_failures",
    "study_streak",
]

DEFAULT_MAX_FAILURES = 3
_ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_NUMBER = re.compile(r"\d+(\.\d+)?")


class WorkerStopped(Exception):
    """The worker stops because trials keep failing; the message is the one line to show."""


def _reason(trial: FrozenTrial) -> str | None:
    return trial_record(trial).get("fail_reason") if trial.state == TrialState.FAIL else None


class FailureStreak:
    """Raises :class:`WorkerStopped` after ``limit`` consecutive failed trials of this process (0: never)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.streak = 0
        elif (reason := _reason(trial)) is not None:
            self.streak += 1
            if self.limit and self.streak >= self.limit:
                raise WorkerStopped(f"{self.streak} trials in a row failed; trial {trial.number}: {reason}")


def study_streak(trials: Sequence[FrozenTrial], *, limit: int, since: dt.datetime) -> str | None:
    """Why to stop, when the last ``limit`` trials that ended after ``since`` all failed; else None."""
    if not limit:
        return None
    ended = sorted(
        (t for t in trials if t.state in _ENDED and t.datetime_complete and t.datetime_complete >= since),
        key=lambda t: t.datetime_complete,  # type: ignore[arg-type, return-value]
    )
    recent = [t for t in ended if t.state != TrialState.FAIL or _reason(t) is not None][-limit:]
    if len(recent) < limit or any(_reason(t) is None for t in recent):
        return None
    last = recent[-1]
    return f"the study's last {limit} trials failed, on any worker; trial {last.number}: {_reason(last)}"


def failure_key(exc: BaseException) -> str:
    """What makes two failures the same one: the error type and its message without the numbers."""
    return f"{type(exc).__name__}: {_NUMBER.sub('#', str(exc))}"


class FailureLog:
    """Failed trials in the log: each distinct failure once with its traceback, repeats in one line at INFO.

    ``emit(key, text)`` gets the first of each kind (default: a warning in this process's log); a
    worker pool passes its children's to the parent, which shows each kind once for all of them.
    """

    def __init__(self, emit: Callable[[str, str], None] | None = None) -> None:
        self.seen: set[str] = set()
        self.emit = emit or (lambda key, text: log.warning("%s", text))

    def __call__(self, number: int, exc: BaseException, reason: str) -> None:
        key = failure_key(exc)
        if key in self.seen:
            log.info("trial %d failed: %s", number, reason)
            return
        self.seen.add(key)
        trace = "".join(traceback.format_exception(exc)).rstrip()
        self.emit(key, redact(f"trial {number} failed: {reason}\n{trace}"))


class _NoFailureLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Trial ") and " failed with " in message)


def quiet_optuna_failures() -> None:
    """Drop Optuna's own two lines (one with a traceback) per failed trial; the objective logs its own."""
    logging.getLogger(OPTIMIZE_LOGGER).addFilter(_NoFailureLines())
