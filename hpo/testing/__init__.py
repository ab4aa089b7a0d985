"""What the test suite and the benchmarks share: throw-away storages on every backend.

Kept in the package, as Optuna keeps ``optuna.testing``, so that benchmarks need nothing from
``tests/`` and both build their storages one way.
"""

from hpo.testing._databases import (
    ADMIN_URLS,
    RDB_MODES,
    SERVER_MODES,
    STORAGE_MODES,
    ServerUnavailable,
    admin_execute,
    database_url,
    fresh_storage_url,
    mariadb_user,
    require_server,
    unique_name,
)

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
