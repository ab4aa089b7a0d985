"""A storage URL -> a ready Optuna storage; schema upgrades; the gRPC proxy server."""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from storage._errors import StorageError, translate
from storage._lock import connect, storage_lock
from storage._reconnect import RECONNECT_TIMEOUT_S, ReconnectingRDBStorage
from storage._redact import redact
from storage._urls import (
    CONNECT_TIMEOUT_S,
    SQLITE_BUSY_TIMEOUT_S,
    engine_kwargs,
    file_path,
    is_memory,
    normalize_url,
    url_kind,
)

__all__ = ["open_storage", "serve_proxy", "upgrade_schema"]

_logger = logging.getLogger(__name__)

SCHEMA_LOCK = "foldtune-schema"  # serializes schema creation/upgrade (concurrent CREATE TYPE/TABLE race)
GRACE_SLACK_S = 10  # on top of 2 missed beats: a GC pause or a slow DB round trip is not a dead worker


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = 30,
    grace_period: int | None = None,
    max_retry: int = 3,
    reconnect_timeout: float = RECONNECT_TIMEOUT_S,
) -> BaseStorage:
    """Open (creating if needed) the Optuna storage at ``url``.

    Safe to call from many processes at once on a fresh database: schema creation runs under
    ``storage_lock``. Backends:

    - SQLite: parent directory created, WAL journal mode (readers never block the writer), a
      60 s busy timeout so concurrent workers wait instead of failing with "database is locked".
      Local disks only. ``sqlite:///:memory:`` (tests, throwaway studies): as with Optuna's own
      RDBStorage, one database per call, held by the thread that opened it and gone with it; no
      heartbeat (no other process could ever reap a stale trial).
    - PostgreSQL / MySQL / MariaDB: pre-pinged pool (4 + 4 overflow), connections recycled after
      30 min, 5 s connect timeout (an unreachable host fails fast).
    - Journal file: ``JournalStorage(JournalFileBackend(path))``; no heartbeat.
    - gRPC: ``GrpcStorageProxy``; waits up to 5 s for the proxy. Heartbeats are not available
      through the proxy, so stale trials are only reaped by direct database clients.

    For RDB storages, a running trial records a heartbeat every ``heartbeat_interval`` s; one
    silent for ``grace_period`` s (default ``2 * heartbeat_interval + 10``) is marked FAIL by the
    next worker and re-enqueued up to ``max_retry`` times. ``heartbeat_interval=None`` disables it.

    RDB storages ride out database outages: a call that loses its connection waits and reconnects
    for up to ``reconnect_timeout`` s (one warning per outage), then raises StorageError; see
    ``storage._reconnect`` for which calls are safe to run again. Opening does not wait: an
    unreachable server fails here at once.

    Raises:
        StorageError: unsupported/malformed URL, unreachable server, bad credentials, missing
            database, or a schema that needs ``hpo storage upgrade``. The URL is always redacted.
        ValueError: non-positive ``heartbeat_interval``/``grace_period``/``reconnect_timeout`` or
            negative ``max_retry``.
    """
    if heartbeat_interval is not None and heartbeat_interval <= 0:
        raise ValueError(f"heartbeat_interval must be a positive number of seconds, got {heartbeat_interval}")
    if grace_period is not None and grace_period <= 0:
        raise ValueError(f"grace_period must be a positive number of seconds, got {grace_period}")
    if max_retry < 0:
        raise ValueError(f"max_retry must be >= 0, got {max_retry}")
    if reconnect_timeout <= 0:
        raise ValueError(f"reconnect_timeout must be a positive number of seconds, got {reconnect_timeout}")
    normalized = normalize_url(url)
    kind = url_kind(normalized)
    if kind == "journal":
        return _open_journal(normalized)
    if kind == "grpc":
        return _open_grpc(normalized)
    error: StorageError | None = None
    memory = is_memory(normalized)
    try:
        if not memory:  # in memory, nothing can race: RDBStorage creates the tables in its connection
            _prepare_sqlite_file(normalized)
            _ensure_schema(normalized)
        with warnings.catch_warnings():  # the heartbeat API is "experimental" in Optuna; we rely on it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat = {} if memory else _heartbeat_kwargs(heartbeat_interval, grace_period, max_retry)
            return ReconnectingRDBStorage(
                normalized,
                engine_kwargs=engine_kwargs(normalized),
                reconnect_timeout=reconnect_timeout,
                **heartbeat,
            )
    except Exception as exc:
        error = _schema_error(exc, normalized) or translate(exc, normalized)
    raise error


def upgrade_schema(url: str) -> str:
    """Migrate the RDB storage at ``url`` to the installed Optuna's schema; return the new version.

    A no-op on a current schema; creates the schema on an empty database. Back up first: the
    migration alters tables in place. Raises StorageError for journal/gRPC URLs (no schema), a
    schema newer than this Optuna, and the connection errors of ``open_storage``.
    """
    normalized = normalize_url(url)
    if url_kind(normalized) in ("journal", "grpc"):
        raise StorageError(f"{redact(normalized)} has no schema to upgrade; only SQLite/PostgreSQL/MySQL do")
    error: StorageError | None = None
    try:
        _prepare_sqlite_file(normalized)
        with storage_lock(normalized, SCHEMA_LOCK), _alembic_keeps_logging_alone():
            return _upgrade(normalized)
    except Exception as exc:
        error = translate(exc, normalized)
    raise error


