"""``hpo retrain``: re-run the best trials from their stored configs, log everything to MLflow, register.

Modes:

- ``folds``: train every CV fold again (the study's folds: same ``cv.folds`` and ``cv.seed``) and keep
  the k fold models as an ensemble; out-of-fold predictions give the confusion matrix and report.
- ``full``: train once on all images for the trial's best epoch count (the largest best epoch over its
  folds), no early stopping. Its F1 is measured on a fixed subset of the images it trained on and named
  so everywhere (``train_f1``, ``trial<n>/full/train_f1``): it says the fit worked, not how well the
  model generalizes.

The version's ``cv_f1`` (what decides the ``champion`` alias) is the study's cross-validated
macro-F1 of the trial, for a top-k ensemble that of its best member: a measured number, not one
from retraining on data the model has seen.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import UserError
from hpo.models._bundle import Bundle, Member, default_tta
from hpo.models._ensemble import Ensemble
from hpo.models._figures import optuna_plots, report_text
from hpo.models._oof import BIAS_CHOICES, OofEnsemble, log_oof_ensemble, pick_ensemble
from hpo.models._registry import Registered, register_version
from hpo.models._retrain_fits import OnFold, Retrained, retrain_trial, train_subset
from hpo.records import trial_record
from hpo.study import StudySpec, open_study, storage_url, study_lock
from hpo.tracking import (
    client,
    experiment_id_for,
    flat_params,
    mlflow_uris,
    plot_confusion,
    plot_curves,
    resolve_tracking_uri,
    study_tracking,
)
from storage import redact
from training.batches import LoadedData, load_data
from training.config import RunConfig, apply_overrides
from training.cv import split
from training.data import is_sample
from training.metrics import classification_report

__all__ = ["MODES", "RetrainResult", "retrain", "select_trials"]

log = logging.getLogger(__name__)

MODES = ("folds", "full")


@dataclass(frozen=True)
class RetrainResult:
    study: str
    trials: list[int]
    mode: str
    cv_f1: float
    oof_f1: float | None  # folds mode: macro-F1 of the ensemble's out-of-fold predictions
    train_f1: float | None  # full mode: macro-F1 on a subset of the training images (not held out)
    run_id: str
    experiment_id: str
    model_uri: str  # the logged model (models:/<model id>)
    registered: Registered
    tracking_uri: str  # redacted
    n_members: int
    artifacts: list[str] = field(default_factory=list)
    twins: dict[int, int] = field(default_factory=dict)  # skipped trial -> the better trial with its params
    ensemble: OofEnsemble | None = None  # folds mode: the blend picked on out-of-fold predictions
    seeds: int = 1


@dataclass(frozen=True)
class _Target:
    """Where the retrain run goes: under the study's run when the study tracks to this URI."""

    uri: str
    client: Any  # MlflowClient
    experiment_id: str
    parent_run_id: str | None


def select_trials(
    study: optuna.Study, *, top_k: int = 1, trial: int | None = None, twins: dict[int, int] | None = None
) -> list[FrozenTrial]:
    """The ``top_k`` best complete trials with distinct params, or trial number ``trial``.

    A trial whose params repeat a better one's would only add a copy to the ensemble: it is skipped,
    and noted in ``twins`` (skipped trial -> the better one).
    """
    if trial is not None:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not found:
            raise UserError(
                f"--trial: study '{study.study_name}' has no trial {trial}; "
                f"see `hpo status {study.study_name}`"
            )
        if found[0].state != TrialState.COMPLETE:
            raise UserError(
                f"--trial: trial {trial} of '{study.study_name}' is {found[0].state.name.lower()}, not "
                "complete, so it has no CV F1; pick a complete trial (see `hpo status`)"
            )
        chosen = found
    else:
        if top_k < 1:
            raise UserError(f"--top-k: {top_k} must be at least 1")
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise UserError(
                f"study '{study.study_name}' has no completed trials yet; run "
                f"`hpo worker {study.study_name}` until one completes, then retrain"
            )
        chosen, seen = [], {}
        for t in sorted(complete, key=lambda t: (-(t.value or 0.0), t.number)):
            key = repr(sorted(t.params.items()))
            if key in seen:
                if twins is not None and len(chosen) < top_k:
                    twins[t.number] = seen[key]
                continue
            seen[key] = t.number
            if len(chosen) < top_k:
                chosen.append(t)
    for t in chosen:
        if "config" not in trial_record(t):
            raise UserError(
                f"trial {t.number} of '{study.study_name}' has no stored config; retrain another trial"
            )
    return chosen


