"""`hpo doctor`: versions, devices, storage and MLflow reachability against real servers and files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from tests.databases import database_url, fresh_storage_url
from tests.datasets import make_imagefolder

runner = CliRunner()
CLOSED = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once


def doctor(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["doctor", *args, "--json"])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def check(payload: dict, name: str) -> dict:
    return next(c for c in payload["checks"] if c["name"] == name)


def test_defaults_report_versions_devices_and_touch_nothing(workdir: Path) -> None:
    code, payload = doctor()
    assert code == 0 and payload["ok"] is True
    for name in ("torch", "optuna", "mlflow", "timm", "foldtune"):
        assert payload["versions"][name] == metadata.version(name)
    devices = payload["devices"]
    assert devices["cpu_count"] >= 1 and isinstance(devices["gpus"], list)
    assert devices["cuda_available"] or devices["gpus"] == []
    storage = check(payload, "storage")
    assert storage["ok"] and "does not exist yet" in storage["detail"]
    assert storage["target"].endswith(".hpo/foldtune.db")
    assert check(payload, "mlflow")["ok"]
    assert not (workdir / ".hpo").exists()  # a diagnosis creates no files


def test_sqlite_storage_with_a_study_is_reachable(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'studies.db'}"
    optuna.create_study(study_name="alpha", storage=url)
    code, payload = doctor("--storage", url)
    storage = check(payload, "storage")
    assert code == 0 and storage["ok"]
    assert "1 study" in storage["detail"] and "alpha" in storage["detail"]


def test_postgres_storage_is_reachable(workdir: Path) -> None:
    with fresh_storage_url("postgresql") as url:
        code, payload = doctor("--storage", url)
    assert code == 0 and check(payload, "storage")["ok"], payload


def test_unreachable_storage_fails_with_the_password_hidden(workdir: Path) -> None:
    url = f"postgresql://hpo:s3cret-pw@{CLOSED}/foldtune"
    result = runner.invoke(app, ["doctor", "--storage", url])
    assert result.exit_code == 1
    assert "FAILED storage" in " ".join(result.stdout.split())
    assert "s3cret-pw" not in result.output and "***" in result.output


def test_mlflow_http_server_is_reachable(workdir: Path) -> None:
    """A real `mlflow server` (SQLite backend) on a free local port answers /health."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (workdir / "mlflow.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
         "--artifacts-destination", str(workdir / "mlartifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: uvicorn too
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180  # the server imports a lot; a busy 2-core machine is slow
        while True:
            assert server.poll() is None, (workdir / "mlflow.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                assert time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        code, payload = doctor("--tracking-uri", url)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    mlflow = check(payload, "mlflow")
    assert code == 0 and mlflow["ok"] and mlflow["target"] == url
    assert "answers /health" in mlflow["detail"]


def test_mlflow_http_unreachable_fails(workdir: Path) -> None:
    code, payload = doctor("--tracking-uri", f"http://{CLOSED}")
    mlflow = check(payload, "mlflow")
    assert code == 1 and payload["ok"] is False and not mlflow["ok"]
    assert "unreachable" in mlflow["detail"]


def test_mlflow_database_backend_is_checked(workdir: Path) -> None:
    """A database tracking URI is connected to: the real PostgreSQL, then a wrong password."""
    with fresh_storage_url("postgresql") as url:
        code, payload = doctor("--tracking-uri", url)
        assert code == 0 and check(payload, "mlflow")["ok"], payload
        wrong = database_url(
            "postgresql", url.rsplit("/", 1)[1], password="not-the-password", host="127.0.0.1", port=1
        )
        code, payload = doctor("--tracking-uri", wrong)
    mlflow = check(payload, "mlflow")
    assert code == 1 and not mlflow["ok"]
    assert "not-the-password" not in json.dumps(payload)


def test_env_tracking_uri_is_used(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{CLOSED}")
    code, payload = doctor()
    assert code == 1 and check(payload, "mlflow")["target"] == f"http://{CLOSED}"


def test_data_option_runs_the_data_check(workdir: Path) -> None:
    folder = make_imagefolder(workdir / "data", per_class=5, size=(24, 24))
    code, payload = doctor("--data", str(folder))
    assert code == 0 and "15 images, 3 classes: 0 error(s)" in check(payload, "data")["detail"]
    (folder / "cat" / "000.png").write_bytes(b"")
    code, payload = doctor("--data", str(folder))
    assert code == 1 and not check(payload, "data")["ok"]
    assert "hpo data check" in check(payload, "data")["detail"]


def test_text_output_names_every_check(workdir: Path) -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "ok storage" in out and "ok mlflow" in out and "torch" in out


def test_mlflow_server_behind_basic_auth_is_reachable_with_its_credentials(workdir: Path) -> None:
    """As MLflow's client does, doctor sends the URI's user and password as basic auth."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health" and self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        code, result = doctor("--tracking-uri", f"http://alice:s3cret-pw@127.0.0.1:{port}")
        (check,) = [c for c in result["checks"] if c["name"] == "mlflow"]
        assert code == 0 and check["ok"], check
        assert check["target"] == f"http://alice:***@127.0.0.1:{port}"
        code, result = doctor("--tracking-uri", f"http://alice:wrong@127.0.0.1:{port}")
        (check,) = [c for c in result["checks"] if c["name"] == "mlflow"]
        assert code == 1 and not check["ok"] and "HTTP 401" in check["detail"]
        assert "s3cret-pw" not in json.dumps(result) and "wrong" not in json.dumps(result)
    finally:
        server.shutdown()
