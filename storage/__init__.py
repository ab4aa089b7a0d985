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

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
