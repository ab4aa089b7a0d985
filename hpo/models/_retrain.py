"""``hpo retrain``: re-run the best trials from their stored configs, log everything to MLflow, register.

In steps, each logging what it makes to the retrain run: :func:`plan` (``_retrain_plan``) ->
:func:`train` -> :func:`pick` -> :func:`package` -> :func:`register`. The run is written through
the ``MlflowClient`` by its id (:class:`hpo.tracking.RunLog`), as the trial runs are.

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

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hpo.models._bundle import Bundle, Member, default_tta, save_bundle
from hpo.models._ensemble import Ensemble
from hpo.models._figures import optuna_plots, report_text
from hpo.models._oof import OofEnsemble, log_oof_ensemble, pick_ensemble
from hpo.models._registry import Registered, register_version
from hpo.models._retrain_fits import OnFold, Retrained, retrain_trial, train_subset
from hpo.models._retrain_plan import RetrainOptions, RetrainPlan, plan
from hpo.study import study_lock
from hpo.tracking import (
    BEST_CV_F1,
    CV_F1,
    OOF,
    TRAIN,
    RunLog,
    flat_params,
    key,
    plot_confusion,
    plot_curves,
    report_metrics,
    trial_key,
)
from storage import redact
from training.batches import LoadedData, load_data
from training.cv import split
from training.metrics import classification_report

__all__ = ["Packaged", "Picked", "RetrainResult", "package", "pick", "register", "retrain", "train"]

log = logging.getLogger(__name__)


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
class Picked:
    """What goes into the bundle, and how well it scores."""

    ensemble: OofEnsemble | None  # folds mode: the trials' weights and class bias; None: all alike
    report: dict[str, Any]  # out-of-fold (folds mode), or on training images (full mode)


@dataclass(frozen=True)
class Packaged:
    bundle: Bundle
    directory: Path  # the saved bundle
    example_image: bytes  # what the pyfunc's `image` column takes


def retrain(
    name: str, options: RetrainOptions | None = None, *, on_fold: OnFold | None = None
) -> RetrainResult:
    """Retrain, log to MLflow (under the study's parent run when it is tracked), register, maybe promote.

    Each trial trains with ``options.seeds`` seeds. In folds mode the trials' out-of-fold predictions
    pick the ensemble's weights and its class bias (``hpo.models._oof``). ``on_fold`` hears each
    fold's (or full fit's) F1 as it ends.
    """
    planned = plan(name, options or RetrainOptions())
    with _run(planned) as run, tempfile.TemporaryDirectory(prefix="hpo-retrain-") as tmp_name:
        tmp = Path(tmp_name)
        _log_plan(planned, run)
        fits = train(planned, run=run, workdir=tmp, on_fold=on_fold)
        picked = pick(planned, fits, run=run)
        _log_study_plots(planned, run, directory=tmp / "optuna")
        packaged = package(planned, fits, picked, workdir=tmp)
        model_uri, registered = register(planned, packaged, run=run)
        artifacts = run.artifacts()
    macro_f1, folds = picked.report["macro_f1"], planned.options.mode == "folds"
    return RetrainResult(
        study=name,
        trials=planned.numbers,
        mode=planned.options.mode,
        cv_f1=planned.cv_f1,
        oof_f1=macro_f1 if folds else None,
        train_f1=None if folds else macro_f1,
        run_id=run.run_id,
        experiment_id=planned.target.experiment_id,
        model_uri=model_uri,
        registered=registered,
        tracking_uri=redact(planned.target.uri),
        n_members=len(packaged.bundle.members),
        artifacts=artifacts,
        twins=planned.twins,
        ensemble=picked.ensemble,
        seeds=planned.options.seeds,
    )


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def train(plan: RetrainPlan, *, run: RunLog, workdir: Path, on_fold: OnFold | None = None) -> list[Retrained]:
    """Each planned trial's members, trained again (``_retrain_fits``), with their learning curves."""
    options = plan.options
    fits = [
        retrain_trial(
            t,
            config,
            mode=options.mode,
            seeds=options.seeds,
            workdir=workdir / f"trial-{t.number}",
            run=run,
            on_fold=on_fold,
        )
        for t, config in zip(plan.trials, plan.configs, strict=True)
    ]
    for i, r in enumerate(fits):
        name = "training_curves.png" if i == 0 else f"training_curves_trial{r.trial.number}.png"
        run.log_figure(
            plot_curves(r.history, title=f"trial {r.trial.number} retrained ({options.mode})"), name
        )
    return fits


def pick(plan: RetrainPlan, fits: list[Retrained], *, run: RunLog) -> Picked:
    """Which trained members the bundle keeps, with what weights, and their score.

    Folds mode: greedy selection on the trials' out-of-fold predictions weighs them, and keeps a class
    bias per ``options.bias``; scored out of fold, without its bias. Full mode: every member counts
    alike; scored on a subset of its training images (not held out). Any further rule on which
    members may go into the bundle belongs here.
    """
    table = fits[-1].data.table
    labels = table.labels
    if plan.options.mode == "folds":
        ensemble = pick_ensemble(
            [r.oof for r in fits if r.oof is not None],
            labels,
            trials=plan.numbers,
            folds=[fold.val_idx for fold in split(plan.configs[0], fits[0].data)],
            bias=plan.options.bias,
        )
        log_oof_ensemble(run, ensemble)
        y_true, probs, prefix, where = labels, ensemble.probs, OOF, "out-of-fold"
    else:
        ensemble, idx = None, train_subset(len(labels))
        members = [m for r in fits for m in r.members]
        y_true, prefix, where = labels[idx], TRAIN, "training images (not held out)"
        probs = _predict_members(members, fits[-1].data, idx, tuple(table.classes))
    report = classification_report(y_true, probs, tuple(table.classes), layout=table.layout)
    title = f"{plan.title}: {where}"
    run.log_metrics(report_metrics(report, prefix=prefix))
    run.log_dict(report, "classification_report.json")
    run.log_text(report_text(report, title=title), "classification_report.txt")
    confusion = plot_confusion(y_true, probs.argmax(axis=1), table.class_names, title=title)
    run.log_figure(confusion, "confusion_matrix.png")
    return Picked(ensemble, report)


