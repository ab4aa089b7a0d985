"""The one user-facing error type of the CLI: printed as one line, exit code 2, no traceback."""

from __future__ import annotations

from storage import StorageError, redact
from training.config import ConfigError

__all__ = ["USER_ERRORS", "UserError", "short_error"]


class UserError(Exception):
    """Bad input or state the user can fix; the message says what, where, and how."""


# Everything the CLI reports as one line instead of a traceback.
USER_ERRORS = (UserError, ConfigError, StorageError)


def short_error(exc: BaseException, *, limit: int = 300) -> str:
    """An exception as one short line with any password masked, for logs and one-line errors."""
    return redact(" ".join(str(exc).split()))[:limit] or type(exc).__name__
