"""Riding out a database outage: storage calls wait for the server instead of failing the worker.

A call that fails on a lost or refused connection (server restart, failover, network blip) is run
again with backoff until the outage has lasted ``reconnect_timeout`` seconds, then raises the
usual StorageError. Each process logs one warning per outage and URL, not one per retry.

What is safe to run again after a connection error:

- reads, and writes that are upserts (attrs, params, intermediate values, heartbeats): running
  them twice stores the same thing;
- creating a study or trial and changing a trial's state are not: if the connection broke while
  the COMMIT was in flight, the server may have stored it. Those run again only when the error
  came before the COMMIT was sent (the server then rolled the transaction back). A state change
  whose COMMIT broke is settled by reading the trial back; a creation whose COMMIT broke raises
  StorageError, because running it again could leave a twin (an orphan RUNNING trial).

A storage lock held when the connection breaks is freed by the server; its holder carries on
without knowing, so an outage inside a critical section may let one other process in.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from storage._errors import StorageError, driver_reason, is_connection_error, translate
from storage._redact import redact

__all__ = ["RECONNECT_TIMEOUT_S", "AmbiguousCommit", "ReconnectingRDBStorage", "recovered_within", "ride_out"]

_logger = logging.getLogger(__name__)

RECONNECT_TIMEOUT_S = 300.0  # how long an outage may last before storage calls give up
_FIRST_DELAY_S, _MAX_DELAY_S = 0.1, 1.0  # backoff between attempts (with jitter)
T = TypeVar("T")


class _Outage:
    """Per URL and process, shared by every thread and storage: one outage, one warning."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None  # time.monotonic() of the first failure
        self.ended: float = -float("inf")  # when the last outage ended


_outages: dict[str, _Outage] = {}
_outages_guard = threading.Lock()
_commit = threading.local()  # .sent: this thread's attempt got as far as sending COMMIT


class AmbiguousCommit(Exception):
    """The connection broke while COMMIT was in flight: the write may or may not be stored."""


def ride_out(url: str, call: Callable[[], T], *, timeout: float, once: bool = False) -> T:
    """``call()``, run again on connection errors until the outage is ``timeout`` seconds old.

    ``once``: ``call`` must not run twice; if its COMMIT was in flight when the connection broke,
    raise AmbiguousCommit instead. Other errors propagate unchanged; giving up raises StorageError.
    """
    outage = _outage(url)
    delay = _FIRST_DELAY_S
    while True:
        _commit.sent = False
        try:
            result = call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            if once and _commit.sent:
                raise AmbiguousCommit(driver_reason(exc, url)) from None
            left = _failed(outage, url, exc, timeout)
            error = translate(exc, url) if left <= 0 else None
        else:
            if outage.since is not None:
                _recovered(outage, url)
            return result
        if error is not None:
            raise error
        time.sleep(min(delay * random.uniform(0.5, 1.0), left))
        delay = min(2 * delay, _MAX_DELAY_S)


def recovered_within(url: str, seconds: float) -> bool:
    """Whether this process saw the server come back from an outage in the last ``seconds``."""
    return time.monotonic() - _outage(url).ended < seconds


class ReconnectingRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose calls ride out database outages (see the module docstring)."""

    def __init__(self, url: str, *, reconnect_timeout: float = RECONNECT_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.reconnect_timeout = reconnect_timeout
        self._watch_commits()

    def __setstate__(self, state: dict[Any, Any]) -> None:  # unpickled: a new engine to watch
        super().__setstate__(state)
        self._watch_commits()

    def _watch_commits(self) -> None:
        event.listen(self.engine, "commit", _mark_commit_sent)

    def _ride_out(self, call: Callable[[], T], *, once: bool = False) -> T:
        return ride_out(self.url, call, timeout=self.reconnect_timeout, once=once)

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._create(functools.partial(super().create_new_study, directions, study_name))

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        return self._create(functools.partial(super()._create_new_trial, study_id, template_trial))

    def _create(self, call: Callable[[], T]) -> T:
        try:
            return self._ride_out(call, once=True)
        except AmbiguousCommit as exc:
            error = StorageError(
                f"the connection to {redact(self.url)} broke while a new study or trial was being "
                f"committed ({exc}); it may or may not have been stored: look before creating it again"
            )
        raise error

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        while True:
            try:
                return self._ride_out(
                    functools.partial(super().set_trial_state_values, trial_id, state, values), once=True
                )
            except AmbiguousCommit:
                stored = self._ride_out(functools.partial(super().get_trial, trial_id))
            # Stored as asked: it went through. A RUNNING that may be another worker's claim counts
            # as ours: a trial run twice shows when the second tell fails, while an unclaimed
            # RUNNING trial would never end. Anything else: run it again for Optuna's own answer.
            if stored.state == state and (values is None or stored.values == list(values)):
                return True

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._ride_out(functools.partial(super().record_heartbeat, trial_id))
        except Exception as exc:
            # Raising would end Optuna's heartbeat thread for good; the next beat tries again.
            _logger.error("heartbeat of trial id %d not recorded: %s", trial_id, translate(exc, self.url))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # No worker could beat during an outage: after one, give them a grace period to beat again.
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if recovered_within(self.url, grace):
            return []
        return self._ride_out(functools.partial(super()._get_stale_trial_ids, study_id))


# Reads, and writes that store the same thing when run twice (a second insert of the same param
# is an IntegrityError that Optuna ignores): safe to run again whenever the connection broke.
_REPEATABLE = (
    "delete_study",  # running it again after a broken COMMIT fails with "not found": loud, not wrong
    "get_all_studies",
    "get_study_directions",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_system_attrs",
    "get_study_user_attrs",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_param",
    "get_trial_system_attrs",
    "get_trial_user_attrs",
    "_get_best_trial_id",
    "_get_trials",
    "set_study_system_attr",
    "set_study_user_attr",
    "set_trial_intermediate_value",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "_set_trial_param",
)


def _repeatable(name: str) -> Callable[..., Any]:
    unwrapped = getattr(RDBStorage, name)

    @functools.wraps(unwrapped)
    def method(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._ride_out(functools.partial(unwrapped, self, *args, **kwargs))

    return method


for _name in _REPEATABLE:
    setattr(ReconnectingRDBStorage, _name, _repeatable(_name))


def _mark_commit_sent(connection: Any) -> None:
    _commit.sent = True


def _outage(url: str) -> _Outage:
    with _outages_guard:
        return _outages.setdefault(url, _Outage())


def _failed(outage: _Outage, url: str, exc: Exception, timeout: float) -> float:
    """Note the failure; seconds left before giving up."""
    with outage.lock:
        now = time.monotonic()
        if outage.since is None:
            outage.since = now
            _logger.warning(
                "lost the connection to the database at %s (%s); waiting up to %.0f s for it to come back",
                redact(url),
                driver_reason(exc, url),
                timeout,
            )
        return outage.since + timeout - now


def _recovered(outage: _Outage, url: str) -> None:
    with outage.lock:
        if outage.since is None:  # another thread got there first
            return
        _logger.info("reconnected to %s after %.0f s", redact(url), time.monotonic() - outage.since)
        outage.since, outage.ended = None, time.monotonic()


def _forget_outages_after_fork() -> None:
    global _outages_guard
    _outages_guard = threading.Lock()  # a thread of the parent may have held it
    _outages.clear()


os.register_at_fork(after_in_child=_forget_outages_after_fork)
