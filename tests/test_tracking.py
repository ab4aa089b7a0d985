"""MLflow tracking of studies on the embedded local store (SQLite under ./.hpo/): `--mlflow` flags,
URI resolution, one parent run reused on re-create, conflicts, unreachable servers, and a dead
server that must not fail a trial."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpo.errors import UserError
from hpo.tracking import StudyTracking, requested_tracking_uri, resolve_tracking_uri
from tests.datasets import make_csv_dataset
from tests.helpers import assert_one_line_error, invoke
from tests.mlflow_server import free_port

SPACE = """
fixed: {model.name: test_resnet, data.image_size: 32, budget.max_epochs: 2, budget.patience: null,
        augment.preset: none, budget.batch_size: 32}
params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
starts: []
"""


@pytest.fixture
def workdir(workdir: Path) -> Path:
    """The shared working directory, with this module's space and a small dataset in it."""
    (workdir / "space.yaml").write_text(SPACE)
    make_csv_dataset(workdir / "data", classes=("a", "b", "c"), per_class=8, size=(32, 32))
    return workdir


def create(*extra: str):
    args = ["study", "create", "s", "--space", "space.yaml", "--data", "data/labels.csv", "--folds", "2"]
    return invoke(*[*args, "--pruner", "none", *extra])


def run_one_trial(storage: str) -> optuna.trial.FrozenTrial:
    """One trial the way a worker process runs it: observers from the study's attrs."""
    from hpo.study import open_study
    from hpo.workers import Objective, observers_for

    study, spec = open_study("s", storage)
    study.optimize(
        Objective(spec, device="cpu", checkpoint_root="ckpt", observer=observers_for(study)), n_trials=1
    )
    return study.trials[-1]


