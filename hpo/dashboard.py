"""optuna-dashboard on a study storage, with the studies' artifact stores so trial plots show up.

    >>> server = make_server("sqlite:///.hpo/foldtune.db", host="127.0.0.1", port=8080)  # doctest: +SKIP
    >>> server.url                                                                       # doctest: +SKIP
    'http://127.0.0.1:8080/dashboard'
    >>> serve(server)  # blocks until Ctrl-C or SIGTERM                                   # doctest: +SKIP

The dashboard only reads the study while workers write to it (SQLite runs in WAL mode, so its reads
never block a worker's write), and it has no login: it binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import BinaryIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server as _wsgiref_server

from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage

from hpo.errors import UserError
from hpo.study import DEFAULT_ARTIFACTS, artifact_location
from storage import artifact_dir, open_artifact_store, open_storage, redact

__all__ = ["DashboardServer", "StudyArtifactStores", "make_server", "serve", "study_path"]

log = logging.getLogger(__name__)

RESCAN_SECONDS = 2.0  # an unknown artifact id re-reads the studies' artifact directories at most this often


class StudyArtifactStores:
    """One Optuna artifact store over the artifact directories of every study in a storage.

    Studies may keep their plots in different directories (each `hpo study create` records its own),
    while the dashboard takes one store: reads look in each directory, and an id found in none makes
    it re-read the studies' attrs (a study created after the dashboard started). With ``pinned``
    only that directory is used. Uploads from the dashboard UI go to the first directory.
    """

    def __init__(self, storage: BaseStorage, *, pinned: str | Path | None = None) -> None:
        self._storage = storage
        self._pinned = str(artifact_dir(pinned)) if pinned is not None else None
        self._lock = threading.Lock()
        self._stores: dict[str, object] = {}
        self._scanned_at = 0.0
        self._rescan()

    @property
    def directories(self) -> list[str]:
        return list(self._stores)

    def _rescan(self) -> None:
        with self._lock:
            if self._pinned is not None:
                wanted = [self._pinned]
            else:
                found = (artifact_location(s) for s in self._storage.get_all_studies())
                wanted = list(dict.fromkeys(a for a in found if isinstance(a, str))) or [
                    str(artifact_dir(DEFAULT_ARTIFACTS))
                ]
            for location in wanted:
                if location not in self._stores:
                    try:
                        self._stores[location] = open_artifact_store(location)
                    except Exception as exc:  # one unreachable directory must not hide the others
                        log.warning("artifact directory skipped: %s", exc)
            self._scanned_at = time.monotonic()

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for attempt in range(2):
            for store in list(self._stores.values()):
                try:
                    return store.open_reader(artifact_id)  # type: ignore[attr-defined]
                except ArtifactNotFound:
                    continue
            if attempt == 0 and time.monotonic() - self._scanned_at >= RESCAN_SECONDS:
                self._rescan()
            else:
                break
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of {', '.join(self._stores)}")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if not self._stores:
            raise ArtifactNotFound("no artifact directory is reachable")
        next(iter(self._stores.values())).write(artifact_id, content_body)  # type: ignore[attr-defined]

    def remove(self, artifact_id: str) -> None:
        for store in list(self._stores.values()):
            try:
                return store.remove(artifact_id)  # type: ignore[attr-defined]
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} not found")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request: debug only
        log.debug("%s - %s", self.address_string(), format % args)


class DashboardServer(ThreadingMixIn, WSGIServer):
    """wsgiref with a thread per request (the dashboard polls while pages load artifacts)."""

    daemon_threads = True  # Ctrl-C does not wait for open browser connections
    url = ""  # http://host:port/dashboard, set by make_server
    storage: BaseStorage


class _DashboardServer6(DashboardServer):
    address_family = socket.AF_INET6


def make_server(
    url: str, *, host: str = "127.0.0.1", port: int = 8080, artifacts: str | Path | None = None
) -> DashboardServer:
    """Bind optuna-dashboard for the storage at ``url``; port 0 picks a free one (see ``server.url``).

    ``artifacts`` pins one artifact directory; by default each study's own is used.

    Raises:
        UserError: the address cannot be bound (port in use, unknown host).
        StorageError: the storage cannot be opened (URL redacted).
    """
    import optuna_dashboard

    storage = open_storage(url, heartbeat_interval=None)  # it runs no trials: no heartbeat thread
    app = optuna_dashboard.wsgi(storage, artifact_store=StudyArtifactStores(storage, pinned=artifacts))
    server_class = _DashboardServer6 if ":" in host else DashboardServer
    try:
        server = _wsgiref_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(
            f"cannot serve the dashboard on {host}:{port} ({reason}); pass another --port or --host"
        ) from None
    bound_port = server.server_address[1]
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    server.url = f"http://{f'[{shown}]' if ':' in shown else shown}:{bound_port}/dashboard"
    server.storage = storage
    log.info("optuna-dashboard for %s on %s", redact(url), server.url)
    return server


def study_path(storage: BaseStorage, name: str) -> str:
    """``/studies/<id>``: the study's page below the dashboard URL; UserError if there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        names = ", ".join(sorted(s.study_name for s in storage.get_all_studies())[:10]) or "none"
        raise UserError(f"study '{name}' not found in this storage (studies: {names})") from None
    return f"/studies/{study_id}"


def serve(server: DashboardServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the socket."""

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        log.info("dashboard stopped")
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
