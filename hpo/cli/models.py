"""Model commands: `retrain` (best trials -> MLflow -> registry), `predict` and `evaluate`."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hpo.cli._app import StorageOpt, app, console, err, examples, user_errors

__all__ = ["TrackingOpt", "print_retrain"]

TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (http://host:5000, sqlite:///mlflow.db). Default: the study's, then "
        "$MLFLOW_TRACKING_URI, else sqlite:///.hpo/mlflow.db",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, or a model directory (bundle or MLflow)."
    ),
]
TtaOpt = Annotated[
    str | None,
    typer.Option(help="Test-time augmentation: none | hflip | vflip | flips. Default: the model's own."),
]
VoteOpt = Annotated[
    str | None,
    typer.Option(help="Ensemble vote: soft (mean probabilities) | hard (majority). Default: soft."),
]
NoBiasOpt = Annotated[
    bool,
    typer.Option("--no-bias", help="Skip the model's per-class bias (fitted on out-of-fold predictions)."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", "--batch", help="Images per forward pass.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@app.command(
    epilog=examples(
        "# the 5 best trials, 2 seeds each: a fold ensemble weighted out of fold",
        "hpo retrain mask --top-k 5 --seeds 2",
        "# one trial, one model on all its data, under its own registered name",
        "hpo retrain mask --trial 12 --mode full --registered-model mask-full",
    )
)
@user_errors
def retrain(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    top_k: Annotated[
        int,
        typer.Option(help="Candidates: the K best complete trials; out-of-fold F1 picks their weights."),
    ] = 1,
    trial: Annotated[
        int | None, typer.Option(help="Retrain this trial number instead of the best.", show_default=False)
    ] = None,
    mode: Annotated[
        str, typer.Option(help="folds: keep the k fold models as an ensemble | full: one model on all data.")
    ] = "folds",
    seeds: Annotated[
        int, typer.Option(help="Retrain each trial with N seeds; a trial's seeds share its weight.")
    ] = 1,
    bias: Annotated[
        str,
        typer.Option(
            help="Per-class bias fitted on out-of-fold predictions: auto (kept when it beats the plain "
            "blend on folds it was not fitted on) | on | off."
        ),
    ] = "auto",
    registered_model: Annotated[
        str | None, typer.Option(help="Registered model name. Default: the study name.", show_default=False)
    ] = None,
    tracking_uri: TrackingOpt = None,
    force: Annotated[
        bool, typer.Option(help="Move the 'champion' alias even if the CV F1 is lower.")
    ] = False,
    data: Annotated[str | None, typer.Option(help="Where the study's data lives on this machine.")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Retrain the best trials from their stored configs, log to MLflow, register, maybe promote."""
    from hpo.models import RetrainOptions, retrain as run_retrain

    _quiet_mlflow()

    def on_fold(number: int, what: str, f1: float) -> None:
        err.print(f"trial {number} {what}: macro-F1 {f1:.4f}")

    options = RetrainOptions(
        storage=storage,
        top_k=top_k,
        trial=trial,
        mode=mode,
        seeds=seeds,
        bias=bias,
        registered_model=registered_model,
        tracking_uri=tracking_uri,
        force=force,
        data=data,
        device=device,
    )
    print_retrain(run_retrain(name, options, on_fold=on_fold))


def print_retrain(result) -> None:
    for skipped, better in result.twins.items():
        err.print(f"skipped trial {skipped}: same params as trial {better}", highlight=False)
    trials = ", ".join(map(str, result.trials))
    seeds = f", {result.seeds} seeds" if result.seeds > 1 else ""
    oof = f", out-of-fold {result.oof_f1:.4f}" if result.oof_f1 is not None else ""
    if result.train_f1 is not None:
        oof += f", training macro-F1 {result.train_f1:.4f} (on images it trained on, not held out)"
    console.print(
        f"retrained trial(s) {trials} ({result.mode}{seeds}, {result.n_members} member(s)): "
        f"CV macro-F1 {result.cv_f1:.4f}{oof}"
    )
    if (picked := result.ensemble) is not None:
        for number, f1 in picked.member_f1.items():
            console.print(
                f"  trial {number}: out-of-fold macro-F1 {f1:.4f}, weight {picked.weights[number]:.2f}"
            )
        console.print(
            f"ensemble out-of-fold macro-F1 {picked.ensemble_f1:.4f}; with its class bias "
            f"{picked.biased_f1:.4f} (fitted on these predictions), {picked.heldout_biased_f1:.4f} "
            "(fitted on the other folds)"
        )
        plain = f"{picked.ensemble_f1:.4f} without it"
        console.print(
            "class bias kept in the bundle (--no-bias skips it at predict time)"
            if picked.bias_kept
            else f"class bias not kept: fitted on the other folds it scores {picked.heldout_biased_f1:.4f}, "
            f"not above {plain} (--bias on keeps it)"
        )
    console.print(f"MLflow run {result.run_id} (experiment {result.experiment_id}) in {result.tracking_uri}")
    reg = result.registered
    if reg.champion:
        before = f" (was version {reg.previous_version})" if reg.previous_version else ""
        console.print(f"registered {reg.uri}: now [bold green]@champion[/]{before}")
    else:
        console.print(
            f"registered {reg.uri}: champion stays version {reg.previous_version} "
            f"(CV F1 {reg.previous_cv_f1:.4f} >= {reg.cv_f1:.4f}); --force moves it anyway"
        )


