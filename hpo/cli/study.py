"""Study commands: create, worker, status, and the one-command main job `run`."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from hpo.cli._app import StorageOpt, app, console, err, study_app, user_errors
from hpo.cli.models import TrackingOpt, print_retrain
from hpo.cli.progress import finished_count, print_status, with_trial_progress
from training.config import CVConfig


@study_app.command("create")
@user_errors
def study_create(
    name: Annotated[str, typer.Argument(help="Study name.")],
    space: Annotated[
        str, typer.Option(help="Search space: a YAML file or a shipped name (quick, default, ...).")
    ],
    data: Annotated[str, typer.Option(help="CSV manifest, ImageFolder root, mask-layout root, or 'sample'.")],
    storage: StorageOpt = None,
    folds: Annotated[
        int | None,
        typer.Option(
            help=f"k of the k-fold objective. Default: the space's fixed cv.folds, else {CVConfig().folds}",
            show_default=False,
        ),
    ] = None,
    sampler: Annotated[str, typer.Option(help="tpe | cmaes | gp | random | grid")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median | hyperband | sh | wilcoxon | none")] = "median",
    seed: Annotated[int, typer.Option(help="Seed for folds and samplers.")] = 0,
    mlflow: Annotated[
        bool | None,
        typer.Option(
            "--mlflow/--no-mlflow",
            help="Track every trial as an MLflow child run of one study run. "
            "Default: on when --tracking-uri or $MLFLOW_TRACKING_URI is set",
            show_default=False,
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
    artifacts: Annotated[
        str | None,
        typer.Option(
            help="Directory for trial plots shown in `hpo dashboard` (shared disk for many machines). "
            "Default: .hpo/artifacts",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a study (or reuse it when the inputs are the same)."""
    from hpo.study import create_study, storage_url
    from hpo.tracking import check_reachable, enable_tracking, requested_tracking_uri
    from storage import redact

    uri = requested_tracking_uri(mlflow, tracking_uri)
    if uri is not None:
        check_reachable(uri)  # before the study exists, so a dead server leaves nothing behind
    optuna_study, created = create_study(
        name,
        space=space,
        data=data,
        storage=storage,
        folds=folds,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        artifacts=artifacts,
    )
    verb = "created" if created else "reusing"
    console.print(f"{verb} study [bold]{name}[/] in {redact(storage_url(storage))}")
    if uri is not None:
        tracking = enable_tracking(optuna_study, storage_url=storage_url(storage), tracking_uri=uri)
        console.print(
            f"MLflow: experiment '{tracking.experiment}', study run {tracking.parent_run_id} "
            f"in {tracking.tracking_uri}"
        )


