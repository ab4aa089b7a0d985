"""Study commands: create, list, delete, trials, worker, status, and the one-command main job `run`."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hpo.cli._app import StorageOpt, app, console, err, examples, study_app, user_errors
from hpo.cli.models import TrackingOpt, print_retrain
from hpo.cli.progress import finished_count, print_status, with_trial_progress
from training.config import CVConfig


@study_app.command(
    "create",
    epilog=examples(
        "# 3 folds of test_resnet at 48 px on the built-in mask-competition sample",
        "hpo study create mask --space competition_cpu --data sample-mask",
        "# for workers on many machines: PostgreSQL, every trial tracked in MLflow",
        "export HPO_STORAGE=postgresql://user@db-host/foldtune",
        "hpo study create mask --space mask --data /data/mask --mlflow",
    ),
)
@user_errors
def study_create(
    name: Annotated[str, typer.Argument(help="Study name.")],
    space: Annotated[
        str, typer.Option(help="Search space: a YAML file or a shipped name (quick, default, ...).")
    ],
    data: Annotated[
        str, typer.Option(help="CSV manifest, ImageFolder root, mask-layout root, 'sample' or 'sample-mask'.")
    ],
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
    plots: Annotated[
        bool,
        typer.Option(
            "--plots/--no-plots",
            help="Render each trial's learning curves and out-of-fold confusion matrix for `hpo dashboard` "
            "(about half a second of CPU per 3-fold trial on small models; MLflow runs get them either way).",
        ),
    ] = True,
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
        plots=plots,
    )
    verb = "created" if created else "reusing"
    console.print(f"{verb} study [bold]{name}[/] in {redact(storage_url(storage))}")
    if uri is not None:
        tracking = enable_tracking(optuna_study, storage_url=storage_url(storage), tracking_uri=uri)
        console.print(
            f"MLflow: experiment '{tracking.experiment}', study run {tracking.parent_run_id} "
            f"in {tracking.tracking_uri}"
        )


@study_app.command(
    "list",
    epilog=examples(
        "hpo study list",
        "hpo study list --storage postgresql://user@db-host/foldtune --json",
    ),
)
@user_errors
def study_list(
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every study of the storage: direction, trials by state, best macro-F1, budget."""
    from hpo.study import storage_url, study_summaries
    from storage import open_storage, redact

    url = storage_url(storage)
    summaries = study_summaries(open_storage(url, heartbeat_interval=None))
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
        return
    if not summaries:
        console.print(f"no studies in {redact(url)}; create one with `hpo study create NAME ...`")
        return
    table = Table("study", "direction", "trials", "best", "budget", title=f"studies in {redact(url)}")
    for s in summaries:
        states = ", ".join(f"{n} {state}" for state, n in s.counts.items()) or "none"
        best = f"{s.best_value:.4f} (trial {s.best_number})" if s.best_value is not None else "-"
        budget = f"{s.finished} / {s.budget}" if s.budget else f"{s.finished} / -"
        table.add_row(s.name, s.direction, states, best, budget)
    console.print(table)


@study_app.command(
    "delete",
    epilog=examples(
        "# without asking (for scripts); its MLflow runs and files stay",
        "hpo study delete mask --yes",
    ),
)
@user_errors
def study_delete(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (for scripts).")] = False,
) -> None:
    """Delete a study and all its trials (its MLflow runs, checkpoints and plots stay)."""
    from hpo.errors import UserError
    from hpo.study import delete_study, storage_url
    from storage import redact

    url = storage_url(storage)
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(
                f"study delete {name}: no terminal to confirm on; pass --yes to delete without asking"
            )
        typer.confirm(f"delete study '{name}' and all its trials from {redact(url)}?", abort=True)
    delete_study(name, url)
    console.print(f"deleted study [bold]{name}[/] from {redact(url)}")


@study_app.command(
    "trials",
    epilog=examples(
        "hpo study trials mask",
        "# every trial with its params and fold F1s, for a spreadsheet",
        "hpo study trials mask --csv > trials.csv",
    ),
)
@user_errors
def study_trials(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per trial, in a list.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout, one column per param.")] = False,
) -> None:
    """One row per trial: number, state, value, params, fold F1s, duration, worker, fail/prune reason."""
    from hpo.study import open_study, trial_rows

    study, _ = open_study(name, storage)
    rows = trial_rows(study)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif as_csv:
        _write_trials_csv(rows)
    else:
        table = Table("#", "state", "macro-F1", "s", "params", "reason or worker", title=f"trials of {name}")
        for r in rows:
            params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in r["params"].items())
            table.add_row(
                str(r["number"]),
                r["state"],
                f"{r['value']:.4f}" if r["value"] is not None else "",
                f"{r['duration_s']:.0f}" if r["duration_s"] is not None else "",
                escape(_clip(params, 36)),
                escape(_clip(r["reason"] or r["worker"] or "", 36)),
            )
        console.print(table)
        console.print("--json or --csv give every field in full", style="dim")


def _write_trials_csv(rows: list[dict]) -> None:
    import csv

    params = sorted({key for r in rows for key in r["params"]})
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["number", "state", "value", *params, "fold_f1", "duration_s", "worker", "reason"])
    for r in rows:
        out.writerow(
            [
                r["number"],
                r["state"],
                "" if r["value"] is None else r["value"],
                *(r["params"].get(p, "") for p in params),
                " ".join(str(f) for f in r["fold_f1"]),
                "" if r["duration_s"] is None else r["duration_s"],
                r["worker"] or "",
                r["reason"] or "",
            ]
        )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
