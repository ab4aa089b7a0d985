"""A PostgreSQL server of the test's own, for tests that stop and restart the database.

The shared server on 5432 must never go down under other tests, so outage tests run
``initdb`` + ``pg_ctl`` on a free port with a throw-away data directory, trust auth on
127.0.0.1 and no Unix socket outside that directory::

    with private_postgres() as pg:
        storage = open_storage(pg.url)
        pg.stop()    # pg_ctl stop -m fast: sessions are cut, like a server restart
        pg.start()   # same port, same data

initdb refuses to run as root: as root, the server runs as the ``postgres`` user. Skipped (or
failed under FOLDTUNE_TEST_REQUIRE_SERVERS=1) when the server binaries are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

__all__ = ["PrivatePostgres", "private_postgres"]

_OS_USER = "postgres"  # who runs the server when the tests run as root


class PrivatePostgres:
    """One initialized data directory and the port its server listens on."""

    def __init__(self, bindir: Path, data_dir: Path, port: int) -> None:
        self.bindir, self.data_dir, self.port = bindir, data_dir, port

    def url(self, password: str | None = None) -> str:
        """The ``postgres`` database as the superuser; with trust auth any ``password`` is accepted."""
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg://postgres{secret}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}"
        try:
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.data_dir / "server.log"), "-o", options)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nserver.log ends:\n{self.log()[-2000:]}") from None

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (their transactions roll back), as a restart does."""
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _pg_ctl(self, *args: str) -> None:
        _run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh, started server; stopped and deleted afterwards."""
    bindir = _bindir()
    data_dir = Path(tempfile.mkdtemp(prefix="ft_pg_"))  # under /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        shutil.chown(data_dir, _OS_USER, _OS_USER)
    server = PrivatePostgres(bindir, data_dir, free_port())
    try:
        _run([str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--no-sync"])
        server.start()
        yield server
    finally:
        if (data_dir / "postmaster.pid").exists():
            server.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    message = "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql"
    if os.environ.get("FOLDTUNE_TEST_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _run(command: list[str]) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", _OS_USER, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
