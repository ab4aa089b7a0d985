"""Security: no password in anything a run leaves behind, checkpoints that cannot run code, servers
that bind 127.0.0.1 unless told otherwise.

Covered elsewhere: the dashboard's pages and API (tests/test_dashboard.py), one-line errors with
the password masked (tests/test_bad_inputs.py, tests/test_storage.py), compose ports and the
unpublished database (tests/test_compose.py).
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import sqlalchemy as sa
import torch
import typer
from mlflow import MlflowClient
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from hpo.cli import app
from hpo.dashboard import make_server
from storage import normalize_url, redact, serve_proxy
from tests.databases import fresh_storage_url
from tests.datasets import make_csv_dataset
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HPO = str(Path(sys.executable).parent / "hpo")
PACKAGES = ("hpo", "training", "storage")
SECRET = "S3cr3t-pw_4nn"
SPACE = """
fixed: {model.name: test_resnet, data.image_size: 32, budget.max_epochs: 1, budget.batch_size: 16,
        budget.patience: null, augment.preset: none}
params:
  optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
starts: []
"""


# ------------------------------------------------------------------------------------- passwords


def leaks(text: str | bytes) -> list[str]:
    """The forms of SECRET (raw or URL-encoded) found in ``text``."""
    forms = {SECRET, quote(SECRET, safe="")}
    if isinstance(text, bytes):
        return [f for f in forms if f.encode() in text]
    return [f for f in forms if f in text]


def database_dump(url: str) -> str:
    """Every row of every table of the study database, as text."""
    engine = sa.create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = sa.MetaData()
            tables.reflect(conn)
            return json.dumps(
                {name: [list(r) for r in conn.execute(t.select())] for name, t in tables.tables.items()},
                default=str,
            )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_password_in_the_storage_url_appears_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """study create (with MLflow tracking) -> worker -> status with a password-bearing PostgreSQL URL.

    The local server trusts 127.0.0.1, so the password is carried everywhere and never checked:
    it could leak anywhere the URL travels. It must appear in no output, log line, database row,
    MLflow run, artifact or other file. The worker runs as a real process (its children log too);
    the other commands in-process.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    csv = make_csv_dataset(tmp_path / "data", classes=("a", "b", "c"), per_class=8, size=(32, 32))
    (tmp_path / "space.yaml").write_text(SPACE)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with fresh_storage_url("postgresql", tmp_path) as plain:
        url = make_url(plain).set(password=SECRET).render_as_string(hide_password=False)
        monkeypatch.setenv("HPO_STORAGE", url)  # --storage for study create, then the environment
        outputs = []

        def hpo(*args: str) -> str:
            result = CliRunner().invoke(app, list(args))
            assert result.exit_code == 0, (args, result.output)
            outputs.append((args[:3], result.stdout + result.stderr))
            return result.stdout

        hpo(
            "-v", "study", "create", "sec", "--space", "space.yaml", "--data", str(csv), "--folds", "2",
            "--pruner", "none", "--storage", url, "--tracking-uri", tracking, "--artifacts", "plots",
        )  # fmt: skip
        worker = subprocess.run(
            [HPO, "-v", "worker", "sec", "--devices", "cpu", "--n-trials", "1"],
            capture_output=True,
            text=True,
            timeout=600,
        )  # -v: the INFO logs too
        assert worker.returncode == 0, (worker.stdout, worker.stderr)
        outputs.append((["worker"], worker.stdout + worker.stderr))
        hpo("status", "sec")
        counts = json.loads(hpo("status", "sec", "--json"))["counts"]
        dump = database_dump(plain)
        trials = optuna.load_study(study_name="sec", storage=plain).trials

    for args, text in outputs:
        assert not leaks(text), (args, text)
    assert "postgres:***@" in outputs[0][1]  # the URL is shown, masked
    assert counts == {"complete": 1}

    assert not leaks(dump)
    assert "foldtune" in dump and trials[0].user_attrs["config"]["optim"]["lr"] > 0  # attrs are dumped

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("sec")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags.get("foldtune.kind", "trial") for r in runs} == {"study", "trial"}
    for run in runs:
        assert not leaks(json.dumps([run.data.params, run.data.tags, run.info.run_name]))
        assert run.data.tags["foldtune.storage"] == redact(normalize_url(url))
    assert any(r.data.params.get("optim.lr") for r in runs)  # the child run has its params

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.json", "study_spec.json", "mlflow.db"} <= names  # what was scanned: MLflow,
    assert any(p.is_relative_to(tmp_path / "plots") for p in files)  # the trial plots, the cache
    assert any(p.is_relative_to(tmp_path / ".hpo" / "cache") for p in files)
    assert [str(p) for p in files if leaks(p.read_bytes())] == []


# ------------------------------------------------------------------------------------- checkpoints


class _RunsCodeWhenUnpickled:
    """What a tampered checkpoint could hold: unpickling it calls ``marker.touch()``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.ones(2)}, "config": {"a": 1}})
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.ones(2))  # plain state loads

    marker = tmp_path / "code-ran"
    evil = tmp_path / "fold-0" / "last.pt"
    save_checkpoint(evil, {"model": {"w": torch.ones(2)}, "config": _RunsCodeWhenUnpickled(marker)})
    with pytest.raises(ConfigError) as info:
        load_checkpoint(evil)
    message = str(info.value)
    assert message.startswith(f"{evil}: refused to load") and "delete it" in message
    assert "\n" not in message and "weights_only=False" not in message  # never advise the unsafe way
    assert not marker.exists()


def unsafe_torch_loads(source: str, filename: str = "<source>") -> list[str]:
    """``torch.load`` calls (however imported) without ``weights_only=True``, as ``file:line``."""
    tree = ast.parse(source)
    aliases = {  # from torch import load [as x]; from torch.serialization import load
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization")
        for alias in node.names
        if alias.name == "load"
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = []
        while isinstance(func, ast.Attribute):
            dotted.insert(0, func.attr)
            func = func.value
        is_load = isinstance(func, ast.Name) and (
            (func.id == "torch" and dotted[-1:] == ["load"]) or (not dotted and func.id in aliases)
        )
        safe = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if is_load and not safe:
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_static_check_finds_unsafe_loads() -> None:
    unsafe = "import torch\nfrom torch import load as l\ntorch.load(f)\nl(f, weights_only=False)\n"
    unsafe += "torch.serialization.load(f, **kw)\n"
    assert unsafe_torch_loads(unsafe) == ["<source>:3", "<source>:4", "<source>:5"]
    assert unsafe_torch_loads("import torch\ntorch.load(f, map_location='cpu', weights_only=True)\n") == []


def test_every_torch_load_in_the_package_passes_weights_only_true() -> None:
    sources = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    calls = [p for p in sources if "torch.load(" in p.read_text()]
    assert calls, "no torch.load call found: the check would prove nothing"
    unsafe = [hit for p in sources for hit in unsafe_torch_loads(p.read_text(), str(p.relative_to(ROOT)))]
    assert unsafe == []


# ------------------------------------------------------------------------------------- servers


def _option_default(*path: str, option: str) -> object:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return next(p.default for p in command.params if p.name == option)


def test_dashboard_and_storage_proxy_bind_localhost_by_default(tmp_path: Path) -> None:
    assert _option_default("dashboard", option="host") == "127.0.0.1"
    assert _option_default("storage", "serve", option="host") == "127.0.0.1"
    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_proxy).parameters["host"].default == "127.0.0.1"
    server = make_server(f"sqlite:///{tmp_path / 'study.db'}", port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
