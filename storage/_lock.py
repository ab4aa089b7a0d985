"""storage_lock: one named mutex per storage, shared by every process (and machine) using it.

=================  ===============================================  ===================================
backend            mechanism                                        excludes
=================  ===============================================  ===================================
PostgreSQL         ``pg_advisory_lock(key)``, session level, on a     every client of that database; the
                   pooled autocommit connection                     server frees it if the holder dies
MySQL / MariaDB    ``GET_LOCK(name, timeout)`` / ``RELEASE_LOCK``    every client of that server (the
                                                                    name includes the database)
SQLite, journal    ``fcntl.flock`` on ``<file>.<name>.lock``         processes sharing the file system
in-memory SQLite   ``threading.Lock``                               threads of this process
gRPC proxy         none: raises StorageError                        -
=================  ===============================================  ===================================

Cheap enough to wrap every trial creation: engines are cached per URL in this process (a lock
round trip is ~1-2 ms on a local server), and file locks are one open/flock/close. Not re-entrant:
taking the same name again inside the critical section blocks (until ``timeout``). The sidecar is
not ``<file>.lock``, which Optuna's journal backend uses for its own symlink lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from storage._errors import StorageError, translate
from storage._reconnect import RECONNECT_TIMEOUT_S, ride_out
from storage._redact import redact
from storage._urls import engine_kwargs, file_path, normalize_url, url_kind

__all__ = ["connect", "storage_lock"]

_FOREVER_S = 365 * 24 * 3600  # "no timeout" for APIs that need a number (MariaDB: negative = error)
_engines: dict[str, Any] = {}  # url -> sqlalchemy Engine used only for locks
_engines_guard = threading.Lock()
_local_locks: dict[str, threading.Lock] = {}


@contextmanager
def storage_lock(
    url: str,
    name: str = "foldtune",
    *,
    timeout: float | None = None,
    reconnect_timeout: float = RECONNECT_TIMEOUT_S,
) -> Iterator[None]:
    """Hold the mutex ``name`` of the storage at ``url`` for the duration of the ``with`` block.

    Args:
        url: Any form ``normalize_url`` accepts.
        name: Locks with different names do not exclude each other.
        timeout: Seconds to wait; None waits forever.
        reconnect_timeout: How long a database server that is down may take to come back.

    Raises:
        StorageError: the storage cannot be reached, the wait timed out, or ``url`` is a gRPC proxy
            (a proxy offers no lock: lock on its backend URL, or run the critical section there).

    Example::

        with storage_lock("postgresql://hpo@db/hpo", "create-trial"):
            trial = study.ask()
    """
    normalized = normalize_url(url)
    kind = url_kind(normalized)
    path = file_path(normalized)
    cm: AbstractContextManager[None]
    if kind == "grpc":
        raise StorageError(
            f"storage_lock is not available through the gRPC proxy {redact(normalized)}; "
            "take it on the proxy's backend database URL instead"
        )
    if kind in ("sqlite", "journal"):
        safe = re.sub(r"[^\w.-]", "_", name)[:80]
        cm = _local_lock(name, timeout) if path is None else _file_lock(f"{path}.{safe}.lock", timeout)
    elif kind == "postgresql":
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        cm = _sql_lock(
            normalized,
            lock="SELECT 1 FROM pg_advisory_lock(:k)",
            try_lock="SELECT pg_try_advisory_lock(:k)",
            unlock="SELECT pg_advisory_unlock(:k)",
            params={"k": key},
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
        )
    else:  # GET_LOCK names are server-wide and at most 64 characters: scope by database, hash if long
        raw = f"{_database(normalized)}/{name}"
        digest = hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()
        cm = _sql_lock(
            normalized,
            lock="SELECT GET_LOCK(:n, :t)",  # 1 = held, 0 = timed out
            try_lock=None,  # GET_LOCK waits with a timeout by itself
            unlock="SELECT RELEASE_LOCK(:n)",
            params={
                "n": raw if len(raw) <= 64 else raw[:31] + digest,
                "t": _FOREVER_S if timeout is None else timeout,
            },
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
        )
    with cm:
        yield


@contextmanager
def _sql_lock(
    url: str,
    *,
    lock: str,
    try_lock: str | None,
    unlock: str,
    params: dict[str, Any],
    timeout: float | None,
    reconnect_timeout: float,
) -> Iterator[None]:
    from sqlalchemy import text

    try:  # a server that restarts meanwhile is waited for, like every storage call
        conn = ride_out(
            url, lambda: _acquire(url, lock, try_lock, params, timeout), timeout=reconnect_timeout
        )
    except Exception as exc:
        error: StorageError | None = translate(exc, url)
    else:
        error = None
    if error is not None:
        raise error
    try:
        yield
    finally:
        try:
            conn.execute(text(unlock), params)
        except Exception:
            conn.invalidate()  # closing the session releases the lock server-side
        conn.close()


def _acquire(url: str, lock: str, try_lock: str | None, params: dict[str, Any], timeout: float | None) -> Any:
    """A connection holding the lock; StorageError if the wait timed out."""
    from sqlalchemy import text

    conn = _engine(url).connect()
    try:
        if timeout is None or try_lock is None:
            got = conn.execute(text(lock), params).scalar()
        else:
            got = _poll(lambda: bool(conn.execute(text(try_lock), params).scalar()), timeout)
    except BaseException:  # interrupted mid-request: a late grant must die with the connection
        conn.invalidate()
        conn.close()
        raise
    if got != 1:
        conn.close()
        raise _timeout_error(url, timeout)
    return conn


@contextmanager
def _file_lock(lock_path: str, timeout: float | None) -> Iterator[None]:
    try:
        os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        error = StorageError(f"cannot create the lock file {lock_path} ({exc.strerror}); check the directory")
    else:
        error = None
    if error is not None:
        raise error
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        elif not _poll(lambda: _try_flock(fd), timeout):
            raise _timeout_error(lock_path, timeout)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _local_lock(name: str, timeout: float | None) -> Iterator[None]:
    with _engines_guard:
        lock = _local_locks.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=-1 if timeout is None else timeout):
        raise _timeout_error("sqlite:///:memory:", timeout)
    try:
        yield
    finally:
        lock.release()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _poll(try_once: Callable[[], bool], timeout: float) -> bool:
    deadline, delay = time.monotonic() + timeout, 0.001
    while not try_once():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(2 * delay, 0.05)
    return True


def _timeout_error(where: str, timeout: float | None) -> StorageError:
    waited = "forever" if timeout is None else f"{timeout:g} s"
    return StorageError(
        f"gave up after {waited} waiting for a storage lock on {redact(where)}; another process holds "
        "it - retry, or raise the timeout"
    )


def connect(url: str) -> Any:
    """An autocommit connection from this process's cached engine for ``url``; StorageError if none."""
    try:
        return _engine(url).connect()
    except Exception as exc:
        error = translate(exc, url)
    raise error


def _engine(url: str) -> Any:
    with _engines_guard:
        engine = _engines.get(url)
        if engine is None:
            from sqlalchemy import create_engine

            kwargs = {**engine_kwargs(url), "pool_size": 1, "max_overflow": 15, "pool_timeout": _FOREVER_S}
            # Autocommit: no transaction stays open while the lock is held, and nothing to roll back
            # when the connection goes back to the pool (saves a round trip per lock).
            kwargs.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
            engine = _engines[url] = create_engine(url, **kwargs)
    return engine


def _database(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or ""


def _forget_engines_after_fork() -> None:
    global _engines_guard
    _engines_guard = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)  # the parent keeps using those sockets
    _engines.clear()


os.register_at_fork(after_in_child=_forget_engines_after_fork)
