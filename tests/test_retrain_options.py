"""`hpo retrain`'s options object and the MLflow metric names, in process (no training, no MLflow)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer

from hpo.cli import app
from hpo.errors import UserError
from hpo.models import RetrainOptions
from hpo.tracking import _metric_names as names, epoch_metrics
from training.loop import EpochStats

DOC = Path(__file__).resolve().parents[1] / "docs" / "mlflow.md"
STATS = EpochStats(
    epoch=3, train_loss=0.9, val_loss=1.1, f1=0.5, accuracy=0.6, lr=0.01, seconds=2.0, images_per_sec=80.0
)


def test_cli_flags_default_to_the_options_defaults() -> None:
    command = typer.main.get_command(app).commands["retrain"]
    flags = {p.name: p.default for p in command.params if p.name != "name"}
    defaults = {f.name: f.default for f in dataclasses.fields(RetrainOptions)}
    assert flags == defaults


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (RetrainOptions(mode="kfold"), "--mode: unknown 'kfold'; use one of: folds, full"),
        (RetrainOptions(seeds=0), "--seeds: 0 must be at least 1"),
        (RetrainOptions(bias="maybe"), "--bias: unknown 'maybe'; use one of: auto, on, off"),
    ],
)
def test_bad_options_fail_in_one_line_before_the_study_opens(options: RetrainOptions, flag: str) -> None:
    with pytest.raises(UserError) as caught:
        options.check()
    assert str(caught.value) == flag


def test_each_epoch_metric_has_one_name_per_prefix() -> None:
    held_out = epoch_metrics("fold2", STATS)
    assert held_out == {
        "fold2/train_loss": 0.9,
        "fold2/val_loss": 1.1,
        "fold2/f1": 0.5,
        "fold2/accuracy": 0.6,
        "fold2/lr": 0.01,
        "fold2/epoch_seconds": 2.0,
        "fold2/images_per_sec": 80.0,
    }
    # a full-data retrain scores images it trains on: no name says "validation"
    on_training = epoch_metrics("trial1/full", STATS, on_training_images=True)
    assert set(on_training) == {
        "trial1/full/train_loss",
        "trial1/full/train_subset_loss",
        "trial1/full/train_f1",
        "trial1/full/train_accuracy",
        "trial1/full/lr",
        "trial1/full/epoch_seconds",
        "trial1/full/images_per_sec",
    }


def test_the_docs_name_every_metric() -> None:
    text = DOC.read_text(encoding="utf-8")
    constants = {getattr(names, n) for n in names.__all__ if n.isupper() and n not in ("OOF", "TRAIN")}
    per_epoch = {
        k.rpartition("/")[2] for on in (False, True) for k in epoch_metrics("x", STATS, on_training_images=on)
    }
    metrics = constants | per_epoch
    assert len(metrics) >= 20
    assert {m for m in metrics if not re.search(rf"\b{m}\b", text)} == set()
