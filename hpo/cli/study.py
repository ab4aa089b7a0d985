"""Study commands: create, worker, status, and the one-command main job `run`."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from hpo.cli._app import StorageOpt, app, console, err, study_app, user_errors
from hpo.cli.progress import finished_count, print_status, with_trial_progress


@study_app.command("create")
@user_errors
def study_create(
    name: Annotated[str, typer.Argument(help="Study name.")],
    space: Annotated[
        str, typer.Option(help="Search space: a YAML file or a shipped name (quick, default, ...).")
    ],
    data: Annotated[str, typer.Option(help="CSV manifest, ImageFolder root, mask-layout root, or 'sample'.")],
    storage: StorageOpt = None,
    folds: Annotated[int, typer.Option(help="k of the k-fold objective.")] = 3,
    sampler: Annotated[str, typer.Option(help="tpe | cmaes | gp | random | grid")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median | hyperband | sh | wilcoxon | none")] = "median",
    seed: Annotated[int, typer.Option(help="Seed for folds and samplers.")] = 0,
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
    from storage import redact

    _, created = create_study(
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
) -> None:
    """Pull trials from a study, one process per device, until the budget or timeout."""
    from hpo.worker import run_workers

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
) -> None:
    """The main job on embedded defaults: sample data -> SQLite study -> workers -> summary."""
    from hpo.study import create_study, storage_url
    from hpo.worker import gpu_count, run_workers
    from storage import redact

    url = storage_url(storage)
    optuna_study, _ = create_study(study, space=space, data=data, storage=url, pruner=pruner)
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
    console.print(f"next: [bold]hpo status {study}[/]")
