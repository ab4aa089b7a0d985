"""`hpo dashboard` for real: a study trained by real workers, optuna-dashboard in a headless Chromium,
trial plots served from the artifact store, no secret on any page, and no lock errors while workers
write under a polling dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from PIL import Image
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from hpo.cli import app
from hpo.dashboard import make_server
from hpo.records import study_record, unbudgeted
from hpo.study import create_study, load_spec
from hpo.workers import Objective, observers_for
from storage import open_artifact_store, open_storage
from tests.databases import fresh_storage_url
from tests.datasets import make_csv_dataset
from tests.helpers import HPO, run_hpo

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLOTS = {"curves.png", "confusion.png", "fold1_curves.png", "fold2_curves.png"}
SPACE = """
fixed:
  model.name: test_resnet
  data.image_size: 32
  budget.max_epochs: 1
  budget.batch_size: 32
  budget.patience: null
  augment.preset: none
params:
  optim.name: {type: categorical, choices: [sgd, adamw]}
  optim.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
starts: []
"""


def make_dataset(workdir: Path) -> tuple[Path, Path]:
    csv = make_csv_dataset(workdir / "data", classes=("a", "b", "c", "d"), per_class=12, size=(32, 32))
    space = workdir / "space.yaml"
    space.write_text(SPACE)
    return csv, space


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Study 'demo' in SQLite with 2 complete trials, made by the CLI as a user would."""
    workdir = tmp_path_factory.mktemp("demo")
    csv, space = make_dataset(workdir)
    url = f"sqlite:///{workdir / 'studies.db'}"
    plots = workdir / "plots"
    run_hpo(
        "study",
        "create",
        "demo",
        "--space",
        str(space),
        "--data",
        str(csv),
        "--storage",
        url,
        "--folds",
        "2",
        "--artifacts",
        str(plots),
        "--pruner",
        "none",
        cwd=workdir,
    )  # fmt: skip  (both trials complete: each has its confusion matrix)
    run_hpo("worker", "demo", "--storage", url, "--devices", "cpu", "--n-trials", "2", cwd=workdir)
    study = optuna.load_study(study_name="demo", storage=open_storage(url))
    return {"url": url, "plots": plots, "study": study, "workdir": workdir}


class Dashboard:
    """`hpo dashboard ... --port 0` running in a subprocess; stderr goes to a file (never a full pipe)."""

    def __init__(self, proc: subprocess.Popen, url: str, printed: str, err_path: Path) -> None:
        self.proc, self.url, self.printed, self.err_path = proc, url, printed, err_path
        self.root = url.split("/dashboard")[0]

    def output(self) -> str:
        """Everything it printed on stdout and stderr (complete once it has stopped)."""
        rest = self.proc.stdout.read() if self.proc.poll() is not None and self.proc.stdout else ""
        return self.printed + rest + self.err_path.read_text()


