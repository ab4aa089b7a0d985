"""Throw-away storages for tests, every backend for every test (the pattern of
``optuna/testing/storages.py``); the storages themselves come from :mod:`hpo.testing`::

    from tests import databases
    from tests.databases import STORAGE_MODES

    storage_url = databases.storage_url  # makes the fixture visible in this module

    @pytest.mark.parametrize("storage_mode", STORAGE_MODES)
    def test_something(storage_url: str) -> None:
        storage = open_storage(storage_url)

or without pytest fixtures: ``with fresh_storage_url("postgresql") as url: ...``. An unreachable
server skips the test with the reason, or fails it with FOLDTUNE_TEST_REQUIRE_SERVERS=1 (for CI,
where the servers must be there): see ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hpo.testing import (
    ADMIN_URLS,
    RDB_MODES,
    SERVER_MODES,
    STORAGE_MODES,
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
    "admin_execute",
    "database_url",
    "fresh_storage_url",
    "mariadb_user",
    "require_server",
    "storage_url",
    "unique_name",
]


@pytest.fixture
def storage_url(storage_mode: str, tmp_path: Path) -> Iterator[str]:
    """A fresh storage URL for the parametrized ``storage_mode``."""
    with fresh_storage_url(storage_mode, tmp_path) as url:
        yield url
