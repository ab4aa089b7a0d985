"""Storage URLs -> Optuna storages (RDB, SQLite, journal file, gRPC proxy), artifact stores, locks
and redaction.

The public face of ``storage``; the modules behind it are private and may move.

    >>> from storage import open_storage, storage_lock
    >>> storage = open_storage("postgresql://hpo:secret@db:5432/hpo")   # doctest: +SKIP
    >>> with storage_lock("postgresql://hpo:secret@db:5432/hpo"):       # doctest: +SKIP
    ...     trial = study.ask()

Every user-facing failure is a ``StorageError`` whose one-line message shows the URL redacted.
The names load on first use, so ``from storage import redact`` does not import Optuna or SQLAlchemy
(the CLI starts without them).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # public name -> the private module that defines it
    "artifact_dir": "storage._artifacts",
    "open_artifact_store": "storage._artifacts",
    "StorageError": "storage._errors",
    "storage_lock": "storage._lock",
    "open_storage": "storage._open",
    "serve_proxy": "storage._open",
    "upgrade_schema": "storage._open",
    "redact": "storage._redact",
    "SUPPORTED_FORMS": "storage._urls",
    "file_path": "storage._urls",
    "normalize_url": "storage._urls",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
