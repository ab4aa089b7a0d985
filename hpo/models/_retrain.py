"""``hpo retrain``: re-run the best trials from their stored configs, log everything to MLflow, register.

Modes:

- ``folds``: train every CV fold again (the study's folds: same ``cv.folds`` and ``cv.seed``) and keep
  the k fold models as an ensemble; out-of-fold predictions give the confusion matrix and report.
- ``full``: train once on all images for the trial's best epoch count (the largest best epoch over its
  folds), no early stopping; metrics on a fixed training subset only say the fit worked.

The version's ``cv_f1`` (what decides the ``champion`` alias) is the study's cross-validated
macro-F1 of the trial, for a top-k ensemble that of its best member: a measured number, not one
from retraining on data the model has seen.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import UserError
from hpo.models._bundle import Bundle, Member, default_tta, save_bundle
from hpo.models._ensemble import Ensemble
from hpo.models._figures import optuna_plots, report_text
from hpo.models._pyfunc import model_signature
from hpo.models._registry import Registered, register_version
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
from training.checkpoint import load_checkpoint
from training.config import RunConfig, apply_overrides
from training.folds import make_folds
from training.loop import EpochStats, fit
from training.metrics import classification_report

__all__ = ["MODES", "RetrainResult", "retrain", "select_trials"]

log = logging.getLogger(__name__)

MODES = ("folds", "full")
_ENTRY = Path(__file__).with_name("_pyfunc_entry.py")  # models-from-code script of the pyfunc model
_TRAIN_SUBSET = 512  # images scored each epoch in full mode (fit needs a validation set)

OnFold = Callable[[int, str, float], None]  # (trial number, "fold 2/3" | "all data", F1)


@dataclass(frozen=True)
class RetrainResult:
    study: str
    trials: list[int]
    mode: str
    cv_f1: float
    oof_f1: float | None  # folds mode: macro-F1 of the ensemble's out-of-fold predictions
    run_id: str
    experiment_id: str
    model_uri: str  # the logged model (models:/<model id>)
    registered: Registered
    tracking_uri: str  # redacted
    n_members: int
    artifacts: list[str] = field(default_factory=list)


def select_trials(study: optuna.Study, *, top_k: int = 1, trial: int | None = None) -> list[FrozenTrial]:
    """The ``top_k`` best complete trials, or trial number ``trial``; each must hold its config."""
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
        chosen = sorted(complete, key=lambda t: (-(t.value or 0.0), t.number))[:top_k]
    for t in chosen:
        if "config" not in t.user_attrs:
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
    registered_model: str | None = None,
    tracking_uri: str | None = None,
    force: bool = False,
    data: str | None = None,
    device: str = "auto",
    on_fold: OnFold | None = None,
) -> RetrainResult:
    """Retrain, log to MLflow (under the study's parent run when it is tracked), register, maybe promote.

    Tracking URI: ``tracking_uri``, then the study's, then ``MLFLOW_TRACKING_URI``, then the local store.
    """
    import mlflow

    if mode not in MODES:
        raise UserError(f"--mode: unknown '{mode}'; use one of: {', '.join(MODES)}")
    url = storage_url(storage)
    study, spec = open_study(name, url)
    trials = select_trials(study, top_k=top_k, trial=trial)
    tracking = study_tracking(study)
    uri = tracking_uri or (tracking.uri() if tracking else None) or resolve_tracking_uri()
    mlflow_client = client(uri)  # fails fast, before any training, when MLflow is unreachable
    tracked_here = tracking is not None and tracking.tracking_uri == redact(uri)
    experiment_id = tracking.experiment_id if tracked_here else experiment_id_for(mlflow_client, name, uri)
    model_name = registered_model or name
    best = trials[0]
    cv_f1 = float(best.value)  # type: ignore[arg-type]
    numbers = [t.number for t in trials]
    label = f"trial-{best.number}" if len(trials) == 1 else f"top{len(trials)}"
    tags = {
        "foldtune.study": name,
        "foldtune.kind": "retrain",
        "foldtune.trials": ",".join(map(str, numbers)),
        "foldtune.mode": mode,
        "foldtune.storage": redact(url),
    }
    if tracked_here:
        tags["mlflow.parentRunId"] = tracking.parent_run_id  # type: ignore[union-attr]

    with mlflow_uris(uri), tempfile.TemporaryDirectory(prefix="hpo-retrain-") as tmp_name:
        tmp = Path(tmp_name)
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"retrain {label} ({mode})", tags=tags
        ) as run:
            configs = [_trial_config(t, spec, data=data, device=device) for t in trials]
            mlflow.log_params(
                {
                    "retrain.mode": mode,
                    "retrain.trials": ",".join(map(str, numbers)),
                    **flat_params(configs[0]),
                }
            )
            mlflow.log_dict(configs[0].to_dict(), "config.json")
            mlflow.log_metric("cv_f1", cv_f1)

            members: list[Member] = []
            oof_sum: np.ndarray | None = None
            loaded: LoadedData | None = None
            histories: dict[int, dict[int, list[EpochStats]]] = {}
            for t, config in zip(trials, configs, strict=True):
                mlflow.log_metric(f"trial{t.number}/cv_f1", float(t.value))  # type: ignore[arg-type]
                loaded = load_data(config.data)
                trained, oof, history = _train_trial(
                    t, config, loaded, mode=mode, workdir=tmp / f"trial-{t.number}", on_fold=on_fold
                )
                members += trained
                histories[t.number] = history
                if oof is not None:
                    oof_sum = oof if oof_sum is None else oof_sum + oof
            assert loaded is not None
            classes = tuple(loaded.table.classes)
            labels = loaded.table.labels

            # Evaluation: out-of-fold (folds mode) or a training subset (full mode).
            if oof_sum is not None:
                y_true, probs, where = labels, oof_sum / len(trials), "out-of-fold"
            else:
                idx = _train_subset(len(labels))
                y_true, where = labels[idx], "training subset (seen in training)"
                probs = _predict_members(members, loaded, idx, classes)
            report = classification_report(y_true, probs, classes)
            prefix = "oof" if oof_sum is not None else "train_subset"
            mlflow.log_metrics({f"{prefix}_f1": report["macro_f1"], f"{prefix}_accuracy": report["accuracy"]})
            title = f"{name} {label} ({mode}): {where}"
            mlflow.log_dict(report, "classification_report.json")
            mlflow.log_text(report_text(report, title=title), "classification_report.txt")
            _log_figure(
                plot_confusion(y_true, probs.argmax(axis=1), classes, title=title), "confusion_matrix.png"
            )
            for i, (number, history) in enumerate(histories.items()):
                figure = plot_curves(history, title=f"{name} trial {number} retrained ({mode})")
                _log_figure(figure, "training_curves.png" if i == 0 else f"training_curves_trial{number}.png")
            plots = optuna_plots(study, tmp / "optuna")
            for path in plots:
                mlflow.log_artifact(str(path), artifact_path="optuna")
            if tracked_here and plots:  # the study-level plots belong on the parent run as well
                for path in plots:
                    mlflow_client.log_artifact(tracking.parent_run_id, str(path), artifact_path="optuna")  # type: ignore[union-attr]
                mlflow_client.log_metric(tracking.parent_run_id, "best_cv_f1", cv_f1)  # type: ignore[union-attr]

            bundle = Bundle(
                classes=classes,
                members=members,
                tta=default_tta(configs),
                info={
                    "study": name,
                    "trials": numbers,
                    "mode": mode,
                    "cv_f1": cv_f1,
                    "storage": redact(url),
                    "data_fingerprint": spec.data_fingerprint,
                },
            )
            bundle_dir = save_bundle(bundle, tmp / "bundle")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(_ENTRY),
                artifacts={"bundle": str(bundle_dir)},
                signature=model_signature(bundle),
                input_example=_input_example(loaded),
                pip_requirements=_requirements(),
                metadata={"foldtune": {k: v for k, v in bundle.describe().items() if k != "members"}},
            )
            registered = register_version(
                info.model_uri,
                model_name,
                run_id=run.info.run_id,
                model_id=getattr(info, "model_id", None),
                cv_f1=cv_f1,
                tags={
                    **{k: v for k, v in tags.items() if k.startswith("foldtune.")},
                    "foldtune.run_id": run.info.run_id,
                },
                tracking_uri=uri,
                force=force,
                lock=study_lock(url, f"champion:{model_name}"),
            )
            mlflow.set_tags(
                {"foldtune.registered": registered.uri, "foldtune.champion": str(registered.champion)}
            )
            artifacts = sorted(a.path for a in mlflow_client.list_artifacts(run.info.run_id))
    return RetrainResult(
        study=name,
        trials=numbers,
        mode=mode,
        cv_f1=cv_f1,
        oof_f1=report["macro_f1"] if oof_sum is not None else None,
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_uri=info.model_uri,
        registered=registered,
        tracking_uri=redact(uri),
        n_members=len(members),
        artifacts=artifacts,
    )


def _trial_config(t: FrozenTrial, spec: StudySpec, *, data: str | None, device: str) -> RunConfig:
    config = RunConfig.from_dict(t.user_attrs["config"], where=f"trial {t.number}")
    overrides: dict[str, Any] = {"budget.device": device}
    if data:
        overrides["data.source"] = data if data == "sample" else str(Path(data).resolve())
    config = apply_overrides(config, overrides, where="hpo retrain")
    fingerprint = load_data(config.data).table.fingerprint()
    if fingerprint != spec.data_fingerprint:
        raise UserError(
            f"data at {config.data.source} differs from the study's (fingerprint {fingerprint} != "
            f"{spec.data_fingerprint}); pass --data with the dataset the study was run on"
        )
    return config


def _train_trial(
    t: FrozenTrial,
    config: RunConfig,
    data: LoadedData,
    *,
    mode: str,
    workdir: Path,
    on_fold: OnFold | None,
) -> tuple[list[Member], np.ndarray | None, dict[int, list[EpochStats]]]:
    """Members, out-of-fold probabilities (folds mode) and per-fold epoch history of one trial."""
    import mlflow

    labels = data.table.labels
    history: dict[int, list[EpochStats]] = {}

    def log_epoch(fold: int):
        def on_epoch(stats: EpochStats) -> None:
            history.setdefault(fold, []).append(stats)
            prefix = f"trial{t.number}/fold{fold}" if mode == "folds" else f"trial{t.number}/full"
            mlflow.log_metrics(
                {
                    f"{prefix}/train_loss": stats.train_loss,
                    f"{prefix}/val_loss": stats.val_loss,
                    f"{prefix}/f1": stats.f1,
                    f"{prefix}/lr": stats.lr,
                },
                step=stats.epoch,
            )

        return on_epoch

    if mode == "full":
        best_epochs = (
            t.user_attrs.get("best_epochs") or t.user_attrs.get("epochs") or [config.budget.max_epochs]
        )
        epochs = max(int(e) for e in best_epochs)
        config = apply_overrides(
            config, {"budget.max_epochs": epochs, "budget.patience": None}, where="hpo retrain --mode full"
        )
        everything = np.arange(len(labels), dtype=np.int64)
        result = fit(
            config,
            everything,
            _train_subset(len(labels)),
            on_epoch=log_epoch(0),
            checkpoint_dir=workdir / "full",
            data=data,
        )
        state = load_checkpoint(workdir / "full" / "best.pt")  # config, classes, mean/std
        state["model"] = load_checkpoint(workdir / "full" / "last.pt")["model"]  # the final epoch's weights
        if on_fold is not None:
            on_fold(t.number, "all data", result.history[-1].f1)
        member = Member.from_checkpoint(state, trial=t.number, fold=None, cv_f1=t.value, epochs=epochs)
        return [member], None, history

    folds = make_folds(labels, data.table.groups, config.cv.folds, config.cv.seed, classes=data.table.classes)
    oof = np.zeros((len(labels), data.n_classes), dtype=np.float32)
    members = []
    for k, (train_idx, val_idx) in enumerate(folds):
        result = fit(
            config, train_idx, val_idx, on_epoch=log_epoch(k), checkpoint_dir=workdir / f"fold-{k}", data=data
        )
        oof[val_idx] = result.oof_probs
        state = load_checkpoint(workdir / f"fold-{k}" / "best.pt")
        members.append(
            Member.from_checkpoint(state, trial=t.number, fold=k, cv_f1=t.value, epochs=result.best_epoch)
        )
        mlflow.log_metric(f"trial{t.number}/fold{k}/best_f1", result.best_f1)
        if on_fold is not None:
            on_fold(t.number, f"fold {k + 1}/{len(folds)}", result.best_f1)
    return members, oof, history


def _train_subset(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n, size=min(n, _TRAIN_SUBSET), replace=False)).astype(np.int64)


def _predict_members(members: list[Member], data: LoadedData, idx: np.ndarray, classes) -> np.ndarray:
    """Soft-vote probabilities of ``members`` on images ``idx``, each member at its own image size."""
    ensemble = Ensemble(
        Bundle(classes=tuple(classes), members=members), device=members[0].config.budget.device
    )
    base = members[0].config.data

    def images_at(size: int) -> np.ndarray:
        return np.asarray(load_data(base.model_copy(update={"image_size": size})).images[idx])

    return ensemble.predict(images_at, tta="none", vote="soft")


def _log_figure(figure, name: str) -> None:
    import mlflow

    mlflow.log_figure(figure, name)


def _input_example(data: LoadedData):
    """One real image file, as bytes: what the pyfunc's ``image`` column takes."""
    import pandas as pd

    return pd.DataFrame({"image": [data.table.file(0).read_bytes()]})


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in (
        "mlflow",
        "torch",
        "timm",
        "safetensors",
        "pillow",
        "numpy",
        "pandas",
        "pydantic",
        "scikit-learn",
        "albumentations",
    ):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins
