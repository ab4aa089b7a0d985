"""The one user-facing error type of the CLI: printed as one line, exit code 2, no traceback."""

from __future__ import annotations

from storage import StorageError
from training.config import ConfigError

__all__ = ["USER_ERRORS", "UserError"]


class UserError(Exception):
    """Bad input or state the user can fix; the message says what, where, and how."""


# Everything the CLI reports as one line instead of a traceback.
USER_ERRORS = (UserError, ConfigError, StorageError)
