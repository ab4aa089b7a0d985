"""Image tables: which files make up a dataset, their labels and groups, in one typed object.

Four layouts load into the same :class:`ImageTable`: a CSV manifest (``path,label[,group]``), an
ImageFolder tree, the mask-competition layout (18 classes, grouped by person) and the built-in
samples (``sample``: digits; ``sample-mask``: the mask layout, with an eval split to predict).
Their rules live in ``training.layouts``; loading raises the first problem a scan finds as a
one-line :class:`~training.config.ConfigError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import ConfigError
from training.layouts import (
    IMAGE_EXTENSIONS,
    Scan,
    class_names,
    detect_format,
    existing_source,
    is_mask_eval,
    is_mask_root,
    scan_csv,
    scan_imagefolder,
    scan_mask,
    scan_mask_eval,
    scan_unlabeled_csv,
)
from training.sample import SAMPLES, materialize_mask_sample, materialize_sample

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageTable",
    "UnlabeledTable",
    "detect_format",
    "is_sample",
    "load_table",
    "load_unlabeled",
    "sample_dir",
    "scan_labeled",
]

logger = logging.getLogger(__name__)

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, eq=False)
class ImageTable:
    """Labeled images; ``labels[i]`` indexes ``classes``, ``groups[i]`` (if any) ties images together."""

    root: Path  # absolute directory the paths are relative to
    paths: tuple[str, ...]  # POSIX paths relative to root
    labels: np.ndarray  # int64 class index per image
    classes: tuple[str, ...]  # class names; index = label
    groups: np.ndarray | None  # group id (str) per image, or None
    layout: str = "csv"  # csv | imagefolder | mask | sample: how the classes are read (class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, i: int) -> Path:
        return self.root / self.paths[i]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes as people read them (mask layout: ``"4 wear/female/30-59"``); for display only."""
        return class_names(self.classes, self.layout)

    def fingerprint(self) -> str:
        """Key of the data itself: equal on any machine holding the same files, labels and groups.

        File sizes stand in for contents (hashing every image would cost a full read per load);
        mtimes and absolute paths are left out so copies and checkouts share caches and studies.
        """
        h = hashlib.sha256(b"foldtune-table-v1\0")
        h.update("\0".join(self.classes).encode() + b"\1")
        groups = self.groups if self.groups is not None else [""] * len(self)
        for i, (path, label, group) in enumerate(zip(self.paths, self.labels, groups, strict=True)):
            try:
                size = self.file(i).stat().st_size
            except FileNotFoundError:
                raise ConfigError(
                    f"{self.file(i)}: image file is missing; restore it or remove it from the dataset"
                ) from None
            h.update(f"{path}\0{int(label)}\0{group}\0{size}\1".encode())
        return h.hexdigest()[:16]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


@dataclass(frozen=True, eq=False)
class UnlabeledTable:
    """Images to predict on; ``ids`` are what the submission's first column holds."""

    root: Path
    paths: tuple[str, ...]
    ids: tuple[str, ...]  # ImageID for the mask layout, else the relative path
    layout: str = "files"  # "mask": the competition's eval split (submission ImageID,ans), else "files"

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, i: int) -> Path:
        return self.root / self.paths[i]


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def sample_dir(name: str = "sample") -> Path:
    """Where a built-in sample lives: ``sample`` in ``$HPO_SAMPLE_DIR`` or ``.hpo/sample`` under the
    CWD, ``sample-mask`` in ``sample-mask`` beside it."""
    digits = Path(os.environ.get("HPO_SAMPLE_DIR") or Path.cwd() / ".hpo" / "sample").absolute()
    return digits if name == "sample" else digits.parent / name


def is_sample(source: str | Path) -> bool:
    """``source`` names a built-in sample (``sample``, ``sample-mask``) rather than a path."""
    return str(source) in SAMPLES