def serve_proxy(url: str, *, host: str = "127.0.0.1", port: int = 13000) -> None:
    """Serve the storage at ``url`` to ``grpc://host:port`` clients; blocks until interrupted.

    Workers that cannot reach the database (or that are too many for its connection limit) use
    ``open_storage("grpc://proxy-host:13000")``. The proxy owns the database connections, the
    heartbeat settings and the cache. Needs ``grpcio`` and ``protobuf``.
    """
    normalized = normalize_url(url)
    if url_kind(normalized) == "grpc":
        raise StorageError(f"serve_proxy needs a database or journal URL, not a proxy ({redact(normalized)})")
    _require_grpc()
    backend = optuna.storages.get_storage(open_storage(normalized))  # RDB gets Optuna's in-process cache
    _logger.info("Serving storage %s to gRPC clients on %s:%d", redact(normalized), host, port)
    optuna.storages.run_grpc_proxy_server(backend, host=host, port=port)


# ------------------------------------------------------------------------------------------ helpers


def _heartbeat_kwargs(interval: int | None, grace_period: int | None, max_retry: int) -> dict[str, Any]:
    if interval is None:
        return {}
    return {
        "heartbeat_interval": interval,
        "grace_period": grace_period or 2 * interval + GRACE_SLACK_S,
        "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
    }


def _ensure_schema(url: str) -> None:
    """Create Optuna's tables once. Creators racing on a fresh database fail (PostgreSQL: unique
    violation on CREATE TYPE; SQLite/MySQL: table exists), so creation runs under the schema lock.
    Opening an existing schema is read-only and skips the lock: N workers then open in parallel."""
    if _schema_ready(url):
        return
    with storage_lock(url, SCHEMA_LOCK):
        if not _schema_ready(url):  # the lock holder before us may have created it
            RDBStorage(url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=True).engine.dispose()


def _schema_ready(url: str) -> bool:
    """Optuna stamps alembic_version last: a row there means a complete schema."""
    from sqlalchemy import inspect, text

    conn = connect(url)  # StorageError if the server is unreachable, the password wrong, ...
    try:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return bool(conn.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar())
    finally:
        conn.close()


def _prepare_sqlite_file(url: str) -> None:
    """Parent directory, and WAL: persistent in the file, set before SQLAlchemy's pool connects.
    Processes take turns: switching a fresh file to WAL takes a lock the busy timeout does not wait
    for, so concurrent first opens would fail with "database is locked"."""
    path = file_path(url) if url_kind(url) == "sqlite" else None
    if path is None:
        return
    _makedirs(path)
    with storage_lock(url, SCHEMA_LOCK):
        conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            conn.close()
    if str(mode).lower() != "wal":
        _logger.warning("SQLite at %s stays in %s journal mode; workers block each other", path, mode)


def _schema_error(exc: Exception, url: str) -> StorageError | None:
    text = str(exc)
    if not isinstance(exc, RuntimeError) or "compatible with the table schema" not in text:
        return None
    where = redact(url)
    if "storage upgrade" in text:
        return StorageError(
            f"the study schema at {where} is older than the installed Optuna {optuna.__version__} "
            "expects; back up the database, then run `hpo storage upgrade --storage URL`"
        )
    return StorageError(
        f"the study schema at {where} was written by a newer Optuna than the installed "
        f"{optuna.__version__}; upgrade optuna (pip install -U optuna) on this machine"
    )


def _upgrade(url: str) -> str:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url, **engine_kwargs(url))
    try:
        fresh = not inspect(engine).has_table("version_info")
    finally:
        engine.dispose()
    # Like `optuna storage upgrade`: on an old schema, create_all would add new tables that the
    # migrations then try to create again.
    storage = RDBStorage(
        url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=True, skip_table_creation=not fresh
    )
    try:
        current, head = storage.get_current_version(), storage.get_head_version()
        if current == head:
            return head
        if current not in storage.get_all_versions():
            raise StorageError(
                f"the study schema at {redact(url)} ({current}) is newer than the installed Optuna "
                f"{optuna.__version__} knows; upgrade optuna instead (pip install -U optuna)"
            )
        _logger.info("Upgrading the study schema at %s from %s to %s", redact(url), current, head)
        storage.upgrade()
        return storage.get_current_version()
    finally:
        storage.engine.dispose()


@contextmanager
def _alembic_keeps_logging_alone() -> Iterator[None]:
    """Optuna's alembic env.py calls logging.config.fileConfig() when the root logger has no
    handler, which disables every logger created so far (foldtune's included). Give it one."""
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        if placeholder is not None:
            root.removeHandler(placeholder)


def _open_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = file_path(url)
    assert path is not None
    try:
        _makedirs(path)
        return JournalStorage(JournalFileBackend(path))
    except OSError as exc:
        error = StorageError(f"cannot open the journal file {path} ({exc.strerror}); is it writable?")
    raise error


def _open_grpc(url: str) -> BaseStorage:
    _require_grpc()
    parts = urlsplit(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=parts.hostname or "", port=parts.port or 0)
    try:
        proxy.wait_server_ready(timeout=CONNECT_TIMEOUT_S)
        return proxy
    except Exception:
        proxy.close()
    raise StorageError(
        f"cannot reach the gRPC storage proxy at {redact(url)} within {CONNECT_TIMEOUT_S} s; "
        "check that `serve_proxy` runs there and that the port is open"
    )


def _require_grpc() -> None:
    try:
        import grpc  # noqa: F401
    except ImportError:
        error = StorageError("the gRPC storage proxy needs grpcio and protobuf: pip install grpcio protobuf")
    else:
        return
    raise error


def _makedirs(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    except OSError as exc:
        error = StorageError(f"cannot create the directory for {path} ({exc.strerror}); check permissions")
    else:
        return
    raise error
