"""`hpo`: the one command-line face of foldtune (typer + rich). Commands parse, call the library, print."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo.errors import USER_ERRORS

app = typer.Typer(
    help="Hyperparameter optimization for image classifiers: Optuna studies, GPU workers, pruned k-fold.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold database URLs with passwords
)
study_app = typer.Typer(help="Create and inspect studies.", no_args_is_help=True)
space_app = typer.Typer(help="Inspect YAML search spaces.", no_args_is_help=True)
storage_app = typer.Typer(help="Study storage: schema upgrades and the gRPC proxy.", no_args_is_help=True)
app.add_typer(study_app, name="study")
app.add_typer(space_app, name="space")
app.add_typer(storage_app, name="storage")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Study storage: sqlite:///file.db, postgresql://..., mysql://..., a .log journal file, "
        "grpc://host:port. Default: $HPO_STORAGE, else sqlite:///.hpo/foldtune.db",
        show_default=False,
    ),
]


def user_errors(fn: F) -> F:
    """Bad input becomes one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            sys.stderr.write(f"hpo: error: {' '.join(str(exc).split())}\n")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    import optuna

    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)


# ---------------------------------------------------------------- study


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
) -> None:
    """Create a study (or reuse it when the inputs are the same)."""
    from hpo.study import create_study, storage_url
    from storage import redact

    _, created = create_study(
        name, space=space, data=data, storage=storage, folds=folds, sampler=sampler, pruner=pruner, seed=seed
    )
    verb = "created" if created else "reusing"
    console.print(f"{verb} study [bold]{name}[/] in {redact(storage_url(storage))}")


# ---------------------------------------------------------------- worker


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

    codes = _with_trial_progress(
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
    _print_status(name, storage)
    if any(code != 0 for code in codes):
        err.print(f"[red]worker processes exited with codes {codes}[/]")
        raise typer.Exit(1)


# ---------------------------------------------------------------- status


@app.command()
@user_errors
def status(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Trial counts, best trial, running trials and ETA."""
    _print_status(name, storage, as_json=as_json)


# ---------------------------------------------------------------- run


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
    target = _finished(optuna_study) + n_trials
    devices = "auto" if gpu_count() else f"cpu:{workers}"
    console.print(f"study [bold]{study}[/] in {redact(url)}: {n_trials} trials on {devices}")
    started = time.time()
    _with_trial_progress(
        study,
        url,
        target,
        lambda on_poll, on_cache: run_workers(
            study, storage=url, devices=devices, n_trials=target, on_poll=on_poll, on_cache=on_cache
        ),
    )
    summary = _print_status(study, url)
    best = summary.best_value
    console.print(
        f"\nbest macro-F1: [bold green]{best:.4f}[/] (trial {summary.best_number})"
        if best is not None
        else "\nno trial completed"
    )
    console.print(f"finished in {time.time() - started:.0f} s; the study lives in {redact(url)}")
    console.print(f"next: [bold]hpo status {study}[/]")


# ---------------------------------------------------------------- space


@space_app.command("show")
@user_errors
def space_show(path: Annotated[str, typer.Argument(help="YAML file or shipped space name.")]) -> None:
    """Print a search space: fixed values and searched parameters."""
    from hpo.space import load_space

    space = load_space(path)
    if space.description:
        console.print(space.description)
    fixed = Table("fixed", "value", title="fixed")
    for key, value in space.fixed.items():
        fixed.add_row(key, repr(value))
    params = Table("param", "range", "when", title="searched")
    for row in space.rows():
        params.add_row(*row)
    console.print(fixed, params)


# ---------------------------------------------------------------- storage


@storage_app.command("upgrade")
@user_errors
def storage_upgrade(storage: StorageOpt = None) -> None:
    """Migrate the study database schema to this Optuna version."""
    from hpo.study import storage_url
    from storage import redact, upgrade_schema

    url = storage_url(storage)
    version = upgrade_schema(url)
    console.print(f"{redact(url)} is at schema version {version}")


@storage_app.command("serve")
@user_errors
def storage_serve(
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option(help="Bind address; keep 127.0.0.1 unless workers are remote.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gRPC port.")] = 13000,
) -> None:
    """Serve the storage over gRPC so very many workers share a few database connections."""
    from hpo.study import storage_url
    from storage import redact, serve_proxy

    url = storage_url(storage)
    console.print(f"serving {redact(url)} on grpc://{host}:{port}")
    serve_proxy(url, host=host, port=port)


# ---------------------------------------------------------------- helpers


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _with_trial_progress(name: str, storage: str | None, target: int | None, work: Callable) -> Any:
    """Run ``work(on_poll, on_cache)`` under progress bars for data caching and finished trials.

    The bars appear with the first report, so input errors raised before any work stay one line.
    """
    from hpo.status import study_status
    from hpo.study import open_study

    study, _ = open_study(name, storage)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=err, transient=False)
    cache_task = progress.add_task("decoding images", total=None, visible=False)
    trials_task = progress.add_task("trials", total=target)
    last = [0.0]

    def on_cache(done: int, total: int) -> None:
        progress.start()
        progress.update(cache_task, completed=done, total=total, visible=True)

    def on_poll() -> None:
        if time.time() - last[0] < 1.0:
            return
        progress.start()
        last[0] = time.time()
        s = study_status(study)
        best = f"best {s.best_value:.4f}" if s.best_value is not None else "no result yet"
        running = "; ".join(f"#{r.number} {r.progress}" for r in s.running)
        done = s.counts.get("complete", 0) + s.counts.get("pruned", 0)
        progress.update(trials_task, completed=done, description=f"trials ({best}) {running}")

    try:
        result = work(on_poll, on_cache)
        last[0] = 0.0
        on_poll()
    finally:
        progress.stop()
    return result


def _print_status(name: str, storage: str | None, *, as_json: bool = False):
    from hpo.status import study_status
    from hpo.study import open_study

    study, _ = open_study(name, storage)
    s = study_status(study, target=study.user_attrs.get("budget"))
    if as_json:
        console.print_json(json.dumps(s.to_dict(), default=str))
        return s
    counts = (
        Table(*s.counts.keys(), title=f"study {name}")
        if s.counts
        else Table(title=f"study {name}: no trials")
    )
    if s.counts:
        counts.add_row(*(str(v) for v in s.counts.values()))
    console.print(counts)
    if s.best_value is not None:
        best = Table("param", "value", title=f"best trial {s.best_number}: macro-F1 {s.best_value:.4f}")
        for key, value in s.best_params.items():
            best.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(best)
    if s.running:
        running = Table("trial", "host", "device", "elapsed", "progress", title="running")
        for r in s.running:
            running.add_row(str(r.number), r.host, r.device, f"{r.elapsed_s:.0f} s", r.progress)
        console.print(running)
    if s.mean_trial_s is not None:
        eta = f"; ETA {s.eta_s:.0f} s to the budget" if s.eta_s else ""
        console.print(f"mean trial time {s.mean_trial_s:.1f} s{eta}")
    return s
