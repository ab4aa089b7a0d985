"""Storage URLs -> Optuna storages (RDB, SQLite, journal file, gRPC proxy), artifact stores, locks
and redaction.

The public face of ``storage``; the modules behind it are private and may move.

    >>> from storage import open_storage, storage_lock
    >>> storage = open_storage("postgresql://hpo:secret@db:5432/hpo")   # doctest: +SKIP
    >>> with storage_lock("postgresql://hpo:secret@db:5432/hpo"):       # doctest: +SKIP
    ...     trial = study.ask()

Every user-facing failure is a ``StorageError`` whose one-line message shows the URL redacted.
"""

from __future__ import annotations

from storage._artifacts import artifact_dir, open_artifact_store
from storage._errors import StorageError
from storage._lock import storage_lock
from storage._open import open_storage, serve_proxy, upgrade_schema
from storage._redact import redact
from storage._urls import SUPPORTED_FORMS, file_path, normalize_url

__all__ = [
    "SUPPORTED_FORMS",
    "StorageError",
    "artifact_dir",
    "file_path",
    "normalize_url",
    "open_artifact_store",
    "open_storage",
    "redact",
    "serve_proxy",
    "storage_lock",
    "upgrade_schema",
]
