"""A real ``mlflow server`` for tests: 127.0.0.1, a free port, SQLite backend, temp artifact root."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import free_port

__all__ = ["mlflow_server"]

MLFLOW = str(Path(sys.executable).parent / "mlflow")
START_TIMEOUT_S = 240  # the server imports a lot; on a busy 2-core machine that takes a while


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """Start the server, wait for ``/health``, yield its URL; stop it (and only it) afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            MLFLOW,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopping it reaches uvicorn's children too
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}): {_tail(root)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"mlflow server not up after {START_TIMEOUT_S} s: {_tail(root)}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _tail(root: Path) -> str:
    return (root / "server.log").read_text()[-2000:]