def package(plan: RetrainPlan, fits: list[Retrained], picked: Picked, *, workdir: Path) -> Packaged:
    """The picked members as a bundle, saved under ``workdir``: each trial's share of the vote split
    over its fold and seed models; trials the pick left out are not kept."""
    members = []
    for r in fits:
        if picked.ensemble is None:
            members += r.members
        elif share := picked.ensemble.weights[r.trial.number]:
            members += [replace(m, weight=share / len(r.members)) for m in r.members]
    kept_bias = picked.ensemble is not None and picked.ensemble.bias_kept
    table = fits[-1].data.table
    info = {
        "study": plan.name,
        "trials": plan.numbers,
        "mode": plan.options.mode,
        "seeds": plan.options.seeds,
        "cv_f1": plan.cv_f1,
        "storage": redact(plan.storage),
        **({"ensemble": picked.ensemble.to_dict()} if picked.ensemble is not None else {}),
        # the layout says how the classes read (mask: "4 wear/female/30-59"); the fingerprint
        # lets `hpo evaluate` tell the training data from held-out data
        "data_fingerprint": plan.spec.data_fingerprint,
        "layout": table.layout,
    }
    bundle = Bundle(
        classes=tuple(table.classes),
        members=members,
        tta=default_tta([r.config for r in fits]),
        info=info,
        bias=picked.ensemble.bias if kept_bias else None,  # not kept: plain argmax
    )
    return Packaged(bundle, save_bundle(bundle, workdir / "bundle"), table.file(0).read_bytes())


def register(plan: RetrainPlan, packaged: Packaged, *, run: RunLog) -> tuple[str, Registered]:
    """Log the bundle as the run's pyfunc model and register it as a new version; the ``champion``
    alias moves to it when its CV F1 beats the champion's (or ``options.force``). Returns the logged
    model's URI and the version."""
    from hpo.models._pyfunc import log_bundle_model  # MLflow's pyfunc loads only where a model is logged

    target = plan.target
    model = log_bundle_model(
        packaged.bundle,
        packaged.directory,
        example_image=packaged.example_image,
        run=run,
        tracking_uri=target.uri,
    )
    name = plan.registered_model
    registered = register_version(
        model.model_uri,
        name,
        run_id=run.run_id,
        model_id=getattr(model, "model_id", None),
        cv_f1=plan.cv_f1,
        tags={**plan.tags(), "foldtune.run_id": run.run_id},
        tracking_uri=target.uri,
        force=plan.options.force,
        lock=study_lock(plan.storage, f"champion:{name}"),
    )
    run.set_tags({"foldtune.registered": registered.uri, "foldtune.champion": str(registered.champion)})
    return model.model_uri, registered


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _run(plan: RetrainPlan) -> Iterator[RunLog]:
    """The retrain run, a child of the study's run when there is one; FAILED when a step raises."""
    target = plan.target
    tags = plan.tags()
    if target.parent_run_id is not None:
        tags["mlflow.parentRunId"] = target.parent_run_id
    run_name = f"retrain {plan.label} ({plan.options.mode})"
    created = target.client.create_run(target.experiment_id, run_name=run_name, tags=tags)
    run = RunLog(target.client, created.info.run_id)
    try:
        yield run
    except BaseException:
        target.client.set_terminated(run.run_id, status="FAILED")
        raise
    target.client.set_terminated(run.run_id, status="FINISHED")


def _log_plan(plan: RetrainPlan, run: RunLog) -> None:
    """The run's params, config and CV F1s."""
    config = plan.configs[0]
    run.log_params(
        {
            "retrain.mode": plan.options.mode,
            "retrain.trials": ",".join(map(str, plan.numbers)),
            **flat_params(config),
        }
    )
    run.log_dict(config.to_dict(), "config.json")
    per_trial = {key(trial_key(t.number), CV_F1): float(t.value or 0.0) for t in plan.trials}
    run.log_metrics({CV_F1: plan.cv_f1, **per_trial})


def _log_study_plots(plan: RetrainPlan, run: RunLog, *, directory: Path) -> None:
    """Optuna's history / importance / parallel-coordinate plots, on this run and on the study's
    (whose best CV F1 they update)."""
    paths = optuna_plots(plan.study, directory)
    run.log_files(paths, under="optuna")
    if plan.target.parent_run_id is not None and paths:
        study_run = RunLog(plan.target.client, plan.target.parent_run_id)
        study_run.log_files(paths, under="optuna")
        study_run.log_metrics({BEST_CV_F1: plan.cv_f1})


def _predict_members(members: list[Member], data: LoadedData, idx: np.ndarray, classes) -> np.ndarray:
    """Soft-vote probabilities of ``members`` on images ``idx``, each member at its own image size."""
    ensemble = Ensemble(
        Bundle(classes=tuple(classes), members=members), device=members[0].config.budget.device
    )
    base = members[0].config.data

    def images_at(size: int) -> np.ndarray:
        return np.asarray(load_data(base.model_copy(update={"image_size": size})).images[idx])

    return ensemble.predict(images_at, tta="none", vote="soft")