def retrain(
    name: str,
    *,
    storage: str | None = None,
    top_k: int = 1,
    trial: int | None = None,
    mode: str = "folds",
    seeds: int = 1,
    bias: str = "auto",
    registered_model: str | None = None,
    tracking_uri: str | None = None,
    force: bool = False,
    data: str | None = None,
    device: str = "auto",
    on_fold: OnFold | None = None,
) -> RetrainResult:
    """Retrain, log to MLflow (under the study's parent run when it is tracked), register, maybe promote.

    Each trial trains with ``seeds`` seeds. In folds mode the trials' out-of-fold predictions pick
    the ensemble's weights and its class bias (``hpo.models._oof``; ``bias``: auto keeps it only when it
    beats the plain blend on folds it was not fitted on, on always keeps it, off never).

    Tracking URI: ``tracking_uri``, then the study's, then ``MLFLOW_TRACKING_URI``, then the local store.
    """
    import mlflow

    from hpo.models._pyfunc import log_bundle_model  # MLflow's pyfunc loads only where a model is logged

    if mode not in MODES:
        raise UserError(f"--mode: unknown '{mode}'; use one of: {', '.join(MODES)}")
    if seeds < 1:
        raise UserError(f"--seeds: {seeds} must be at least 1")
    if bias not in BIAS_CHOICES:
        raise UserError(f"--bias: unknown '{bias}'; use one of: {', '.join(BIAS_CHOICES)}")
    url = storage_url(storage)
    study, spec = open_study(name, url)
    twins: dict[int, int] = {}
    trials = select_trials(study, top_k=top_k, trial=trial, twins=twins)
    for skipped, better in twins.items():
        log.info("trial %d skipped: its params repeat trial %d's", skipped, better)
    target = _target(study, tracking_uri)  # fails fast, before any training, when MLflow is unreachable
    configs = [_trial_config(t, spec, data=data, device=device) for t in trials]
    numbers = [t.number for t in trials]
    label = f"trial-{numbers[0]}" if len(trials) == 1 else f"top{len(trials)}"
    cv_f1 = float(trials[0].value or 0.0)
    tags = {
        "foldtune.study": name,
        "foldtune.kind": "retrain",
        "foldtune.trials": ",".join(map(str, numbers)),
        "foldtune.mode": mode,
        "foldtune.seeds": str(seeds),
        "foldtune.storage": redact(url),
    }
    if target.parent_run_id is not None:
        tags["mlflow.parentRunId"] = target.parent_run_id

    with mlflow_uris(target.uri), tempfile.TemporaryDirectory(prefix="hpo-retrain-") as tmp_name:
        tmp = Path(tmp_name)
        with mlflow.start_run(
            experiment_id=target.experiment_id, run_name=f"retrain {label} ({mode})", tags=tags
        ) as run:
            _log_inputs(trials, configs, mode=mode, cv_f1=cv_f1)
            retrained = [
                retrain_trial(
                    t, config, mode=mode, seeds=seeds, workdir=tmp / f"trial-{t.number}", on_fold=on_fold
                )
                for t, config in zip(trials, configs, strict=True)
            ]
            picked = None
            if mode == "folds":
                data_ = retrained[0].data
                picked = pick_ensemble(
                    [r.oof for r in retrained if r.oof is not None],
                    data_.table.labels,
                    trials=numbers,
                    folds=[fold.val_idx for fold in split(configs[0], data_)],
                    bias=bias,
                )
                log_oof_ensemble(picked)
            report = _log_evaluation(
                retrained, picked, title=f"{name} {label} ({mode}{_seeds(seeds)})", mode=mode
            )
            _log_study_plots(study, tmp / "optuna", target, cv_f1=cv_f1)
            info = {
                "study": name,
                "trials": numbers,
                "mode": mode,
                "seeds": seeds,
                "cv_f1": cv_f1,
                "storage": redact(url),
                **({"ensemble": picked.to_dict()} if picked is not None else {}),
            }
            # the layout says how the classes read (mask: "4 wear/female/30-59"); the fingerprint
            # lets `hpo evaluate` tell the training data from held-out data
            layout = retrained[-1].data.table.layout
            bundle = _bundle(
                retrained, picked, info={**info, "data_fingerprint": spec.data_fingerprint, "layout": layout}
            )
            example = retrained[-1].data.table.file(0).read_bytes()  # what the pyfunc's `image` column takes
            model = log_bundle_model(bundle, tmp, example_image=example)
            registered = register_version(
                model.model_uri,
                registered_model or name,
                run_id=run.info.run_id,
                model_id=getattr(model, "model_id", None),
                cv_f1=cv_f1,
                tags={
                    **{k: v for k, v in tags.items() if k.startswith("foldtune.")},
                    "foldtune.run_id": run.info.run_id,
                },
                tracking_uri=target.uri,
                force=force,
                lock=study_lock(url, f"champion:{registered_model or name}"),
            )
            mlflow.set_tags(
                {"foldtune.registered": registered.uri, "foldtune.champion": str(registered.champion)}
            )
            artifacts = sorted(a.path for a in target.client.list_artifacts(run.info.run_id))
    return RetrainResult(
        study=name,
        trials=numbers,
        mode=mode,
        cv_f1=cv_f1,
        oof_f1=report["macro_f1"] if mode == "folds" else None,
        train_f1=report["macro_f1"] if mode == "full" else None,
        run_id=run.info.run_id,
        experiment_id=target.experiment_id,
        model_uri=model.model_uri,
        registered=registered,
        tracking_uri=redact(target.uri),
        n_members=len(bundle.members),
        artifacts=artifacts,
        twins=twins,
        ensemble=picked,
        seeds=seeds,
    )


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def _target(study: optuna.Study, flag: str | None) -> _Target:
    """``--tracking-uri``, then the study's, then ``MLFLOW_TRACKING_URI``, then the local store."""
    tracking = study_tracking(study)
    uri = flag or (tracking.uri() if tracking else None) or resolve_tracking_uri()
    mlflow_client = client(uri)
    if tracking is not None and tracking.tracking_uri == redact(uri):
        return _Target(uri, mlflow_client, tracking.experiment_id, tracking.parent_run_id)
    return _Target(uri, mlflow_client, experiment_id_for(mlflow_client, study.study_name, uri), None)


