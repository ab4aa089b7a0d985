"""Ensemble prediction: every member x every TTA view -> probabilities -> soft or hard vote -> CSV.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo.errors import UserError
from hpo.packaging import TTA_MODES, VOTES, Bundle, build_member_model, load_bundle
from training.cache import load_images
from training.config import DataConfig
from training.data import ImageTable, UnlabeledTable, load_table, load_unlabeled
from training.loop import predict_proba, resolve_device
from training.metrics import classification_report

__all__ = [
    "Ensemble",
    "PredictResult",
    "atomic_output",
    "combine",
    "evaluate",
    "predict",
    "tta_view",
]

log = logging.getLogger(__name__)

_CHUNK = 1024  # images per TTA/member pass: bounds memory for flipped copies


def tta_view(images: np.ndarray, view: str) -> np.ndarray:
    """One TTA view of uint8 NHWC ``images`` (contiguous, so torch can take it)."""
    if view == "identity":
        return np.ascontiguousarray(images)
    if view == "hflip":
        return np.ascontiguousarray(images[:, :, ::-1])
    if view == "vflip":
        return np.ascontiguousarray(images[:, ::-1])
    if view == "hvflip":
        return np.ascontiguousarray(images[:, ::-1, ::-1])
    raise ValueError(f"unknown TTA view {view!r}")


def combine(member_probs: np.ndarray, vote: str) -> np.ndarray:
    """(members, N, C) probabilities -> (N, C).

    ``soft``: the mean of the members' probabilities. ``hard``: each member votes for its argmax and
    the result is the vote share, with ties broken by the soft mean (a 1e-6 nudge, renormalized),
    so ``argmax`` of the result is always the ensemble's answer.
    """
    soft = member_probs.mean(axis=0)
    if vote == "soft":
        return soft
    if vote != "hard":
        raise ValueError(f"unknown vote {vote!r}")
    n_members = len(member_probs)
    votes = np.zeros_like(soft)
    for probs in member_probs:
        votes[np.arange(len(probs)), probs.argmax(axis=1)] += 1.0 / n_members
    nudged = votes + 1e-6 * soft
    return nudged / nudged.sum(axis=1, keepdims=True)


class Ensemble:
    """A bundle's members on one device; ``predict(images_at, tta=..., vote=...)``."""

    def __init__(self, bundle: Bundle, *, device: str = "auto", batch_size: int = 128) -> None:
        self.bundle = bundle
        self.device = resolve_device(device, where="--device")
        self.batch_size = batch_size
        self.models = [build_member_model(m, len(bundle.classes)).to(self.device) for m in bundle.members]

    def member_probs(self, images_at: Callable[[int], np.ndarray], *, tta: str) -> np.ndarray:
        """(members, N, C): each member's probabilities, averaged over the TTA views.

        ``images_at(size)`` returns the uint8 NHWC images decoded at ``size`` (a memmap is fine).
        """
        views = _tta_views(tta)
        out: list[np.ndarray | None] = [None] * len(self.models)
        for size in self.bundle.image_sizes:
            images = images_at(size)
            for i, (member, model) in enumerate(zip(self.bundle.members, self.models, strict=True)):
                if member.image_size != size:
                    continue
                chunks = []
                for start in range(0, len(images), _CHUNK):
                    chunk = np.array(images[start : start + _CHUNK])  # a writable copy torch can take
                    p = sum(
                        predict_proba(
                            model,
                            tta_view(chunk, view),
                            mean=member.mean,
                            std=member.std,
                            device=self.device,
                            batch_size=self.batch_size,
                        )
                        for view in views
                    )
                    chunks.append(p / len(views))
                out[i] = np.concatenate(chunks) if chunks else np.zeros((0, len(self.bundle.classes)))
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]

    def predict(self, images_at: Callable[[int], np.ndarray], *, tta: str, vote: str) -> np.ndarray:
        if vote not in VOTES:
            raise UserError(f"--vote: unknown '{vote}'; use one of: {', '.join(VOTES)}")
        return combine(self.member_probs(images_at, tta=tta), vote)


def _tta_views(tta: str) -> tuple[str, ...]:
    if tta not in TTA_MODES:
        raise UserError(f"--tta: unknown '{tta}'; use one of: {', '.join(TTA_MODES)}")
    return TTA_MODES[tta]


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


def predict(
    model: str,
    data: str,
    out: str | Path,
    *,
    tta: str | None = None,
    vote: str | None = None,
    labels: bool = False,
    probs: bool = False,
    batch_size: int = 128,
    device: str = "auto",
    cache_dir: str | Path = DataConfig().cache_dir,
    tracking_uri: str | None = None,
) -> PredictResult:
    """Predict ``data`` with ``model`` (models:/NAME@ALIAS, models:/NAME/VERSION or a local path).

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
    batch_size: int = 128,
    device: str = "auto",
    cache_dir: str | Path = DataConfig().cache_dir,
    tracking_uri: str | None = None,
) -> PredictResult:
    """Macro-F1 and the per-class report of ``model`` on the labeled set ``data``."""
    result, _, _ = _run(
        model,
        data,
        tta=tta,
        vote=vote,
        labels=True,
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
    _tta_views(tta)
    if vote not in VOTES:
        raise UserError(f"--vote: unknown '{vote}'; use one of: {', '.join(VOTES)}")

    y_true = None
    if labels:
        labeled = load_table(data)
        y_true = _model_labels(labeled, bundle, data)
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
    probs = ensemble.predict(lambda size: load_images(keyed, size, cache_dir), tta=tta, vote=vote)
    report = classification_report(y_true, probs, bundle.classes) if y_true is not None else None
    result = PredictResult(
        out=None,
        n_images=len(table),
        layout=table.layout,
        tta=tta,
        vote=vote,
        n_members=len(bundle.members),
        report=report,
        classes=bundle.classes,
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
        from hpo.registry import download_model

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