def scan_labeled(source: str | Path, fmt: str = "auto") -> Scan:
    """Every image and every problem of a labeled dataset; ``fmt`` forces a layout, ``auto`` detects it."""
    if str(source) == "sample-mask" and fmt in ("auto", "mask", "sample"):
        return scan_mask(materialize_mask_sample(sample_dir("sample-mask")))
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "sample":
        scan = scan_csv(materialize_sample(sample_dir()))
        scan.layout = "sample"
        return scan
    path = existing_source(source)
    if fmt == "csv":
        return scan_csv(path)
    if fmt == "imagefolder":
        return scan_imagefolder(path)
    if fmt == "mask":
        return scan_mask(path)
    raise ConfigError(f"data.format: unknown format '{fmt}'; use auto, csv, imagefolder, mask or sample")


def load_table(source: str | Path, fmt: str = "auto") -> ImageTable:
    """Load a labeled dataset; the first problem its layout's rules find is a ConfigError."""
    scan = scan_labeled(source, fmt)
    scan.raise_first_error()
    for problem in scan.problems:  # warnings: training goes on
        logger.warning("%s", problem)
    classes, labels = (
        (scan.classes, np.array([scan.classes.index(e.label) for e in scan.entries], dtype=np.int64))
        if scan.classes is not None
        else _encode_labels([e.label for e in scan.entries])
    )
    logger.debug("%s: %d images, %d classes", source, len(scan.entries), len(classes))
    return ImageTable(
        root=scan.root,
        paths=tuple(e.path for e in scan.entries),
        labels=labels,
        classes=classes,
        groups=np.array([e.group for e in scan.entries], dtype=object) if scan.has_groups else None,
        layout=scan.layout,
    )


def load_unlabeled(source: str | Path, fmt: str = "auto") -> UnlabeledTable:
    """Load images to predict on: the mask layout's eval split, a CSV with a ``path`` column,
    or every image under a directory (ids = relative paths)."""
    if fmt == "sample" or (fmt == "auto" and str(source) == "sample"):
        table = load_table("sample")
        return UnlabeledTable(table.root, table.paths, table.paths)
    if str(source) == "sample-mask" and fmt in ("auto", "mask", "sample"):
        source, fmt = materialize_mask_sample(sample_dir("sample-mask")), "mask"  # its eval split
    path = existing_source(source)
    if fmt == "auto":
        fmt = (
            "csv" if path.is_file() else "mask" if is_mask_root(path) or is_mask_eval(path) else "imagefolder"
        )
    if fmt == "csv":
        scan = scan_unlabeled_csv(path)
    elif fmt == "mask":
        scan = scan_mask_eval(path)
    elif fmt == "imagefolder":
        root = path.resolve()
        paths = tuple(p.relative_to(root).as_posix() for p in _images_under(root))
        if not paths:
            raise ConfigError(
                f"data.source: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}; check the path"
            )
        return UnlabeledTable(root, paths, paths)
    else:
        raise ConfigError(f"data.format: unknown format '{fmt}'; use auto, csv, imagefolder, mask or sample")
    scan.raise_first_error()
    paths = tuple(e.path for e in scan.entries)
    if scan.layout == "mask-eval":  # the submission lists ImageIDs in info.csv's order
        return UnlabeledTable(scan.root, paths, tuple(e.label for e in scan.entries), layout="mask")
    return UnlabeledTable(scan.root, paths, paths)


def _encode_labels(raw: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Class order: numeric when every label is an integer, else sorted strings."""
    if all(_INTEGER.fullmatch(v) for v in raw):
        values = [int(v) for v in raw]
        classes = tuple(str(v) for v in sorted(set(values)))
        names = [str(v) for v in values]
    else:
        classes = tuple(sorted(set(raw)))
        names = raw
    index = {name: i for i, name in enumerate(classes)}
    return classes, np.array([index[n] for n in names], dtype=np.int64)


def _images_under(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
