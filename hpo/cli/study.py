"""Study commands: create, list, delete, trials."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hpo.cli._app import StorageOpt, console, examples, study_app, user_errors
from hpo.cli.models import TrackingOpt
from training.config import CVConfig

PRUNER_HELP = (
    "asha (the default, chosen by measurement) | median | hyperband | sh | wilcoxon | none. asha pauses "
    "a trial outside the top third of its peers at a rung (epochs 1, 3, 9, ... of fold 1 and the end of "
    "each fold but the last) and keeps its checkpoints; a paused trial that later ranks there is continued "
    "by a new trial from its last epoch"
)


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
    pruner: Annotated[str, typer.Option(help=PRUNER_HELP)] = "asha",
    keep_paused: Annotated[
        int | None,
        typer.Option(
            help="--pruner asha: paused trials that keep their checkpoints at most; beyond it the "
            "worst-ranked are deleted first (a paused trial holds about 16 bytes per model parameter "
            "per fold it reached: 0.45 GB per fold for convnext_tiny). Default: 20",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for folds and samplers.")] = 0,
    limit: Annotated[
        list[str] | None,
        typer.Option(
            help="Cap on what a trial's model costs, METRIC=VALUE, repeatable: params_m (millions), gflops "
            "(per image), latency_ms (batch 1 on the worker's device). A config over params_m or gflops is "
            "pruned before training; a trial over latency_ms completes but is infeasible (never the best).",
            show_default=False,
        ),
    ] = None,
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
    starts: Annotated[
        bool,
        typer.Option(
            "--starts/--no-starts",
            help="Run the space's starts (or those of the shipped space sharing the most params) first.",
        ),
    ] = True,
    warm_start: Annotated[
        list[str] | None,
        typer.Option(
            help="An earlier study (repeatable): its 4 best configs run first, and on the same data its "
            "finished trials join this one's (outside the budget).",
            show_default=False,
        ),
    ] = None,
    warm_storage: Annotated[
        str | None,
        typer.Option(help="Storage of the --warm-start studies. Default: --storage", show_default=False),
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
        keep_paused=keep_paused,
        plots=plots,
        starts=starts,
        warm_start=warm_start or (),
        warm_storage=warm_storage,
        on_note=lambda line: console.print(escape(line)),
        limits=limit or (),
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
    """One row per trial: number, state, value, params, fold F1s, cost, duration, worker, fail/prune
    reason, where it came from, and the paused trial it continues."""
    from hpo.records import COST_KEYS
    from hpo.study import open_study, trial_rows

    study, _ = open_study(name, storage)
    rows = trial_rows(study)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif as_csv:
        _write_trials_csv(rows)
    else:
        table = Table(
            "#",
            "state",
            "macro-F1",
            "s",
            "origin",
            "continues",
            "M params",
            "GFLOPs",
            "ms",
            "params",
            "reason or worker",
            title=f"trials of {name}",
        )
        for r in rows:
            params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in r["params"].items())
            table.add_row(
                str(r["number"]),
                r["state"],
                f"{r['value']:.4f}" if r["value"] is not None else "",
                f"{r['duration_s']:.0f}" if r["duration_s"] is not None else "",
                escape(_clip(r["origin"] or "", 24)),
                "" if r["continues"] is None else str(r["continues"]),
                *(_short(r[key]) if r[key] is not None else "" for key in COST_KEYS[:3]),
                escape(_clip(params, 36)),
                escape(_clip(r["reason"] or r["worker"] or "", 36)),
            )
        console.print(table)
        console.print("--json or --csv give every field in full", style="dim")


def _write_trials_csv(rows: list[dict]) -> None:
    import csv

    from hpo.records import COST_KEYS

    params = sorted({key for r in rows for key in r["params"]})
    out = csv.writer(sys.stdout, lineterminator="\n")
    cost = [*COST_KEYS, "cost_device", "feasible"]
    fields = ["fold_f1", *cost, "duration_s", "worker", "origin", "reason", "continues"]
    out.writerow(["number", "state", "value", *params, *fields])
    for r in rows:
        out.writerow(
            [
                r["number"],
                r["state"],
                "" if r["value"] is None else r["value"],
                *(r["params"].get(p, "") for p in params),
                " ".join(str(f) for f in r["fold_f1"]),
                *("" if r[key] is None else r[key] for key in COST_KEYS),
                r["cost_device"] or "",
                r["feasible"],
                "" if r["duration_s"] is None else r["duration_s"],
                r["worker"] or "",
                r["origin"] or "",
                r["reason"] or "",
                "" if r["continues"] is None else r["continues"],
            ]
        )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
