"""One user-facing error type, and the translation of driver errors into it."""

from __future__ import annotations

import re

from storage._redact import redact, scrub

__all__ = ["StorageError", "driver_reason", "is_connection_error", "translate"]


class StorageError(Exception):
    """A storage problem the user can fix.

    The message is one line: what is wrong, where (the URL, always redacted) and how to fix it.
    Driver errors are never chained (``__cause__``/``__context__`` stay empty) because their text
    or attributes may carry connection parameters; the useful part of the driver's message is
    scrubbed of the password and folded into this message instead.
    """


# (what the driver says, lower-cased) -> our diagnosis. First match wins.
_AUTH = re.compile(r"authentication failed|access denied|no password supplied|role \"[^\"]*\" does not exist")
_NO_DATABASE = re.compile(r"unknown database|database \"[^\"]*\" does not exist")
_UNREACHABLE = (
    "connection refused", "could not connect", "can't connect", "timeout", "timed out",
    "could not translate host name", "failed to resolve host", "name or service not known",
    "no route to host", "network is unreachable", "server closed the connection", "lost connection",
)  # fmt: skip
# A connection that broke or could not be made, not a request the server refused: worth retrying
# once the server is back (PostgreSQL "terminating connection due to administrator command",
# "the database system is starting up"; MySQL "server has gone away").
_CONNECTION_LOST = (
    *_UNREACHABLE, "terminating connection", "the database system is", "consuming input failed",
    "connection is closed", "connection reset", "broken pipe", "gone away",
)  # fmt: skip


def translate(exc: BaseException, url: str) -> StorageError:
    """Turn any exception raised while using the storage at ``url`` into a StorageError.

    Raise the result outside the ``except`` block that caught ``exc`` (or ``from None``) so the
    driver exception does not travel along as ``__context__``.
    """
    if isinstance(exc, StorageError):
        return exc
    where = redact(url)
    reason = driver_reason(exc, url)
    low = reason.lower()
    if _AUTH.search(low):
        return StorageError(
            f"wrong user name or password for {where} ({reason}); fix the credentials in the URL "
            "and URL-encode special characters in the password (e.g. '@' as %40, ':' as %3A, '/' as %2F)"
        )
    if _NO_DATABASE.search(low):
        return StorageError(f"database missing at {where} ({reason}); {_create_database_hint(url)}")
    if "unable to open database file" in low:
        return StorageError(
            f"cannot open the SQLite file at {where} ({reason}); check that the path is a writable "
            "file on a local disk (SQLite does not work on network file systems)"
        )
    if "too many clients" in low or "too many connections" in low:
        return StorageError(
            f"the database server at {where} refused another connection ({reason}); each worker "
            "process holds up to 3: raise max_connections, run fewer workers, or use `hpo storage serve`"
        )
    if any(s in low for s in _UNREACHABLE) and not url.startswith("sqlite"):  # SQLite has no server
        return StorageError(
            f"cannot reach the database server at {where} ({reason}); check host and port, that the "
            "server is running and that no firewall blocks the connection"
        )
    return StorageError(f"storage error at {where}: {type(exc).__name__}: {reason}")


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (an Optuna, SQLAlchemy or driver error) is a lost or refused connection."""
    if isinstance(exc, StorageError):  # already diagnosed (e.g. a lock wait that timed out)
        return False
    cause: BaseException | None = exc
    for _ in range(8):  # Optuna -> SQLAlchemy -> driver; bounded, chains can loop
        if cause is None:
            break
        if getattr(cause, "connection_invalidated", False):  # SQLAlchemy recognized a disconnect
            return True
        cause = cause.__cause__ or cause.__context__
    low = driver_reason(exc, "").lower()
    return any(s in low for s in _CONNECTION_LOST)


def driver_reason(exc: BaseException, url: str) -> str:
    """The driver's own message for ``exc`` on one line, without the password of ``url``."""
    # Optuna's StorageInternalError wraps SQLAlchemy's error, which wraps the driver's.
    while type(exc).__name__ == "StorageInternalError" and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy DBAPIError wraps the driver error
    args = getattr(orig, "args", ())
    # pymysql: OperationalError(1045, "Access denied ...") - keep the text, the code is in it anyway.
    text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(orig)
    text = re.sub(r"\(Background on this error at: [^)]*\)", "", text)
    text = " ".join(text.split())  # one line
    text = text.removeprefix("connection failed: ")
    return scrub(text, url)[:500] or type(orig).__name__


def _create_database_hint(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        name, backend = parsed.database or "DBNAME", parsed.get_backend_name()
    except Exception:
        return "create the database first (CREATE DATABASE ...), then retry"
    if backend == "postgresql":
        return f'create it first: CREATE DATABASE "{name}"; (or `createdb {name}`) as a privileged user'
    return f"create it first: CREATE DATABASE `{name}`; as a privileged user"