@contextmanager
def dashboard_process(*args: str, cwd: Path) -> Iterator[Dashboard]:
    err_path = cwd / f"dashboard-{time.monotonic_ns()}.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [HPO, "dashboard", *args, "--port", "0"], cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        printed = ""
        assert proc.stdout is not None
        for line in proc.stdout:  # the URL line comes once the socket is bound
            printed += line
            if match := re.search(r"open (http://\S+)", line):
                yield Dashboard(proc, match.group(1), printed, err_path)
                break
        else:
            pytest.fail(f"hpo dashboard printed no URL: {printed} {err_path.read_text()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def chromium_or_skip() -> str:
    """The Debian chromium + Python playwright; in CI (CI or FOLDTUNE_TEST_REQUIRE_BROWSER set) their
    absence fails the test instead of skipping it."""
    path = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package"
    else:
        missing = "" if path else "the chromium browser"
    if not missing:
        assert path is not None
        return path
    if os.environ.get("CI") or os.environ.get("FOLDTUNE_TEST_REQUIRE_BROWSER"):
        pytest.fail(f"{missing} is missing in CI; .ci/run installs it")
    pytest.skip(f"{missing} is not installed (apt-get install chromium; pip install playwright)")


def js_number(value: float) -> str:
    """How the dashboard (JavaScript's Number#toString) prints a float."""
    return str(int(value)) if value.is_integer() else repr(value)


# ------------------------------------------------------------------------------------------ artifacts


def test_every_trial_uploads_its_curves_and_its_out_of_fold_confusion_matrix(demo: dict) -> None:
    study: optuna.Study = demo["study"]
    assert study.user_attrs["artifact_store"] == str(demo["plots"])
    store = open_artifact_store(demo["plots"])
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    for trial in trials:
        metas = get_all_artifact_meta(trial, storage=study._storage)
        assert {m.filename for m in metas} == PLOTS
        for meta in metas:
            assert meta.mimetype == "image/png"
            with store.open_reader(meta.artifact_id) as f, Image.open(f) as image:
                assert image.format == "PNG"
                assert image.width >= 300 and image.height >= 300
                assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10  # not blank


def test_confusion_matrices_name_the_mask_layouts_classes(tmp_path: Path) -> None:
    import numpy as np

    from hpo.tracking import plot_confusion
    from tests.datasets import make_mask_tree
    from training.data import load_table

    table = load_table(make_mask_tree(tmp_path / "mask", n_people=6, size=(32, 32), with_eval=False))
    figure = plot_confusion(table.labels, table.labels, table.class_names, title="oof")
    ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert ticks[0] == "0 wear/male/<30" and ticks[10] == "10 incorrect/female/30-59"  # whole, not cut
    assert table.classes[10] == "10"  # the labels themselves stay the competition's
    csv_table = load_table(make_csv_dataset(tmp_path / "csv", classes=("a", "b"), per_class=4))
    assert csv_table.class_names == ("a", "b") and len(np.unique(csv_table.labels)) == 2


def test_a_broken_artifact_store_never_fails_a_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    csv, space = make_dataset(tmp_path)
    plots = tmp_path / "plots"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = create_study("broken", space=space, data=str(csv), storage=url, folds=2, artifacts=plots)
    observer = observers_for(study)
    assert [type(o).__name__ for o in observer.observers] == ["TrialFigures"]
    plots.rmdir()
    plots.write_text("a file where the artifact directory was")  # every upload now fails
    objective = Objective(
        load_spec(study), device="cpu", checkpoint_root=tmp_path / "ckpt", observer=observer
    )
    study.optimize(objective, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert get_all_artifact_meta(study.trials[0], storage=study._storage) == []
    assert "ArtifactSink: fold1_curves.png of trial 0 not stored (ignored)" in caplog.text
    # A worker starting now cannot create the directory: it trains without plots.
    assert observers_for(study).observers == []


def test_study_create_keeps_one_artifact_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    csv, space = make_dataset(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    runner = CliRunner()
    args = ["study", "create", "s", "--space", str(space), "--data", str(csv), "--storage", url]
    assert runner.invoke(app, args).exit_code == 0
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    assert study.user_attrs["artifact_store"] == str(tmp_path / ".hpo" / "artifacts")  # absolute
    assert runner.invoke(app, args).exit_code == 0  # reuse without --artifacts: fine
    clash = runner.invoke(app, [*args, "--artifacts", "elsewhere"])
    assert clash.exit_code == 2
    assert "already keeps its artifacts in" in clash.output
    assert len(clash.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ browser


@pytest.mark.slow
def test_dashboard_in_a_real_browser(demo: dict, tmp_path: Path) -> None:
    """Study list -> study page (best value, trial count) -> a trial's plots, then a screenshot."""
    from playwright.sync_api import expect, sync_playwright

    chromium = chromium_or_skip()
    study: optuna.Study = demo["study"]
    best = study.best_trial
    # Started elsewhere: the study's own (absolute) artifact directory is found through its attrs.
    with dashboard_process("demo", "--storage", demo["url"], cwd=tmp_path) as dashboard:
        url = dashboard.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/dashboard/studies/\d+", url), url
        root = dashboard.root
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{root}/dashboard")
                expect(page.get_by_role("heading", name=re.compile(r"^\d+\. demo$"))).to_be_visible(
                    timeout=30_000
                )

                page.goto(url)
                card = page.locator(".MuiCard-root", has_text=f"Best Trial (number={best.number})")
                expect(card).to_be_visible(timeout=30_000)
                expect(card.locator("h3")).to_have_text(js_number(best.value))

                page.goto(f"{url}/trials?numbers={best.number}")
                expect(page.get_by_text("2 Trials", exact=True)).to_be_visible(timeout=30_000)
                expect(page.get_by_text(f"Trial {best.number} (trial_id=")).to_be_visible()
                for name in sorted(PLOTS):
                    expect(page.get_by_text(name, exact=True)).to_be_visible(timeout=30_000)
                thumbnail = page.locator("img[src*='/artifacts/']").first
                thumbnail.scroll_into_view_if_needed()
                page.wait_for_function(
                    "() => [...document.querySelectorAll(\"img[src*='/artifacts/']\")]"
                    ".every(img => img.complete && img.naturalWidth > 100)",
                    timeout=30_000,
                )
                shot = tmp_path / "dashboard-trial.png"
                page.screenshot(path=str(shot))
            finally:
                browser.close()
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(image.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50


# ------------------------------------------------------------------------------------------ server


def test_dashboard_api_and_artifacts_over_http(demo: dict) -> None:
    server = make_server(demo["url"], host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        root = server.url.removesuffix("/dashboard")
        status, body = get(f"{root}/api/studies")
        summaries = json.loads(body)["study_summaries"]
        assert status == 200 and [s["study_name"] for s in summaries] == ["demo"]
        study_id = summaries[0]["study_id"]
        status, body = get(f"{root}/api/studies/{study_id}")
        detail = json.loads(body)
        assert detail["objective_names"] == ["macro_f1"]  # named, not "Objective 0"
        assert len(detail["trials"]) == 2
        trial = detail["trials"][0]
        assert {a["filename"] for a in trial["artifacts"]} == PLOTS
        artifact = trial["artifacts"][0]
        status, png = get(f"{root}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}")
        assert status == 200 and png.startswith(b"\x89PNG")
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_cli_errors_are_one_line(demo: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["dashboard", "nope", "--storage", demo["url"], "--port", "0"])
    assert missing.exit_code == 2
    assert "study 'nope' not found" in missing.output and "demo" in missing.output
    assert len(missing.output.strip().splitlines()) == 1

    taken = make_server(demo["url"], host="127.0.0.1", port=0)  # holds a port
    try:
        port = str(taken.server_address[1])
        busy = runner.invoke(app, ["dashboard", "--storage", demo["url"], "--port", port])
    finally:
        taken.server_close()
    assert busy.exit_code == 2
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in busy.output
    assert len(busy.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_no_password_reaches_attrs_pages_or_output(tmp_path: Path, monkeypatch) -> None:
    """A storage URL with a password: not in any study/trial attr, dashboard response, or CLI output."""
    monkeypatch.chdir(tmp_path)
    secret = "Sup3r-Secret-pw"
    csv, space = make_dataset(tmp_path)
    with fresh_storage_url("postgresql", tmp_path) as plain:
        # The local server trusts 127.0.0.1, so the password is accepted and carried in the URL.
        url = make_url(plain).set(password=secret).render_as_string(hide_password=False)
        study, _ = create_study("secret", space=space, data=str(csv), storage=url, folds=2)
        objective = Objective(
            load_spec(study), device="cpu", checkpoint_root=tmp_path / "ckpt", observer=observers_for(study)
        )
        study.optimize(objective, n_trials=1)
        assert study.trials[0].state == TrialState.COMPLETE
        frozen = study._storage.get_all_studies()[0]
        attrs = [frozen.user_attrs, frozen.system_attrs]
        attrs += [[t.user_attrs, t.system_attrs] for t in study.get_trials()]
        assert secret not in json.dumps(attrs, default=str)

        with dashboard_process("secret", "--storage", url, cwd=tmp_path) as dashboard:
            study_id = dashboard.url.rsplit("/", 1)[1]
            paths = ("/api/studies", f"/api/studies/{study_id}", f"/csv/{study_id}")
            pages = [get(dashboard.root + path)[1] for path in paths]
        printed = dashboard.output()
        assert all(secret.encode() not in body for body in pages)
        assert b'"secret"' in pages[0]  # the study itself is there
        assert "postgres:***@" in printed and secret not in printed


# ------------------------------------------------------------------------------------------ reliability


@pytest.mark.slow
def test_dashboard_polling_while_four_workers_write_sqlite(tmp_path: Path) -> None:
    """A dashboard reading a SQLite study while 4 worker processes write trials and plots to it."""
    csv, space = make_dataset(tmp_path)
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    run_hpo(
        "study", "create", "busy", "--space", str(space), "--data", str(csv), "--storage", url,
        "--folds", "2", cwd=tmp_path,
    )  # fmt: skip
    polls: list[tuple[str, int]] = []
    failures: list[str] = []
    with (
        dashboard_process("busy", "--storage", url, cwd=tmp_path) as dashboard,
        (tmp_path / "workers.log").open("w+") as log,
    ):
        root, study_id = dashboard.root, dashboard.url.rsplit("/", 1)[1]
        workers = subprocess.Popen(
            [HPO, "worker", "busy", "--storage", url, "--devices", "cpu:4", "--n-trials", "6"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        seen: set[str] = set()
        while workers.poll() is None:  # what a browser with "Live Update" on does, and more
            for path in ("/api/studies", f"/api/studies/{study_id}", f"/api/studies/{study_id}?after=0"):
                try:
                    status, body = get(root + path)
                except Exception as exc:  # an HTTP error status is a failure too
                    failures.append(f"{path}: {exc}")
                    continue
                polls.append((path, status))
                if path.endswith("?after=0"):
                    for trial in json.loads(body)["trials"]:
                        for artifact in trial["artifacts"]:
                            if artifact["artifact_id"] not in seen:  # each new plot, once
                                seen.add(artifact["artifact_id"])
                                art = f"/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}"
                                try:
                                    polls.append((art, get(root + art)[0]))
                                except Exception as exc:
                                    failures.append(f"{art}: {exc}")
            time.sleep(0.2)
        workers.wait(timeout=60)
        assert dashboard.proc.poll() is None, "the dashboard died while workers wrote"
        log.seek(0)
        worker_output = log.read()
    dashboard_output = dashboard.output()

    assert workers.returncode == 0, worker_output
    assert failures == []
    assert len(polls) > 30 and {status for _, status in polls} == {200}
    assert len(seen) > 0  # plots were fetched while trials ran
    for text in (worker_output, dashboard_output):
        assert "database is locked" not in text
        assert "Traceback" not in text
    study = optuna.load_study(study_name="busy", storage=open_storage(url))
    states = [t.state for t in study.trials]
    finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    assert finished - unbudgeted(study_record(study)) == 6  # a paused trial and its continuation: once
    assert TrialState.FAIL not in states
    devices = {t.user_attrs["device"] for t in study.trials}
    assert devices <= {f"cpu#{i}" for i in range(4)} and len(devices) >= 2  # processes really overlapped