def test_uri_resolution_flag_then_environment_then_local_store(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = f"sqlite:///{workdir / '.hpo' / 'mlflow.db'}"
    assert resolve_tracking_uri() == local
    assert requested_tracking_uri(None, None) is None  # tracking is opt-in
    assert requested_tracking_uri(True, None) == local
    assert requested_tracking_uri(None, "http://h:5000") == "http://h:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert requested_tracking_uri(None, None) == "http://env:5000"
    assert requested_tracking_uri(None, "http://flag:5000") == "http://flag:5000"
    assert requested_tracking_uri(False, "http://flag:5000") is None


def test_a_password_is_never_stored_and_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tracking = StudyTracking("http://bob:***@mlflow:5000", "1", "s", "run", "sqlite:///x.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match="set MLFLOW_TRACKING_URI"):
        tracking.uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:s3cret@mlflow:5000")
    assert tracking.uri() == "http://bob:s3cret@mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://eve:s3cret@elsewhere:5000")
    with pytest.raises(UserError):
        tracking.uri()


def test_local_store_parent_run_is_created_once_and_trials_nest_under_it(workdir: Path) -> None:
    storage = f"sqlite:///{workdir / 'study.db'}"
    first = create("--storage", storage, "--mlflow")
    assert first.exit_code == 0, first.output
    assert (workdir / ".hpo" / "mlflow.db").is_file()
    attrs = optuna.load_study(study_name="s", storage=storage).user_attrs["mlflow"]
    assert attrs["tracking_uri"] == f"sqlite:///{workdir / '.hpo' / 'mlflow.db'}"

    again = create("--storage", storage, "--mlflow")
    assert again.exit_code == 0 and "reusing" in again.stdout
    assert optuna.load_study(study_name="s", storage=storage).user_attrs["mlflow"] == attrs
    assert_one_line_error(
        create("--storage", storage, "--tracking-uri", f"sqlite:///{workdir / 'other.db'}"),
        "already tracks to",
        "--tracking-uri",
    )

    trial = run_one_trial(storage)
    assert trial.state == TrialState.COMPLETE
    client = MlflowClient(attrs["tracking_uri"])
    runs = client.search_runs([attrs["experiment_id"]], "tags.`foldtune.trial` = '0'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["mlflow.parentRunId"] == attrs["parent_run_id"]
    assert run.data.tags["foldtune.state"] == "complete" and run.info.status == "FINISHED"
    assert run.data.metrics["cv_f1"] == pytest.approx(trial.value)
    for key in ("params_m", "gflops", "latency_ms", "throughput"):  # what the model costs to serve
        assert run.data.metrics[key] == pytest.approx(trial.user_attrs[key]) and trial.user_attrs[key] > 0
    assert run.data.tags["foldtune.cost_device"] == trial.user_attrs["cost_device"]
    assert float(run.data.params["optim.lr"]) == pytest.approx(trial.params["optim.lr"])
    # artifacts of the local store sit beside it, not in ./mlruns
    assert run.info.artifact_uri.startswith((workdir / ".hpo" / "mlartifacts").as_uri())
    assert Path(run.info.artifact_uri.removeprefix("file://"), "config.json").is_file()
    assert not (workdir / "mlruns").exists()

    # the trial's figures: on its run, the very PNGs the dashboard lists (rendered once for both)
    from optuna.artifacts import get_all_artifact_meta

    from storage import open_artifact_store

    run_files = Path(run.info.artifact_uri.removeprefix("file://"))
    study = optuna.load_study(study_name="s", storage=storage)
    store = open_artifact_store(study.user_attrs["artifact_store"])
    metas = get_all_artifact_meta(study.trials[0], storage=study._storage)
    figures = {"curves.png", "confusion.png", "fold1_curves.png", "fold2_curves.png"}
    assert {m.filename for m in metas} == figures
    for meta in metas:
        with store.open_reader(meta.artifact_id) as f:
            assert (run_files / meta.filename).read_bytes() == f.read(), meta.filename

    # retrained and registered on the local store: the logged model lists its version, as a
    # tracking server would record it
    retrained = invoke("retrain", "s", "--storage", storage, "--registered-model", "S")
    assert retrained.exit_code == 0, retrained.output
    version = client.get_model_version("S", "1")
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert json.loads(model.tags["mlflow.modelVersions"]) == [{"name": "S", "version": "1"}]
    assert client.get_run(version.run_id).data.tags["foldtune.registered"] == "models:/S/1"


def test_no_mlflow_and_unreachable_servers(workdir: Path) -> None:
    storage = f"sqlite:///{workdir / 'study.db'}"
    plain = create("--storage", storage, "--no-mlflow", "--tracking-uri", "http://127.0.0.1:1")
    assert plain.exit_code == 0, plain.output
    assert "mlflow" not in optuna.load_study(study_name="s", storage=storage).user_attrs
    dead = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(
        create("--storage", storage, "--tracking-uri", dead), "unreachable", dead, "MLFLOW_TRACKING_URI"
    )
    assert "mlflow" not in optuna.load_study(study_name="s", storage=storage).user_attrs
    assert_one_line_error(
        invoke(*["retrain", "s", "--storage", storage, "--tracking-uri", dead]),
        "no completed trials",
    )


def test_no_plots_keeps_no_plot_directory_and_workers_render_none(workdir: Path) -> None:
    from hpo.workers import observers_for

    storage = f"sqlite:///{workdir / 'study.db'}"
    assert_one_line_error(create("--storage", storage, "--no-plots", "--artifacts", "p"), "--artifacts")
    made = create("--storage", storage, "--no-plots")
    assert made.exit_code == 0, made.output
    study = optuna.load_study(study_name="s", storage=storage)
    assert "artifact_store" not in study.user_attrs
    assert observers_for(study).observers == []  # no figures, no MLflow: nothing watches the trials
    assert create("--storage", storage).exit_code == 0  # reused as it was made
    plotted = f"sqlite:///{workdir / 'plotted.db'}"
    assert create("--storage", plotted).exit_code == 0
    assert_one_line_error(create("--storage", plotted, "--no-plots"), "already keeps trial plots")


def test_a_dead_tracking_server_never_fails_a_trial(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hpo.study import create_study

    storage = f"sqlite:///{workdir / 'study.db'}"
    # the library, not the CLI: the CLI's logging setup would replace caplog's handler
    study, _ = create_study(
        "s", space="space.yaml", data="data/labels.csv", storage=storage, folds=2, pruner="none"
    )
    dead = f"http://127.0.0.1:{free_port()}"  # the server went away after the study was created
    study.set_user_attr("mlflow", StudyTracking(dead, "1", "s", "parent", storage).__dict__)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with caplog.at_level(logging.WARNING, logger="hpo.tracking"):
        trial = run_one_trial(storage)
    assert trial.state == TrialState.COMPLETE
    assert "no run for trial 0" in caplog.text
    assert caplog.text.count("hpo.tracking") <= 2  # one warning per trial, not one per epoch

    from hpo.tracking import finish_study_run

    with caplog.at_level(logging.WARNING, logger="hpo.tracking"):
        assert not finish_study_run(study, budget=1)  # the budget is met, the server is gone
    assert "the study's run was not ended (ignored)" in caplog.text
