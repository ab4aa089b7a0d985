"""A tiny Hugging Face Hub for tests: 127.0.0.1, a free port, files served the way huggingface_hub
downloads them (HEAD and GET on ``/{repo}/resolve/{revision}/{filename}`` with ETag, X-Repo-Commit
and Content-Length). Point ``HF_ENDPOINT`` at its URL."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import free_port

__all__ = ["Hub", "hub_server"]

COMMIT = "0" * 39 + "1"  # the one revision every repo of this hub has


@dataclass
class Hub:
    url: str
    files: dict[tuple[str, str], bytes]  # (repo id, filename) -> content
    # (method, path) of each request for a file, in order; huggingface_hub's other calls (such as
    # its daily /api/agent-harnesses) get a 404 and are not counted
    requests: list[tuple[str, str]] = field(default_factory=list)

    def downloads(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET"]


@contextlib.contextmanager
def hub_server(files: dict[tuple[str, str], bytes]) -> Iterator[Hub]:
    """Serve ``files`` until the block ends."""
    port = free_port()
    hub = Hub(f"http://127.0.0.1:{port}", files)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            repo, sep, rest = self.path.lstrip("/").partition("/resolve/")
            _, _, filename = rest.partition("/")
            if sep:
                with lock:
                    hub.requests.append((self.command, self.path))
            content = hub.files.get((repo, filename)) if sep else None
            if content is None:
                known = any(r == repo for r, _ in hub.files)
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound" if known else "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if body:
                self.wfile.write(content)

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