def _trial_config(t: FrozenTrial, spec: StudySpec, *, data: str | None, device: str) -> RunConfig:
    config = RunConfig.from_dict(trial_record(t)["config"], where=f"trial {t.number}")
    overrides: dict[str, Any] = {"budget.device": device}
    if data:
        overrides["data.source"] = data if is_sample(data) else str(Path(data).resolve())
    config = apply_overrides(config, overrides, where="hpo retrain")
    spec.check_data(load_data(config.data).table, config.data.source)
    return config


def _log_inputs(trials: list[FrozenTrial], configs: list[RunConfig], *, mode: str, cv_f1: float) -> None:
    import mlflow

    numbers = ",".join(str(t.number) for t in trials)
    mlflow.log_params({"retrain.mode": mode, "retrain.trials": numbers, **flat_params(configs[0])})
    mlflow.log_dict(configs[0].to_dict(), "config.json")
    mlflow.log_metrics({"cv_f1": cv_f1, **{f"trial{t.number}/cv_f1": float(t.value or 0.0) for t in trials}})


def _log_evaluation(
    retrained: list[Retrained], picked: OofEnsemble | None, *, title: str, mode: str
) -> dict[str, Any]:
    """Out-of-fold report of the picked blend, without its bias (folds mode), or one on a training
    subset (full mode), with its figures."""
    import mlflow

    table = retrained[-1].data.table
    classes, labels = tuple(table.classes), table.labels
    if picked is not None:
        y_true, where, prefix = labels, "out-of-fold", "oof"
        probs = picked.probs
    else:
        idx = train_subset(len(labels))
        y_true, where, prefix = labels[idx], "training images (not held out)", "train"
        probs = _predict_members([m for r in retrained for m in r.members], retrained[-1].data, idx, classes)
    report = classification_report(y_true, probs, classes, layout=table.layout)
    mlflow.log_metrics({f"{prefix}_f1": report["macro_f1"], f"{prefix}_accuracy": report["accuracy"]})
    for attribute, f1 in report.get("attribute_f1", {}).items():  # mask layout: mask, gender, age
        mlflow.log_metric(f"{prefix}_{attribute}_f1", f1)
    mlflow.log_dict(report, "classification_report.json")
    mlflow.log_text(report_text(report, title=f"{title}: {where}"), "classification_report.txt")
    mlflow.log_figure(
        plot_confusion(y_true, probs.argmax(axis=1), table.class_names, title=f"{title}: {where}"),
        "confusion_matrix.png",
    )
    for i, r in enumerate(retrained):
        name = "training_curves.png" if i == 0 else f"training_curves_trial{r.trial.number}.png"
        mlflow.log_figure(plot_curves(r.history, title=f"trial {r.trial.number} retrained ({mode})"), name)
    return report


