"""Throw-away storages: each one fresh and uniquely named, dropped afterwards.

    with fresh_storage_url("postgresql") as url: ...

Server modes use the real local servers: PostgreSQL and MariaDB on 127.0.0.1 (admin URLs
overridable with FOLDTUNE_TEST_POSTGRES_URL / FOLDTUNE_TEST_MARIADB_URL). Each storage is its own
``CREATE DATABASE ft_<uuid hex>``. An unreachable server raises :class:`ServerUnavailable` with the
reason (the test suite turns it into a skip, or a failure where the servers must be there).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from storage import redact

__all__ = [
    "ADMIN_URLS",
    "RDB_MODES",
    "SERVER_MODES",
    "STORAGE_MODES",
    "ServerUnavailable",
    "admin_execute",
    "database_url",
    "fresh_storage_url",
    "mariadb_user",
    "require_server",
    "unique_name",
]

STORAGE_MODES = ("sqlite", "postgresql", "mariadb", "journal")
RDB_MODES = ("sqlite", "postgresql", "mariadb")  # SQL databases: schema, heartbeats, locks
SERVER_MODES = ("postgresql", "mariadb")

ADMIN_URLS = {  # a superuser on a database that always exists
    "postgresql": os.environ.get(
        "FOLDTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get("FOLDTUNE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def unique_name(prefix: str = "ft_") -> str:
    """A name no other test (or test run) uses: ``ft_<uuid4 hex>``."""
    return prefix + uuid.uuid4().hex


@contextmanager
def fresh_storage_url(mode: str, workdir: Path | None = None) -> Iterator[str]:
    """Yield the URL of a new, empty storage for ``mode``; remove it afterwards.

    File modes point into a directory that does not exist yet (``open_storage`` must create it).
    """
    if mode in ("sqlite", "journal"):
        base = Path(tempfile.mkdtemp(prefix="ft_", dir=workdir))
        try:
            name = "study.db" if mode == "sqlite" else "study.log"
            yield f"{'sqlite:///' if mode == 'sqlite' else 'journal://'}{base / unique_name() / name}"
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return
    if mode not in SERVER_MODES:
        raise ValueError(f"unknown storage mode {mode!r}; known: {', '.join(STORAGE_MODES)}")
    require_server(mode)
    database = unique_name()
    admin_execute(mode, f"CREATE DATABASE {database}")
    try:
        yield database_url(mode, database)
    finally:
        _drop_database(mode, database)


def database_url(mode: str, database: str, **parts: Any) -> str:
    """The admin URL of ``mode`` with another database (and optionally username/password/host/port).

    Values are URL-encoded as needed: ``database_url("mariadb", db, password="p@ss:/")`` works.
    """
    return make_url(ADMIN_URLS[mode]).set(database=database, **parts).render_as_string(hide_password=False)


def admin_execute(mode: str, *statements: str, **params: Any) -> list[Any]:
    """Run statements as the server's admin (autocommit); return the rows of the last one."""
    rows: list[Any] = []
    with _admin_engine(mode).connect() as conn:
        for statement in statements:
            result = conn.execute(sa.text(statement), params)
            rows = list(result) if result.returns_rows else []
    return rows


@contextmanager
def mariadb_user(user: str, password: str, *, database: str) -> Iterator[None]:
    """A MariaDB account ``user`` with ``password`` and every right on ``database``; dropped afterwards."""
    admin_execute("mariadb", f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw", pw=password)
    try:
        admin_execute("mariadb", f"GRANT ALL ON {database}.* TO '{user}'@'%'")
        yield
    finally:
        admin_execute("mariadb", f"DROP USER IF EXISTS '{user}'@'%'")


class ServerUnavailable(RuntimeError):
    """The database server of a mode cannot be reached; the message says where and why."""


def require_server(mode: str) -> None:
    """Raise :class:`ServerUnavailable` if the server of ``mode`` is unreachable."""
    reason = _unreachable(mode)
    if reason is not None:
        raise ServerUnavailable(f"{mode} server unreachable at {redact(ADMIN_URLS[mode])}: {reason}")


@functools.cache
def _admin_engine(mode: str) -> sa.Engine:
    # NullPool: no idle admin connection lingers (it would block DROP DATABASE on MariaDB).
    options = {"isolation_level": "AUTOCOMMIT", "poolclass": NullPool, "connect_args": {"connect_timeout": 3}}
    return sa.create_engine(ADMIN_URLS[mode], **options)


@functools.cache
def _unreachable(mode: str) -> str | None:
    try:
        admin_execute(mode, "SELECT 1")
    except Exception as exc:
        return " ".join(str(getattr(exc, "orig", exc)).split())[:300]
    return None


def _drop_database(mode: str, database: str) -> None:
    if mode == "postgresql":  # FORCE ends the sessions still connected (pools of the code under test)
        admin_execute(mode, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        return
    # MariaDB waits for metadata locks of open sessions; end them first.
    for (session_id,) in admin_execute(
        mode,
        "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()",
        db=database,
    ):
        with contextlib.suppress(sa.exc.DBAPIError):  # already gone
            admin_execute(mode, f"KILL CONNECTION {int(session_id)}")
    admin_execute(mode, f"DROP DATABASE IF EXISTS {database}")
