"""The commands that run trials: `hpo worker`, `hpo status`, and the one-command main job `hpo run`."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from hpo.cli._app import StorageOpt, app, console, err, examples, user_errors
from hpo.cli.models import TrackingOpt, print_retrain
from hpo.cli.progress import finished_count, print_status, with_trial_progress
from hpo.cli.study import PRUNER_HELP


@app.command(
    epilog=examples(
        "# one process per GPU here (CPU without one) until 200 trials are finished",
        "hpo worker mask --devices auto --n-trials 200",
        "# two CPU trial processes, starting trials for at most an hour",
        "hpo worker mask --devices cpu:2 --timeout 3600",
    )
)
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
    max_failures: Annotated[
        int,
        typer.Option(
            help="Stop after this many failed trials in a row (on this worker, or the study's last ones "
            "on any worker since it started), printing the reason; 0 never stops.",
        ),
    ] = 3,
) -> None:
    """Pull trials from a study, one process per device, until the budget or timeout."""
    from hpo.workers import run_workers

    result = with_trial_progress(
        name,
        storage,
        n_trials,
        lambda on_poll, on_cache, on_trial: run_workers(
            name,
            storage=storage,
            devices=devices,
            n_trials=n_trials,
            timeout=timeout,
            data=data,
            checkpoint_dir=checkpoint_dir,
            heartbeat=heartbeat,
            max_failures=max_failures,
            on_poll=on_poll,
            on_cache=on_cache,
            on_trial=on_trial,
        ),
    )
    print_status(name, storage)
    exit_on_stopped_workers(result)


def exit_on_stopped_workers(result) -> None:
    """Workers that stopped on failures: the reason once, in one line; exit 1."""
    if result.stopped:
        reason = " ".join(result.stopped[0].split())
        n = len(result.stopped) - 1
        more = f"; {n} more worker(s) stopped too" if n else ""
        sys.stderr.write(f"hpo: error: {reason}{more}; fix the cause and run the worker again\n")
    if not result.ok:
        if not result.stopped:
            err.print(f"[red]worker processes exited with codes {result.exit_codes}[/]")
        raise typer.Exit(1)


@app.command(
    epilog=examples(
        "hpo status mask",
        "hpo status mask --json",
    )
)
@user_errors
def status(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Trial counts, best trial, running trials and ETA.

    The budget (finished / N), trials by state, the best trial and its params,
    running trials with their worker and fold/epoch, failed trials grouped by reason.
    """
    print_status(name, storage, as_json=as_json)


@app.command(
    epilog=examples(
        "# the main job on the built-in digits: 8 trials, retrain, register, predict",
        "hpo run",
        "# 20 more trials on the mask-competition sample, no retrain or registry",
        "hpo run --study mask --data sample-mask --n-trials 20 --no-mlflow",
    )
)
@user_errors
def run(
    n_trials: Annotated[int, typer.Option(help="Trials to add to the study in this run.")] = 8,
    workers: Annotated[int, typer.Option(help="CPU worker processes when no GPU is present.")] = 2,
    study: Annotated[str, typer.Option(help="Study name.")] = "demo",
    space: Annotated[str, typer.Option(help="Search space.")] = "quick",
    data: Annotated[
        str, typer.Option(help="Dataset; 'sample' (digits) and 'sample-mask' are built in.")
    ] = "sample",
    pruner: Annotated[str, typer.Option(help=PRUNER_HELP)] = "asha",
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
    tracking = study_tracking(optuna_study) if mlflow else None

    def track() -> None:  # runs while the trial processes import the training stack
        nonlocal tracking
        if mlflow and (tracking is None or tracking_uri):  # a tracked study keeps its URI unless told
            tracking = enable_tracking(
                optuna_study, storage_url=url, tracking_uri=resolve_tracking_uri(tracking_uri)
            )

    target = finished_count(optuna_study) + n_trials
    devices = "auto" if gpu_count() else f"cpu:{workers}"
    console.print(f"study [bold]{study}[/] in {redact(url)}: {n_trials} trials on {devices}")
    started = time.time()
    result = with_trial_progress(
        study,
        url,
        target,
        lambda on_poll, on_cache, on_trial: run_workers(
            study,
            storage=url,
            devices=devices,
            n_trials=target,
            on_poll=on_poll,
            on_cache=on_cache,
            on_trial=on_trial,
            prepare=track,
        ),
    )
    summary = print_status(study, url)
    exit_on_stopped_workers(result)
    if result.interrupted_by is not None:  # Ctrl-C or SIGTERM: stop here, not after a retrain
        err.print("stopped: the running trials were handed back for retry; run `hpo run` again to resume")
        raise typer.Exit(128 + result.interrupted_by)
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

    from hpo.models import RetrainOptions, predict, retrain

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    console.print("\nretraining the best trial's folds as an ensemble ...")
    result = retrain(
        study,
        RetrainOptions(storage=url, registered_model=registered_model),
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