@app.command(
    epilog=examples(
        "# a submission (ImageID,ans) for the eval split of a mask-layout root",
        "hpo predict --model models:/mask@champion --data /data/mask --out sub.csv",
        "# a folder of images: path, label and the probability of every class",
        "hpo predict --model models:/mask@champion --data images/ --out p.csv --probs",
    )
)
@user_errors
def predict(
    model: ModelOpt,
    data: Annotated[
        str, typer.Option(help="Images: the mask-layout root, a CSV with a path column, a folder.")
    ],
    out: Annotated[str, typer.Option(help="CSV to write (atomically: no file if anything fails).")],
    tta: TtaOpt = None,
    vote: VoteOpt = None,
    labels: Annotated[
        bool, typer.Option("--labels", help="DATA is labeled (path,label CSV, ImageFolder): report macro-F1.")
    ] = False,
    probs: Annotated[
        bool, typer.Option("--probs", help="Add prob_<class> columns (path,label layout).")
    ] = False,
    no_bias: NoBiasOpt = False,
    batch_size: BatchOpt = 128,
    device: DeviceOpt = "auto",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Predict with a registered or local model: fold/top-k ensemble, optional TTA, submission CSV.

    The CSV is ImageID,ans for the eval split of the mask layout, else path,label
    (and with --probs a prob_<class> column per class). It is written to a temp
    file and renamed into place, so a failure leaves no file.
    """
    from hpo.models import predict as run_predict

    _quiet_mlflow()
    result = run_predict(
        model,
        data,
        out,
        tta=tta,
        vote=vote,
        labels=labels,
        probs=probs,
        bias=not no_bias,
        batch_size=batch_size,
        device=device,
        tracking_uri=tracking_uri,
    )
    columns = "ImageID,ans" if result.layout == "mask" else "path,label" + (",prob_*" if probs else "")
    console.print(
        f"wrote {result.out} ({columns}): {result.n_images} images, {result.n_members} member(s), "
        f"tta={result.tta}, vote={result.vote}, bias={result.bias}"
    )
    if result.report is not None:
        _print_report(result.report)
        _warn_overlap(result.overlap)


@app.command(
    epilog=examples(
        "hpo evaluate --model models:/mask@champion --data /data/holdout.csv",
        "# with flipped views, as JSON",
        "hpo evaluate --model models:/mask/3 --data holdout/ --tta flips --json",
    )
)
@user_errors
def evaluate(
    model: ModelOpt,
    data: Annotated[str, typer.Option(help="Labeled images: CSV manifest, ImageFolder or mask-layout root.")],
    tta: TtaOpt = None,
    vote: VoteOpt = None,
    no_bias: NoBiasOpt = False,
    batch_size: BatchOpt = 128,
    device: DeviceOpt = "auto",
    tracking_uri: TrackingOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Macro-F1 and a per-class report of a model on a labeled set.

    On the mask layout the classes are named (4 wear/female/30-59) and macro-F1 is
    also given per attribute (mask, gender, age). A warning on stderr says how many
    of the images the model trained on.
    """
    import json

    from hpo.models import evaluate as run_evaluate

    _quiet_mlflow()
    result = run_evaluate(
        model,
        data,
        tta=tta,
        vote=vote,
        bias=not no_bias,
        batch_size=batch_size,
        device=device,
        tracking_uri=tracking_uri,
    )
    if as_json:
        console.print_json(json.dumps(result.report))
    else:
        console.print(
            f"{result.n_images} images, {result.n_members} member(s), tta={result.tta}, vote={result.vote}, "
            f"bias={result.bias}"
        )
        _print_report(result.report)
    _warn_overlap(result.overlap)


def _print_report(report: dict) -> None:
    table = Table("class", "precision", "recall", "F1", "support", title="per class")
    for cls, row in report["per_class"].items():
        table.add_row(
            escape(row.get("name", cls)),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    console.print(table)
    console.print(f"macro-F1 [bold]{report['macro_f1']:.4f}[/]  accuracy {report['accuracy']:.4f}")
    if attributes := report.get("attribute_f1"):  # mask layout
        shown = ", ".join(f"{name} {f1:.4f}" for name, f1 in attributes.items())
        console.print(f"macro-F1 per attribute: {shown}")


def _warn_overlap(overlap) -> None:
    """On stderr, so --json stays parseable; --quiet still shows it: it changes what the score means."""
    if overlap is not None and overlap.n_seen:
        err.print(f"[yellow]warning:[/] {escape(overlap.message())}", highlight=False, soft_wrap=True)