@app.command()
@user_errors
def worker(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    devices: Annotated[
        str, typer.Option(help="auto | cpu | cpu:N | GPU indices like 0,1 (one process each).")
    ] = "auto",
    n_trials: Annotated[
        int | None, typer.Option(help="Study-wide budget of finished (complete + pruned) trials.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds.")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Where the study's data lives on this machine.")] = None,
    checkpoint_dir: Annotated[
        str,
        typer.Option(
            help="Per-fold checkpoints for resuming retried trials (shared disk for many machines)."
        ),
    ] = ".hpo/checkpoints",
    heartbeat: Annotated[
        int,
        typer.Option(
            help="Seconds between heartbeats of a running trial; a trial silent for 2 beats + 10 s "
            "is failed and retried by another worker.",
        ),
    ] = 30,
) -> None:
    """Pull trials from a study, one process per device, until the budget or timeout."""
    from hpo.workers import run_workers

    codes = with_trial_progress(
        name,
        storage,
        n_trials,
        lambda on_poll, on_cache: run_workers(
            name,
            storage=storage,
            devices=devices,
            n_trials=n_trials,
            timeout=timeout,
            data=data,
            checkpoint_dir=checkpoint_dir,
            heartbeat=heartbeat,
            on_poll=on_poll,
            on_cache=on_cache,
        ),
    )
    print_status(name, storage)
    if any(code != 0 for code in codes):
        err.print(f"[red]worker processes exited with codes {codes}[/]")
        raise typer.Exit(1)


@app.command()
@user_errors
def status(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Trial counts, best trial, running trials and ETA."""
    print_status(name, storage, as_json=as_json)


@app.command()
@user_errors
def run(
    n_trials: Annotated[int, typer.Option(help="Trials to add to the study in this run.")] = 8,
    workers: Annotated[int, typer.Option(help="CPU worker processes when no GPU is present.")] = 2,
    study: Annotated[str, typer.Option(help="Study name.")] = "demo",
    space: Annotated[str, typer.Option(help="Search space.")] = "quick",
    data: Annotated[str, typer.Option(help="Dataset; 'sample' is the built-in one.")] = "sample",
    pruner: Annotated[str, typer.Option(help="median | hyperband | sh | wilcoxon | none")] = "median",
    storage: StorageOpt = None,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow/--no-mlflow",
            help="Track trials in MLflow, then retrain the best trial, register it and predict the data.",
        ),
    ] = True,
    tracking_uri: TrackingOpt = None,
    registered_model: Annotated[
        str | None, typer.Option(help="Registered model name. Default: the study name.", show_default=False)
    ] = None,
) -> None:
    """The main job: sample data -> SQLite study -> workers -> retrain best -> registry -> predictions."""
    from hpo.study import create_study, storage_url
    from hpo.tracking import enable_tracking, resolve_tracking_uri, study_tracking
    from hpo.workers import gpu_count, run_workers
    from storage import redact

    url = storage_url(storage)
    optuna_study, _ = create_study(study, space=space, data=data, storage=url, pruner=pruner)
    tracking = None
    if mlflow:  # a study tracked before keeps its URI unless --tracking-uri names one
        tracking = study_tracking(optuna_study)
        if tracking is None or tracking_uri:
            tracking = enable_tracking(
                optuna_study, storage_url=url, tracking_uri=resolve_tracking_uri(tracking_uri)
            )
    target = finished_count(optuna_study) + n_trials
    devices = "auto" if gpu_count() else f"cpu:{workers}"
    console.print(f"study [bold]{study}[/] in {redact(url)}: {n_trials} trials on {devices}")
    started = time.time()
    with_trial_progress(
        study,
        url,
        target,
        lambda on_poll, on_cache: run_workers(
            study, storage=url, devices=devices, n_trials=target, on_poll=on_poll, on_cache=on_cache
        ),
    )
    summary = print_status(study, url)
    best = summary.best_value
    console.print(
        f"\nbest macro-F1: [bold green]{best:.4f}[/] (trial {summary.best_number})"
        if best is not None
        else "\nno trial completed"
    )
    console.print(f"finished in {time.time() - started:.0f} s; the study lives in {redact(url)}")
    if tracking is not None and best is not None:
        _retrain_and_predict(study, url, data, tracking, registered_model)
    console.print(f"next: [bold]hpo status {study}[/]")


def _retrain_and_predict(study: str, url: str, data: str, tracking, registered_model: str | None) -> None:
    """The end of the main job: best trial -> fold ensemble in the registry -> predictions CSV."""
    import os
    from pathlib import Path

    from hpo.models import predict, retrain

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    console.print("\nretraining the best trial's folds as an ensemble ...")
    result = retrain(
        study,
        storage=url,
        registered_model=registered_model,
        on_fold=lambda n, what, f1: err.print(f"trial {n} {what}: macro-F1 {f1:.4f}"),
    )
    print_retrain(result)
    champion = f"models:/{result.registered.name}@champion"
    out = Path(".hpo") / f"predictions-{study}.csv"
    predicted = predict(champion, data, out, probs=True, tracking_uri=tracking.uri())
    console.print(f"predictions of {champion} for {predicted.n_images} images: {out}")
    ui = tracking.tracking_uri
    console.print(
        f"MLflow UI: {ui}" if ui.startswith("http") else f"MLflow UI: mlflow ui --backend-store-uri {ui}"
    )
    console.print(
        f"predict new images: [bold]hpo predict --model {champion} --data DIR --out submission.csv[/]"
    )