def _log_study_plots(study: optuna.Study, directory: Path, target: _Target, *, cv_f1: float) -> None:
    """Optuna's history / importance / parallel-coordinate plots, on this run and the study's run."""
    import mlflow

    plots = optuna_plots(study, directory)
    for path in plots:
        mlflow.log_artifact(str(path), artifact_path="optuna")
    if target.parent_run_id is not None and plots:
        for path in plots:
            target.client.log_artifact(target.parent_run_id, str(path), artifact_path="optuna")
        target.client.log_metric(target.parent_run_id, "best_cv_f1", cv_f1)


def _bundle(retrained: list[Retrained], picked: OofEnsemble | None, *, info: dict[str, Any]) -> Bundle:
    """The members with their shares of the vote (a trial's share split over its fold and seed
    models); trials the selection left out are not kept. Without a pick, every member counts alike."""
    members = []
    for r in retrained:
        if picked is None:
            members += r.members
        elif share := picked.weights[r.trial.number]:
            members += [replace(m, weight=share / len(r.members)) for m in r.members]
    bias = picked.bias if picked is not None and picked.bias_kept else None  # not kept: plain argmax
    return Bundle(
        classes=tuple(retrained[-1].data.table.classes),
        members=members,
        tta=default_tta([r.config for r in retrained]),
        info=info,
        bias=bias,
    )


def _seeds(seeds: int) -> str:
    return f", {seeds} seeds" if seeds > 1 else ""


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _predict_members(members: list[Member], data: LoadedData, idx: np.ndarray, classes) -> np.ndarray:
    """Soft-vote probabilities of ``members`` on images ``idx``, each member at its own image size."""
    ensemble = Ensemble(
        Bundle(classes=tuple(classes), members=members), device=members[0].config.budget.device
    )
    base = members[0].config.data

    def images_at(size: int) -> np.ndarray:
        return np.asarray(load_data(base.model_copy(update={"image_size": size})).images[idx])

    return ensemble.predict(images_at, tta="none", vote="soft")
