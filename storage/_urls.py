"""Storage URLs: what users type -> the one canonical URL the rest of foldtune passes around."""

from __future__ import annotations

import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from storage._errors import StorageError
from storage._redact import redact

__all__ = [
    "SUPPORTED_FORMS",
    "Kind",
    "engine_kwargs",
    "file_path",
    "is_memory",
    "normalize_url",
    "url_kind",
]

Kind = Literal["sqlite", "postgresql", "mysql", "journal", "grpc"]

SUPPORTED_FORMS = (
    "study.db or sqlite:///path/study.db (SQLite; also .sqlite/.sqlite3), "
    "postgresql://user:password@host:5432/db, mysql://user:password@host:3306/db (also mariadb://), "
    "study.log or journal:///path/study.log (journal file; also .jsonl), grpc://host:port (storage proxy)"
)
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_DEFAULT_DRIVERS = {  # bare scheme -> the driver foldtune installs
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",  # same wire protocol; Optuna's migrations know the mysql dialect
}

CONNECT_TIMEOUT_S = 5  # an unreachable server fails in seconds, not after the OS TCP timeout (minutes)
SQLITE_BUSY_TIMEOUT_S = 60  # a writer waits this long for another process's write lock
POOL = {"pool_size": 4, "max_overflow": 4, "pool_recycle": 1800}  # main + heartbeat thread + slack; 30 min
# recycle stays under the idle cut-offs of proxies/firewalls (MySQL's own wait_timeout is 8 h).


def normalize_url(url_or_path: str) -> str:
    """Return the canonical storage URL for a URL or a file path.

    - ``study.db`` / ``./x/study.sqlite3`` / ``sqlite:///rel.db`` -> ``sqlite:////abs/path``
    - ``postgresql://`` or ``postgres://`` -> ``postgresql+psycopg://``; ``mysql://`` or
      ``mariadb://`` -> ``mysql+pymysql://`` (an explicit ``+driver`` is kept)
    - ``*.log`` / ``*.jsonl`` / ``journal://path`` -> ``journal:///abs/path``
    - ``grpc://host:port`` is kept.

    Idempotent. Raises StorageError (URL redacted) for unsupported or malformed input.
    """
    text = str(url_or_path).strip()
    if not text:
        raise StorageError(f"no storage URL given; use one of: {SUPPORTED_FORMS}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _from_path(text)
    base, _, driver = scheme.lower().partition("+")
    if base == "sqlite":
        return _sqlite(scheme.lower(), rest, text)
    if base in _DEFAULT_DRIVERS:
        return _server(base, driver, rest, text)
    if base == "journal" and rest.strip("/"):
        return "journal://" + _abspath(rest)
    if base == "grpc":
        return _grpc(text)
    raise StorageError(
        f"unsupported storage URL scheme {scheme[:20]!r} in {redact(text)}; use one of: {SUPPORTED_FORMS}"
    )


def url_kind(url: str) -> Kind:
    """The backend of a normalized URL."""
    return url.partition("://")[0].partition("+")[0]  # type: ignore[return-value]


def file_path(url: str) -> str | None:
    """The file behind a normalized SQLite or journal URL; None for in-memory SQLite and servers."""
    kind = url_kind(url)
    if kind == "journal":
        return url.removeprefix("journal://")
    if kind == "sqlite":
        path = url.partition("://")[2].partition("?")[0].removeprefix("/")
        return None if path in ("", ":memory:") or path.startswith("file:") else path
    return None


def is_memory(url: str) -> bool:
    """A normalized URL of an in-memory SQLite database (``sqlite:///:memory:``, ``sqlite://``)."""
    if url_kind(url) != "sqlite":
        return False
    path, _, query = url.partition("://")[2].partition("?")
    return path.removeprefix("/") in ("", ":memory:") or "mode=memory" in query


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a normalized RDB URL (options in the URL's query win)."""
    from sqlalchemy.engine import make_url

    if is_memory(url):  # SQLAlchemy's own pool for it: pool options would be refused
        return {}
    if url_kind(url) == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    query = make_url(url).query
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    if url_kind(url) == "postgresql" and "application_name" not in query:
        connect_args["application_name"] = "foldtune"  # visible in pg_stat_activity
    return {"pool_pre_ping": True, **POOL, "connect_args": connect_args}


def _from_path(text: str) -> str:
    lower = text.lower()
    if lower.endswith(_SQLITE_SUFFIXES):
        return "sqlite:///" + _abspath(text)
    if lower.endswith(_JOURNAL_SUFFIXES):
        return "journal://" + _abspath(text)
    if re.match(r"^[A-Za-z][\w+.-]*:", text):
        raise StorageError(
            f"malformed storage URL {redact(text)}: expected scheme://...; use one of: {SUPPORTED_FORMS}"
        )
    raise StorageError(
        f"cannot tell the storage type of {redact(text)}: a file must end in .db/.sqlite/.sqlite3 (SQLite) "
        f"or .log/.jsonl (journal); use one of: {SUPPORTED_FORMS}"
    )


def _sqlite(scheme: str, rest: str, text: str) -> str:
    path, _, query = rest.partition("?")
    if path in ("", "/:memory:") or path.startswith("/file:"):
        return text  # in-memory or SQLite URI mode: nothing to resolve
    if not path.startswith("/"):
        raise StorageError(
            f"malformed SQLite URL {redact(text)}: SQLite has no host; use sqlite:///relative/study.db "
            "or sqlite:////absolute/study.db"
        )
    return f"{scheme}:///{_abspath(path[1:])}" + (f"?{query}" if query else "")


def _server(base: str, driver: str, rest: str, text: str) -> str:
    from sqlalchemy.engine import make_url

    family = "mysql" if base in ("mysql", "mariadb") else "postgresql"
    drivername = f"{family}+{driver}" if driver else _DEFAULT_DRIVERS[base]
    expected = f"{base}://user:password@host:port/database"
    try:
        parsed = make_url(f"{drivername}://{rest}")
    except Exception:  # ArgumentError, or ValueError for a bad port; its text may hold password bits
        parsed = None
    if parsed is None or (parsed.host and "@" in parsed.host):
        raise StorageError(
            f"malformed storage URL {redact(text)}: expected {expected}; the port must be a number and "
            "special characters in user or password must be URL-encoded ('@' as %40, ':' as %3A, '/' as %2F)"
        )
    if not parsed.database:
        raise StorageError(f"no database name in {redact(text)}; expected {expected}")
    return parsed.render_as_string(hide_password=False)


def _grpc(text: str) -> str:
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None or parts.path.strip("/") or parts.query:
        raise StorageError(f"malformed gRPC storage URL {redact(text)}: expected grpc://host:port")
    return text.rstrip("/")


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
