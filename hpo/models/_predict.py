"""``hpo predict`` / ``hpo evaluate``: a model's ensemble on a dataset -> submission CSV or a report.

Preprocessing comes from the bundle, never from flags: each member sees the images decoded and
resized by ``training.cache`` at its own training size and normalized with its own mean/std.
The CSV is written to a temp file beside ``--out`` and renamed into place, so a failure at any point
leaves no file (and an older file at that path untouched).

    >>> result = predict("models:/mask@champion", "/data/mask", "submission.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo.errors import UserError
from hpo.models._bundle import VOTES, Bundle, load_bundle
from hpo.models._ensemble import Ensemble, tta_views
from hpo.models._overlap import Overlap, training_overlap
from hpo.models._registry import download_model
from training.cache import load_images
from training.config import DataConfig
from training.data import ImageTable, UnlabeledTable, load_table, load_unlabeled
from training.metrics import classification_report

__all__ = ["PredictResult", "atomic_output", "evaluate", "predict"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_output(out: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``out``; on success it replaces ``out``, on any error it is removed.

    The temp file is made first, so an unwritable destination fails before any work is done.
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out: {out} is a directory; give a file name such as {out / 'submission.csv'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        # mkdir says "File exists" when a file stands where a folder should be
        reason = "a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror or exc
        raise UserError(
            f"--out: cannot write to {out.parent.resolve()} ({reason}); choose a writable directory"
        ) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the submission from other users
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class PredictResult:
    out: Path | None
    n_images: int
    layout: str  # "mask" (ImageID,ans) or "files" (path,label[,prob_*])
    tta: str
    vote: str
    n_members: int
    report: dict[str, Any] | None = None  # with labels: macro_f1, accuracy, per-class, confusion
    classes: tuple[str, ...] = field(default=())
    overlap: Overlap | None = None  # with labels: how many images the model trained on (None: unknown)
    bias: str = "none"  # the class bias: "on" (applied), "off" (--no-bias) or "none" (the model has none)


def predict(
    model: str,
    data: str,
    out: str | Path,
    *,
    tta: str | None = None,
    vote: str | None = None,
    labels: bool = False,
    probs: bool = False,
    bias: bool = True,
    batch_size: int = 128,
    device: str = "auto",
    cache_dir: str | Path = DataConfig().cache_dir,
    tracking_uri: str | None = None,
) -> PredictResult:
    """Predict ``data`` with ``model`` (models:/NAME@ALIAS, models:/NAME/VERSION or a local path).

    ``bias``: apply the model's class bias (fitted on out-of-fold predictions), if it has one.
    ``labels``: ``data`` is a labeled set (CSV manifest, ImageFolder, mask train split); the result
    then carries a report with macro-F1. The mask eval layout gives ``ImageID,ans``; anything else
    ``path,label`` plus ``prob_<class>`` columns with ``probs``.
    """
    with atomic_output(out) as tmp:
        result, table, p = _run(
            model,
            data,
            tta=tta,
            vote=vote,
            labels=labels,
            bias=bias,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
            tracking_uri=tracking_uri,
        )
        try:
            _write_csv(tmp, table, result.classes, p, with_probs=probs)
        except OSError as exc:  # disk full, quota: the temp file goes, the user gets one line
            raise UserError(
                f"--out: cannot write {out} ({exc.strerror or exc}); free some space or choose "
                "another directory"
            ) from None
    return PredictResult(**{**result.__dict__, "out": Path(out)})


def evaluate(
    model: str,
    data: str,
    *,
    tta: str | None = None,
    vote: str | None = None,
    bias: bool = True,
    batch_size: int = 128,
    device: str = "auto",
    cache_dir: str | Path = DataConfig().cache_dir,
    tracking_uri: str | None = None,
) -> PredictResult:
    """Macro-F1 and the per-class report of ``model`` on the labeled set ``data``.

    The report names the classes (mask layout: "4 wear/female/30-59", plus ``attribute_f1``: macro-F1
    of mask, gender and age band) and says in ``training_overlap`` how many images the model was
    trained on (``hpo.models._overlap``); the result's ``overlap`` holds the same.
    """
    result, _, _ = _run(
        model,
        data,
        tta=tta,
        vote=vote,
        labels=True,
        bias=bias,
        batch_size=batch_size,
        device=device,
        cache_dir=cache_dir,
        tracking_uri=tracking_uri,
    )
    return result


def _run(
    model: str,
    data: str,
    *,
    tta: str | None,
    vote: str | None,
    labels: bool,
    bias: bool,
    batch_size: int,
    device: str,
    cache_dir: str | Path,
    tracking_uri: str | None,
) -> tuple[PredictResult, UnlabeledTable, np.ndarray]:
    if batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} must be at least 1")
    with _bundle_dir(model, tracking_uri) as directory:
        bundle = load_bundle(directory)
    tta = tta or bundle.tta
    vote = vote or bundle.vote
    tta_views(tta)
    if vote not in VOTES:
        raise UserError(f"--vote: unknown '{vote}'; use one of: {', '.join(VOTES)}")

    y_true, layout, overlap = None, None, None
    if labels:
        labeled = load_table(data)
        y_true = _model_labels(labeled, bundle, data)
        # classes read as the model's training data reads them (older bundles: as the labeled set's)
        layout = bundle.info.get("layout") or labeled.layout
        overlap = training_overlap(bundle, labeled)
        table = UnlabeledTable(labeled.root, labeled.paths, labeled.paths)
    else:
        table = load_unlabeled(data)
    # The cache key needs a labeled table; these placeholder labels only name the cache file.
    keyed = ImageTable(
        root=table.root,
        paths=table.paths,
        labels=np.zeros(len(table), dtype=np.int64),
        classes=("unlabeled",),
        groups=None,
    )
    ensemble = Ensemble(bundle, device=device, batch_size=batch_size)
    log.info(
        "predicting %d images with %d member(s), tta=%s, vote=%s", len(table), len(bundle.members), tta, vote
    )
    probs = ensemble.predict(lambda size: load_images(keyed, size, cache_dir), tta=tta, vote=vote, bias=bias)
    report = None
    if y_true is not None:
        report = classification_report(y_true, probs, bundle.classes, layout=layout)
        report["training_overlap"] = overlap.to_dict() if overlap is not None else None
    result = PredictResult(
        out=None,
        n_images=len(table),
        layout=table.layout,
        tta=tta,
        vote=vote,
        n_members=len(bundle.members),
        report=report,
        classes=bundle.classes,
        overlap=overlap,
        bias="none" if bundle.bias is None else "on" if bias else "off",
    )
    return result, table, probs


def _model_labels(table: ImageTable, bundle: Bundle, data: str) -> np.ndarray:
    """The table's labels as indices into the model's classes; classes the model lacks are an error."""
    index = {name: i for i, name in enumerate(bundle.classes)}
    missing = [c for c in table.classes if c not in index]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"--data {data}: classes {shown} are not among the model's {len(bundle.classes)} classes "
            f"({', '.join(bundle.classes[:10])}{' ...' if len(bundle.classes) > 10 else ''}); "
            "evaluate on data labeled like the training set, or retrain on data with these classes"
        )
    mapping = np.array([index[c] for c in table.classes], dtype=np.int64)
    return mapping[table.labels]


@contextlib.contextmanager
def _bundle_dir(model: str, tracking_uri: str | None) -> Iterator[Path]:
    """A local directory holding the bundle: the path itself, or a download of an MLflow model."""
    if model.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
            yield download_model(model, Path(tmp), tracking_uri=tracking_uri)
        return
    path = Path(model)
    if not path.exists():
        raise UserError(
            f"--model: {model} does not exist; give models:/NAME@ALIAS, models:/NAME/VERSION or a "
            "model directory"
        )
    yield path


def _write_csv(
    path: Path, table: UnlabeledTable, classes: tuple[str, ...], probs: np.ndarray, *, with_probs: bool
) -> None:
    answers = probs.argmax(axis=1)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if table.layout == "mask":
            w.writerow(["ImageID", "ans"])
            w.writerows((image_id, classes[a]) for image_id, a in zip(table.ids, answers, strict=True))
            return
        w.writerow(["path", "label", *(f"prob_{c}" for c in classes)] if with_probs else ["path", "label"])
        for image_id, a, p in zip(table.ids, answers, probs, strict=True):
            w.writerow(
                [image_id, classes[a], *(f"{v:.6f}" for v in p)] if with_probs else [image_id, classes[a]]
            )
