"""Study -> MLflow -> registry -> predict against a real `mlflow server` (SQLite backend, temp artifacts).

One small study on the mask-layout miniature runs once for the module: two worker processes, two
trials (a good and a hopeless learning rate, enqueued so their order is known), then `hpo retrain`.
The tests then read what MLflow holds through ``MlflowClient`` and use the registered model.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow.artifacts
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.datasets import make_mask_tree
from tests.helpers import invoke
from tests.mlflow_server import mlflow_server

# an MLflow server and two worker processes: minutes of wall time on a busy 2-core machine
pytestmark = pytest.mark.slow

GOOD_LR, BAD_LR = 1e-2, 1e-6
SPACE = """
fixed:
  model.name: test_resnet
  data.image_size: 32
  augment.preset: none
  augment.hflip: true
  budget.max_epochs: 3
  budget.batch_size: 16
  budget.patience: null
params:
  optim.lr: {type: float, low: 1.0e-6, high: 3.0e-2, log: true}
starts: []
"""
TRIAL_FIGURES = {"curves.png", "confusion.png", "fold1_curves.png", "fold2_curves.png"}
RETRAIN_ARTIFACTS = {
    "config.json",
    "confusion_matrix.png",
    "classification_report.json",
    "classification_report.txt",
    "training_curves.png",
    "optuna/optimization_history.png",
    "optuna/param_importances.png",
    "optuna/parallel_coordinate.png",
}


@dataclass(frozen=True)
class Env:
    url: str  # MLflow server
    storage: str  # study storage
    workdir: Path
    mask: Path
    retrain_output: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp, mlflow_server(workdir / "mlflow") as url:
        mp.chdir(workdir)
        for var in ("HPO_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        mask = make_mask_tree(workdir / "mask", n_people=12, size=(32, 32), n_eval=6)
        (workdir / "space.yaml").write_text(SPACE)
        storage = f"sqlite:///{workdir / 'study.db'}"
        common = ("--storage", storage)
        created = invoke(
            "study", "create", "m", "--space", "space.yaml", "--data", str(mask), "--folds", "2",
            "--pruner", "none", "--tracking-uri", url, *common,
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        assert "study run" in created.stdout
        study = optuna.load_study(study_name="m", storage=storage)
        study.enqueue_trial({"optim.lr": GOOD_LR})
        study.enqueue_trial({"optim.lr": BAD_LR})
        worked = invoke("worker", "m", "--devices", "cpu:2", "--n-trials", "2", *common)
        assert worked.exit_code == 0, worked.output
        retrained = invoke("retrain", "m", "--registered-model", "M", *common)
        assert retrained.exit_code == 0, retrained.output
        yield Env(url, storage, workdir, mask, retrained.stdout)


def download_json(env: Env, run_id: str, path: str):
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path=path,
        dst_path=str(env.workdir / "downloads" / run_id),
        tracking_uri=env.url,
    )
    return json.loads(Path(local).read_text())


def trials(env: Env) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="m", storage=env.storage).trials


def test_one_parent_run_with_a_child_run_per_trial(env: Env) -> None:
    study = optuna.load_study(study_name="m", storage=env.storage)
    attrs = study.user_attrs["mlflow"]
    assert attrs["tracking_uri"] == env.url
    client = MlflowClient(env.url)
    experiment = client.get_experiment_by_name("m")
    assert experiment.experiment_id == attrs["experiment_id"]
    parents = client.search_runs([experiment.experiment_id], "tags.`foldtune.kind` = 'study'")
    assert [r.info.run_id for r in parents] == [attrs["parent_run_id"]]  # created once, not per worker

    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{attrs['parent_run_id']}'"
    )
    by_trial = {int(r.data.tags["foldtune.trial"]): r for r in children if "foldtune.trial" in r.data.tags}
    finished = trials(env)
    assert sorted(by_trial) == [t.number for t in finished] == [0, 1]
    assert {by_trial[t.number].data.tags["foldtune.host"] for t in finished} != {""}
    for t in finished:
        run = by_trial[t.number]
        assert t.state == TrialState.COMPLETE
        assert run.data.tags["foldtune.state"] == "complete" and run.info.status == "FINISHED"
        assert run.data.tags["foldtune.storage"] == env.storage
        assert float(run.data.params["optim.lr"]) == pytest.approx(t.params["optim.lr"])
        assert run.data.params["model.name"] == "test_resnet"
        assert run.data.metrics["cv_f1"] == pytest.approx(t.value)
        for fold in (1, 2):  # numbered from 1, as everywhere users read them
            history = client.get_metric_history(run.info.run_id, f"fold{fold}/f1")
            assert [m.step for m in history] == [1, 2, 3]  # every epoch, stepped by epoch
        # each epoch's F1 is logged once, as fold<k>/f1, and each fold's best once, as fold<k>/best_f1
        assert not {"f1", "fold_f1"} & set(run.data.metrics)
        assert {"fold1/best_f1", "fold2/best_epoch", "f1_std"} <= set(run.data.metrics)
        assert download_json(env, run.info.run_id, "config.json") == t.user_attrs["config"]
        # the same figures as on the dashboard, per fold and for the trial
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= TRIAL_FIGURES
    good, bad = finished
    assert good.value > bad.value  # the enqueued learning rates ordered the trials as intended


def test_the_study_run_ends_when_its_budget_is_met(env: Env) -> None:
    from hpo.tracking import finish_study_run, tracking_observer

    study = optuna.load_study(study_name="m", storage=env.storage)
    client = MlflowClient(env.url)
    parent = study.user_attrs["mlflow"]["parent_run_id"]
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.data.tags["foldtune.state"] == "budget met"
    assert run.data.tags["foldtune.reason"] == "2 of a budget of 2 trials finished"
    assert run.data.metrics["finished_trials"] == 2
    assert run.data.metrics["best_cv_f1"] == pytest.approx(trials(env)[0].value)

    logged = len(client.get_metric_history(parent, "finished_trials"))
    assert finish_study_run(study, budget=2)  # every worker meeting the budget calls it: a no-op now
    assert len(client.get_metric_history(parent, "finished_trials")) == logged
    assert not finish_study_run(study, budget=3)  # not met: nothing changes
    tracking_observer(study)  # a worker starting with a larger budget: the study runs again
    reopened = client.get_run(parent)
    assert reopened.info.status == "RUNNING" and reopened.data.tags["foldtune.state"] == "running"
    assert finish_study_run(study, budget=2)
    assert client.get_run(parent).info.status == "FINISHED"


def test_retrain_logs_artifacts_model_and_moves_champion(env: Env) -> None:
    client = MlflowClient(env.url, registry_uri=env.url)
    champion = client.get_model_version_by_alias("M", "champion")
    assert champion.version == "1"
    assert champion.tags["foldtune.study"] == "m" and champion.tags["foldtune.trials"] == "0"
    assert float(champion.tags["cv_f1"]) == pytest.approx(trials(env)[0].value)
    assert "now @champion" in env.retrain_output

    run = client.get_run(champion.run_id)
    parent = optuna.load_study(study_name="m", storage=env.storage).user_attrs["mlflow"]["parent_run_id"]
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["retrain.mode"] == "folds"
    assert run.data.metrics["cv_f1"] == pytest.approx(trials(env)[0].value)
    assert 0.0 <= run.data.metrics["oof_f1"] <= 1.0
    for fold in (1, 2):
        history = client.get_metric_history(run.info.run_id, f"trial0/fold{fold}/train_loss")
        assert [m.step for m in history] == [1, 2, 3]
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    listed |= {a.path for a in client.list_artifacts(run.info.run_id, "optuna")}
    assert listed >= RETRAIN_ARTIFACTS
    report = download_json(env, run.info.run_id, "classification_report.json")
    assert len(report["per_class"]) == 18 and 0.0 <= report["macro_f1"] <= 1.0
    parent_plots = {a.path for a in client.list_artifacts(parent, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/param_importances.png"} <= parent_plots

    # the model: signature, input example and the bundle with everything predict needs
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri("M", "1"),
            dst_path=str(env.workdir / "model-v1"),
            tracking_uri=env.url,
        )
    )
    mlmodel = (local / "MLmodel").read_text()
    assert "signature:" in mlmodel and '"name": "image"' in mlmodel and '"name": "tta"' in mlmodel
    assert (local / "input_example.json").is_file()
    bundle = json.loads((local / "artifacts" / "bundle" / "bundle.json").read_text())
    assert bundle["classes"] == [str(c) for c in range(18)]
    assert bundle["tta"]["default"] == "hflip"  # the trials trained with augment.hflip
    assert [m["fold"] for m in bundle["members"]] == [0, 1]  # the fold ensemble
    assert all(m["image_size"] == 32 and len(m["mean"]) == 3 for m in bundle["members"])
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pt"))

    # the registered version and its logged model point at each other, as MLflow's UI shows them
    assert champion.source.startswith("models:/m-")  # the logged model, by its id
    model = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert model.source_run_id == run.info.run_id == champion.run_id
    assert {"name": "M", "version": "1"} in [
        {k: str(v) for k, v in e.items()} for e in json.loads(model.tags["mlflow.modelVersions"])
    ]
    assert run.data.tags["foldtune.registered"] == "models:/M/1"
    # the out-of-fold report reads the mask layout's classes by name, per attribute too
    assert report["per_class"]["4"]["name"] == "4 wear/female/30-59"
    assert set(report["attribute_f1"]) == {"mask", "gender", "age"}
    assert {"oof_mask_f1", "oof_gender_f1", "oof_age_f1"} <= set(run.data.metrics)
    assert bundle["info"]["layout"] == "mask"


def test_hpo_predict_and_pyfunc_agree_on_the_champion(env: Env) -> None:
    import mlflow.pyfunc

    from hpo.tracking import mlflow_uris

    out = env.workdir / "submission.csv"
    result = invoke(
        "predict", "--model", "models:/M@champion", "--data", str(env.mask), "--out", str(out),
        "--tracking-uri", env.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    info = [line.split(",")[0] for line in (env.mask / "eval" / "info.csv").read_text().splitlines()[1:]]
    assert rows[0] == ["ImageID", "ans"]
    assert [r[0] for r in rows[1:]] == info and len(set(info)) == 6  # every eval image exactly once
    assert all(0 <= int(r[1]) < 18 for r in rows[1:])

    images = [(env.mask / "eval" / "images" / image_id).read_bytes() for image_id in info]
    with mlflow_uris(env.url):
        model = mlflow.pyfunc.load_model("models:/M@champion")
        frame = model.predict(pd.DataFrame({"image": images}))
        no_tta = model.predict(pd.DataFrame({"image": images}), params={"tta": "none"})
    assert list(frame["label"]) == [r[1] for r in rows[1:]]
    probs = frame[[f"prob_{c}" for c in range(18)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs, no_tta[[f"prob_{c}" for c in range(18)]].to_numpy())  # TTA param applies


def test_worse_retrain_does_not_steal_champion_but_force_does(env: Env) -> None:
    common = ("--registered-model", "M", "--storage", env.storage, "--trial", "1", "--mode", "full")
    worse = invoke("retrain", "m", *common)
    assert worse.exit_code == 0, worse.output
    assert "champion stays version 1" in worse.stdout
    # full mode scores images it trained on, and says so
    assert "training macro-F1" in worse.stdout and "not held out" in worse.stdout
    assert "trial 1 all data, on its training images: macro-F1" in worse.stderr
    client = MlflowClient(env.url, registry_uri=env.url)
    assert client.get_model_version_by_alias("M", "champion").version == "1"
    second = client.get_model_version("M", "2")
    assert second.tags["champion_decision"] == "kept" and second.tags["foldtune.mode"] == "full"
    second_run = client.get_run(second.run_id)
    assert second_run.data.params["retrain.trials"] == "1"
    metrics = set(second_run.data.metrics)
    assert {"train_f1", "train_accuracy"} <= metrics and not {"oof_f1", "train_subset_f1"} & metrics
    epochs = client.get_metric_history(second.run_id, "trial1/full/train_f1")
    assert len(epochs) >= 1 and "trial1/full/f1" not in metrics and "trial1/full/val_loss" not in metrics

    forced = invoke("retrain", "m", *common, "--force")
    assert forced.exit_code == 0, forced.output
    assert client.get_model_version_by_alias("M", "champion").version == "3"
    assert client.get_model_version("M", "3").tags["champion_decision"] == "forced"


def test_registry_errors_are_one_line(env: Env) -> None:
    out = env.workdir / "never.csv"
    for model, needle in (("models:/M@nobody", "M@nobody"), ("models:/Nope/1", "Nope")):
        result = invoke(
            "predict", "--model", model, "--data", str(env.mask), "--out", str(out), "--tracking-uri", env.url
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("hpo: error: ") and needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    result = invoke("retrain", "m", "--storage", env.storage, "--trial", "7")
    assert result.exit_code == 2 and "no trial 7" in result.stderr


def test_a_pruned_trials_run_is_finished_and_tagged_pruned(env: Env) -> None:
    """Pruning is a normal end: MLflow shows the run FINISHED, the tag says pruned and why."""
    from hpo.study import load_spec
    from hpo.tracking import MlflowObserver, study_tracking
    from storage import open_storage

    created = invoke(
        "study", "create", "p", "--space", "space.yaml", "--data", str(env.mask), "--folds", "2",
        "--storage", env.storage, "--tracking-uri", env.url,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    study = optuna.load_study(study_name="p", storage=open_storage(env.storage, heartbeat_interval=None))
    spec = load_spec(study)
    tracking = study_tracking(study)
    observer = MlflowObserver(tracking, env.url)
    trial = study.ask()
    observer.on_trial_start(trial, spec.space.resolve(spec.base, spec.space.sample(trial)))
    reason = "pruned in fold 1 epoch 2: F1 credited so far 0.1000 is below its peers"
    observer.on_trial_end(trial, TrialState.PRUNED, None, reason)
    study.tell(trial, state=TrialState.PRUNED)
    client = MlflowClient(env.url)
    (run,) = client.search_runs([tracking.experiment_id], "tags.`foldtune.trial` = '0'")
    assert run.info.status == "FINISHED" and run.data.tags["foldtune.state"] == "pruned"
    assert run.data.tags["foldtune.reason"] == reason and "cv_f1" not in run.data.metrics
