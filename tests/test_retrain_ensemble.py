"""`hpo retrain --top-k 2 --seeds 2` on a tiny mask-layout study: the ensemble picked on out-of-fold
predictions, its metrics in the local MLflow store, its weights and class bias in the bundle, and
`hpo predict` (and the pyfunc) with and without the bias."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from hpo.models import download_model, load_bundle
from tests.datasets import make_mask_tree
from tests.helpers import invoke, write_space
from training.ensembling import apply_bias

LOCAL_MLFLOW = "sqlite:///.hpo/mlflow.db"  # hpo's default store, under the test's working directory


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_retrain_top_k_seeds_picks_weights_and_bias_on_oof(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mask = make_mask_tree(workdir / "mask", n_people=12, size=(32, 32), n_eval=6)
    url = f"sqlite:///{workdir / 's.db'}"
    created = invoke(
        "study", "create", "s", "--space", str(write_space(workdir, epochs=1)), "--data", str(mask),
        "--folds", "2", "--pruner", "none", "--storage", url,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    study = optuna.load_study(study_name="s", storage=url)
    for lr in (1e-2, 1e-4):
        study.enqueue_trial({"optim.name": "adamw", "optim.lr": lr})
    worked = invoke("worker", "s", "--storage", url, "--devices", "cpu", "--n-trials", "2")
    assert worked.exit_code == 0, worked.output
    best_two = study.trials

    # --bias on: the bias goes into the bundle whatever it scores on folds it was not fitted on
    result = invoke(
        "retrain", "s", "--storage", url, "--top-k", "2", "--seeds", "2", "--bias", "on", "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert "class bias kept in the bundle" in result.stdout
    assert "seed 1, fold 2/2" in result.stderr  # each trial: 2 seeds x 2 folds
    assert "ensemble out-of-fold macro-F1" in result.stdout

    run_id = re.search(r"MLflow run (\w+)", result.stdout).group(1)
    metrics = MlflowClient(LOCAL_MLFLOW).get_run(run_id).data.metrics
    members = {t.number: metrics[f"trial{t.number}/oof_f1"] for t in best_two}
    for t in best_two:
        assert {f"trial{t.number}/seed0/oof_f1", f"trial{t.number}/seed1/oof_f1"} <= set(metrics)
        assert {f"trial{t.number}/seed1/fold2/best_f1", f"trial{t.number}/weight"} <= set(metrics)
    assert metrics["ensemble_oof_f1"] >= max(members.values())
    assert metrics["oof_f1"] == pytest.approx(metrics["ensemble_oof_f1"])  # the report is the blend's
    assert metrics["biased_oof_f1"] >= metrics["ensemble_oof_f1"]
    assert 0 <= metrics["biased_heldout_oof_f1"] <= 1

    bundle = load_bundle(download_model("models:/s@champion", workdir / "model", tracking_uri=LOCAL_MLFLOW))
    kept = [t for t in members if metrics[f"trial{t}/weight"] > 0]
    assert sorted({m.trial for m in bundle.members}) == sorted(kept)
    assert len(bundle.members) == 4 * len(kept)  # 2 seeds x 2 folds per kept trial
    assert {m.config.budget.seed for m in bundle.members} == {0, 1}
    assert sum(bundle.weights) == pytest.approx(1.0)
    assert bundle.bias is not None and len(bundle.bias) == 18
    assert metrics["biased_oof_f1"] > metrics["ensemble_oof_f1"]  # an all-zero bias is not stored

    # predict: the eval split's submission, with the bias and without; --probs on a path list
    images = sorted((mask / "eval" / "images").iterdir())
    listing = workdir / "eval.csv"
    listing.write_text("path\n" + "".join(f"{p}\n" for p in images))
    model = "models:/s@champion"
    outs = {}
    for name, extra in (("biased", []), ("plain", ["--no-bias"])):
        done = invoke("predict", "--model", model, "--data", str(listing), "--out", f"{name}.csv", "--probs",
                      "--device", "cpu", *extra)  # fmt: skip
        assert done.exit_code == 0, done.output
        assert f"bias={'off' if extra else 'on'}" in done.stdout
        outs[name] = read_csv(workdir / f"{name}.csv")
    plain = np.array([[float(row[f"prob_{c}"]) for c in bundle.classes] for row in outs["plain"]])
    biased_labels = [row["label"] for row in outs["biased"]]
    assert biased_labels == [bundle.classes[i] for i in apply_bias(plain, bundle.bias).argmax(axis=1)]
    submission = invoke(
        "predict", "--model", model, "--data", str(mask), "--out", "sub.csv", "--device", "cpu"
    )
    assert submission.exit_code == 0, submission.output
    answers = {r["ImageID"]: r["ans"] for r in read_csv(workdir / "sub.csv")}
    assert [answers[p.name] for p in images] == biased_labels  # the same images, answered alike

    # the pyfunc applies the bias too, unless params say bias=false
    monkeypatch.setenv("MLFLOW_TRACKING_URI", LOCAL_MLFLOW)
    pyfunc = mlflow.pyfunc.load_model(model)
    frame = pd.DataFrame({"path": [str(p) for p in images]})
    assert pyfunc.predict(frame)["label"].tolist() == biased_labels
    unbiased = pyfunc.predict(frame, params={"bias": False})
    assert unbiased["label"].tolist() == [row["label"] for row in outs["plain"]]
