"""Data commands: `data check` (every problem at once) and `data report` (EDA page with charts)."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo.cli._app import console, data_app, err, examples, quiet, user_errors
from hpo.errors import UserError
from training.config import CVConfig

DataArg = Annotated[
    str, typer.Argument(help="CSV manifest, ImageFolder root, mask-layout root, 'sample' or 'sample-mask'.")
]
FormatOpt = Annotated[str, typer.Option("--format", help="auto | csv | imagefolder | mask | sample")]
_SHOWN_PER_KIND = 20  # text output lists this many findings of a kind; --json has them all
_SHOWN_CLASSES = 40  # rows of the class table; --json has them all


@contextmanager
def _progress(description: str, *, hidden: bool):
    """A bar on stderr that appears with the first report; ``hidden`` (--quiet, --json) drops it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # a bar is for people: not drawn into pipes and logs, where rich would only leave a blank line
    progress = Progress(
        *columns, console=err, transient=True, disable=hidden or quiet() or not err.is_terminal
    )
    task = progress.add_task(description, total=None)
    started = []

    def update(done: int, total: int) -> None:
        if not started:
            progress.start()
            started.append(True)
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if started:  # Progress.stop() writes a newline even when it never showed
            progress.stop()


@data_app.command(
    "check",
    epilog=examples(
        "hpo data check sample-mask",
        "# a CSV manifest for a 5-fold study, as JSON for a script",
        "hpo data check labels.csv --folds 5 --json",
    ),
)
@user_errors
def data_check(
    data: DataArg,
    fmt: FormatOpt = "auto",
    folds: Annotated[
        int,
        typer.Option(
            help="k of the planned k-fold: classes need k images (k groups). Default: "
            f"{CVConfig().folds}, as `hpo study create` without --folds; pass the space's cv.folds "
            "if it fixes one (mask: 5)",
            show_default=False,
        ),
    ] = CVConfig().folds,
    near_similarity: Annotated[
        float,
        typer.Option(
            help="Thumbnail correlation from which two images are near duplicates; >1 turns it off."
        ),
    ] = 0.99,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Every problem of a dataset at once, then the images per class.

    Missing, corrupt or truncated images, odd pixel modes, classes thinner than
    the folds, label typos, mixed groups, duplicates across groups.
    Exit 1 when there are errors; warnings alone exit 0.
    """
    from hpo.data import check_data

    if folds < 2:
        raise UserError(f"--folds is {folds}; k-fold needs at least 2")
    with _progress("checking images", hidden=as_json) as update:
        report = check_data(data, fmt=fmt, folds=folds, near_similarity=near_similarity, progress=update)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_findings(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_findings(report) -> None:
    shown: Counter[str] = Counter()
    for f in report.findings:
        shown[f.kind] += 1
        if shown[f.kind] > _SHOWN_PER_KIND:
            continue
        colour = "red" if f.severity == "error" else "yellow"
        console.print(
            f"[{colour}]{f.severity}[/] [bold]{f.kind}[/] {escape(f.where)}: {escape(f.message)}",
            highlight=False,
            soft_wrap=True,
        )
    for kind, n in shown.items():
        if n > _SHOWN_PER_KIND:
            console.print(f"... and {n - _SHOWN_PER_KIND} more {kind} (--json lists all)", highlight=False)
    _print_class_counts(report.class_counts)
    groups = f", {report.n_groups} groups" if report.n_groups is not None else ""
    verdict = "[red]errors: fix them before training[/]" if report.errors else "[green]ok[/]"
    console.print(
        f"{report.n_images} images, {report.n_classes} classes{groups} ({report.format}): "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s): {verdict}",
        highlight=False,
        soft_wrap=True,
    )


def _print_class_counts(counts: dict[str, int]) -> None:
    """Images per class, by readable name (mask layout: "4 wear/female/30-59"), smallest share marked."""
    if not counts:
        return
    total = sum(counts.values())
    smallest = min(counts.values())
    table = Table("class", "images", "share", box=box.SIMPLE, pad_edge=False, show_edge=False)
    for i, (name, n) in enumerate(counts.items()):
        if i == _SHOWN_CLASSES:
            table.add_row(f"... {len(counts) - i} more classes (--json lists all)", "", "")
            break
        style = "yellow" if n == smallest and len(counts) > 1 else None
        table.add_row(escape(name), str(n), f"{n / total:.1%}", style=style)
    console.print(table)


@data_app.command(
    "report",
    epilog=examples(
        "# then open report/index.html",
        "hpo data report sample-mask --out report",
    ),
)
@user_errors
def data_report(
    data: DataArg,
    out: Annotated[str, typer.Option(help="Folder for index.html and the PNG charts (created).")],
    fmt: FormatOpt = "auto",
    samples: Annotated[int, typer.Option(help="Sample images per class in the grids.")] = 8,
    seed: Annotated[int, typer.Option(help="Which samples are drawn.")] = 0,
) -> None:
    """Write an EDA page: class balance, per-group counts, image sizes and a sample grid per class."""
    from hpo.data import write_report

    if samples < 1:
        raise UserError(f"--samples is {samples}; show at least 1 image per class")
    with _progress("reading images", hidden=False) as update:
        files = write_report(data, out, fmt=fmt, samples_per_class=samples, seed=seed, progress=update)
    console.print(
        f"wrote {files.html} ({len(files.images)} PNGs); open it in a browser",
        highlight=False,
        soft_wrap=True,
    )
