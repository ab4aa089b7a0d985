"""Image tables: which files make up a dataset, their labels and groups, in one typed object.

Four layouts load into the same :class:`ImageTable`: a CSV manifest (``path,label[,group]``), an
ImageFolder tree, the mask-competition layout (18 classes, grouped by person) and the built-in
sample. Every user-facing problem is a one-line :class:`~training.config.ConfigError`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import ConfigError
from training.sample import materialize_sample

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageTable",
    "UnlabeledTable",
    "detect_format",
    "load_table",
    "load_unlabeled",
    "sample_dir",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# Mask layout: file stem -> mask state (0 wear, 1 incorrect, 2 not wear).
_MASK_STEMS = {
    **{f"mask{i}": 0 for i in range(1, 6)},
    "incorrect_mask": 1,
    "normal": 2,
}
_GENDERS = {"male": 0, "female": 1}
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, eq=False)
class ImageTable:
    """Labeled images; ``labels[i]`` indexes ``classes``, ``groups[i]`` (if any) ties images together."""

    root: Path  # absolute directory the paths are relative to
    paths: tuple[str, ...]  # POSIX paths relative to root
    labels: np.ndarray  # int64 class index per image
    classes: tuple[str, ...]  # class names; index = label
    groups: np.ndarray | None  # group id (str) per image, or None

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, i: int) -> Path:
        return self.root / self.paths[i]

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


def sample_dir() -> Path:
    """Where the built-in sample lives: ``$HPO_SAMPLE_DIR`` or ``.hpo/sample`` under the CWD."""
    return Path(os.environ.get("HPO_SAMPLE_DIR") or Path.cwd() / ".hpo" / "sample").absolute()


def detect_format(source: str | Path) -> str:
    """Name the layout of a labeled source: ``csv``, ``imagefolder``, ``mask`` or ``sample``."""
    if str(source) == "sample":
        return "sample"
    path = _existing(source)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise ConfigError(
            f"data.source: {path} is a file but not a .csv manifest; "
            "give a CSV (path,label[,group]), an image folder or 'sample'"
        )
    if _mask_root(path) is not None:
        return "mask"
    if any(_has_images(sub) for sub in _subdirs(path)):
        return "imagefolder"
    raise ConfigError(
        f"data.source: no class folders with images under {path}; expected <root>/<class>/*.png, "
        "the mask layout (train/images/...), a CSV manifest or 'sample'"
    )


def load_table(source: str | Path, fmt: str = "auto") -> ImageTable:
    """Load a labeled dataset; ``fmt`` forces a layout, ``auto`` detects it."""
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "sample":
        return _load_csv(materialize_sample(sample_dir()))
    path = _existing(source)
    if fmt == "csv":
        return _load_csv(path)
    if fmt == "imagefolder":
        return _load_imagefolder(path)
    if fmt == "mask":
        root = _mask_root(path)
        if root is None:
            raise ConfigError(f"data.source: {path} has no train/images folder; point it at the mask root")
        return _load_mask(root / "train" / "images")
    raise ConfigError(f"data.format: unknown format '{fmt}'; use auto, csv, imagefolder, mask or sample")


def load_unlabeled(source: str | Path, fmt: str = "auto") -> UnlabeledTable:
    """Load images to predict on: the mask layout's eval split, a CSV with a ``path`` column,
    or every image under a directory (ids = relative paths)."""
    if fmt == "sample" or (fmt == "auto" and str(source) == "sample"):
        table = _load_csv(materialize_sample(sample_dir()))
        return UnlabeledTable(table.root, table.paths, table.paths)
    path = _existing(source)
    if fmt == "auto":
        if path.is_file():
            fmt = "csv"
        elif _mask_root(path) is not None or _mask_eval_dir(path) is not None:
            fmt = "mask"
        else:
            fmt = "imagefolder"
    if fmt == "csv":
        root, paths = _read_unlabeled_csv(path)
        return UnlabeledTable(root, paths, paths)
    if fmt == "mask":
        return _load_mask_eval(path)
    if fmt == "imagefolder":
        root = path.resolve()
        paths = tuple(p.relative_to(root).as_posix() for p in _images_under(root))
        if not paths:
            raise ConfigError(f"data.source: no images ({_ext_list()}) under {root}; check the path")
        return UnlabeledTable(root, paths, paths)
    raise ConfigError(f"data.format: unknown format '{fmt}'; use auto, csv, imagefolder, mask or sample")


# ---------------------------------------------------------------------------------------------
# CSV manifest
# ---------------------------------------------------------------------------------------------


def _load_csv(csv_path: Path) -> ImageTable:
    root, header, rows = _read_csv(csv_path)
    for column in ("path", "label"):
        if column not in header:
            raise ConfigError(
                f"{csv_path}: missing column '{column}' (found: {', '.join(header) or 'none'}); "
                "the header must be path,label[,group]"
            )
    has_group = "group" in header
    paths: list[str] = []
    raw_labels: list[str] = []
    groups: list[str] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        rel = _manifest_path(root, row["path"], f"{csv_path} row {line}")
        if rel in seen:
            raise ConfigError(
                f"{csv_path} row {line}: '{rel}' is already listed on row {seen[rel]}; remove the duplicate"
            )
        seen[rel] = line
        if not row["label"]:
            raise ConfigError(f"{csv_path} row {line}: empty label; give every image a label")
        if has_group and not row["group"]:
            raise ConfigError(f"{csv_path} row {line}: empty group; fill it in or drop the group column")
        paths.append(rel)
        raw_labels.append(row["label"])
        groups.append(row.get("group", ""))
    classes, labels = _encode_labels(raw_labels)
    if len(classes) < 2:
        raise ConfigError(
            f"{csv_path}: every row has label '{classes[0]}'; a classifier needs images of at least "
            "two classes"
        )
    logger.debug("%s: %d images, %d classes", csv_path, len(paths), len(classes))
    return ImageTable(
        root=root,
        paths=tuple(paths),
        labels=labels,
        classes=classes,
        groups=np.array(groups, dtype=object) if has_group else None,
    )


def _read_unlabeled_csv(csv_path: Path) -> tuple[Path, tuple[str, ...]]:
    root, header, rows = _read_csv(csv_path, layout="path")
    if "path" not in header:
        raise ConfigError(
            f"{csv_path}: missing column 'path' (found: {', '.join(header) or 'none'}); "
            "list the images to predict on in a 'path' column"
        )
    return root, tuple(_manifest_path(root, row["path"], f"{csv_path} row {line}") for line, row in rows)


def read_manifest_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Stripped header and non-blank rows with their line numbers (header = line 1); raises I/O errors."""
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = [
            (i, {h: (cells[j].strip() if j < len(cells) else "") for j, h in enumerate(header)})
            for i, cells in enumerate(reader, start=2)
            if any(c.strip() for c in cells)
        ]
    return header, rows


def _read_csv(
    csv_path: Path, layout: str = "path,label[,group]"
) -> tuple[Path, list[str], list[tuple[int, dict[str, str]]]]:
    """Header and stripped rows with their line numbers (the header is line 1)."""
    try:
        header, rows = read_manifest_rows(csv_path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{csv_path}: cannot read the manifest ({exc}); check the file") from None
    if not rows:
        raise ConfigError(
            f"{csv_path}: the manifest lists no images; write a header {layout} and one line per image"
        )
    return csv_path.parent.resolve(), header, rows


def _manifest_path(root: Path, raw: str, where: str) -> str:
    """The manifest entry as a POSIX path relative to ``root``; it must exist and stay inside root."""
    if not raw:
        raise ConfigError(f"{where}: empty path; give every row an image path")
    # manifests written on Windows use backslashes; '..' is folded without following links
    candidate = Path(os.path.normpath(root / raw.replace("\\", "/")))
    if not candidate.is_relative_to(root):  # an absolute path may reach root through a symlinked dir
        candidate = candidate.parent.resolve() / candidate.name
    if not candidate.is_relative_to(root):
        raise ConfigError(
            f"{where}: path '{raw}' is outside {root}; move the image under the CSV's folder and "
            "give the path relative to it"
        )
    if not candidate.is_file():
        raise ConfigError(f"{where}: image '{raw}' not found under {root}; fix the path or remove the row")
    return candidate.relative_to(root).as_posix()


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


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def _load_imagefolder(path: Path) -> ImageTable:
    root = path.resolve()
    paths: list[str] = []
    labels: list[int] = []
    classes: list[str] = []
    for sub in _subdirs(root):
        files = _images_under(sub)
        if not files:
            logger.warning("%s: no images, not used as a class", sub)
            continue
        paths += [f.relative_to(root).as_posix() for f in files]
        labels += [len(classes)] * len(files)
        classes.append(sub.name)
    if len(classes) < 2:
        raise ConfigError(
            f"{root}: found {len(classes)} class folder(s) with images; an ImageFolder needs "
            "<root>/<class>/*.png for at least two classes"
        )
    return ImageTable(root, tuple(paths), np.array(labels, dtype=np.int64), tuple(classes), None)


# ---------------------------------------------------------------------------------------------
# Mask-competition layout
# ---------------------------------------------------------------------------------------------


def _mask_root(path: Path) -> Path | None:
    """The directory holding ``train/images``, whether given that root, ``train`` or ``train/images``."""
    path = path.resolve()
    if (path / "train" / "images").is_dir():
        return path
    if path.name == "train" and (path / "images").is_dir():
        return path.parent
    if path.name == "images" and path.parent.name == "train":
        return path.parent.parent
    return None


def _mask_eval_dir(path: Path) -> Path | None:
    """The directory holding ``info.csv`` and ``images/``: ``<root>/eval`` or the eval dir itself."""
    path = path.resolve()
    for candidate in ((_mask_root(path) or path) / "eval", path):
        if (candidate / "info.csv").is_file() and (candidate / "images").is_dir():
            return candidate
    return None


def _load_mask(images: Path) -> ImageTable:
    """``<id>_<gender>_<race>_<age>/<stem>.<ext>`` -> class mask*6 + gender*3 + age band; group = id."""
    paths: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    for person in _subdirs(images):
        where = f"{images}/{person.name}"
        parts = person.name.split("_")
        if len(parts) != 4 or not parts[0] or parts[1].lower() not in _GENDERS or not parts[3].isdigit():
            raise ConfigError(
                f"{where}: folder name must be <id>_<gender>_<race>_<age> with gender male/female "
                "(e.g. 000001_female_Asian_45); rename or remove the folder"
            )
        person_id, gender, age = parts[0], _GENDERS[parts[1].lower()], int(parts[3])
        age_band = 0 if age < 30 else 1 if age < 60 else 2
        for file in _image_files(person):
            mask = _MASK_STEMS.get(file.stem.lower())
            if mask is None:
                raise ConfigError(
                    f"{where}: unknown image '{file.name}'; expected mask1..mask5, incorrect_mask or "
                    "normal; rename or remove it"
                )
            paths.append(file.relative_to(images).as_posix())
            labels.append(mask * 6 + gender * 3 + age_band)
            groups.append(person_id)
    if not paths:
        raise ConfigError(f"{images}: no person folders with images; expected <id>_<gender>_<race>_<age>/")
    return ImageTable(
        root=images,
        paths=tuple(paths),
        labels=np.array(labels, dtype=np.int64),
        classes=tuple(str(c) for c in range(18)),
        groups=np.array(groups, dtype=object),
    )


def _load_mask_eval(path: Path) -> UnlabeledTable:
    eval_dir = _mask_eval_dir(path)
    if eval_dir is None:
        raise ConfigError(
            f"data.source: no eval/info.csv with eval/images under {path}; point it at the mask root"
        )
    info = eval_dir / "info.csv"
    _, header, rows = _read_csv(info, layout="ImageID[,ans]")
    if "ImageID" not in header:
        raise ConfigError(f"{info}: missing column 'ImageID' (found: {', '.join(header)}); check the file")
    images = (eval_dir / "images").resolve()
    ids = tuple(row["ImageID"] for _, row in rows)
    paths = tuple(_manifest_path(images, row["ImageID"], f"{info} row {line}") for line, row in rows)
    return UnlabeledTable(images, paths, ids, layout="mask")


# ---------------------------------------------------------------------------------------------
# Filesystem helpers
# ---------------------------------------------------------------------------------------------


def _existing(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if str(source).strip() == "":
        raise ConfigError(
            "data.source is empty; give a CSV manifest, an image folder, the mask layout root or 'sample'"
        )
    if not path.exists():
        raise ConfigError(
            f"data.source: {path} does not exist; give a CSV manifest, an image folder, the mask "
            "layout root or 'sample'"
        )
    return path


def _visible(path: Path) -> bool:
    # dot-names are OS litter (macOS '._mask1.jpg', '.DS_Store'), never data
    return not path.name.startswith(".")


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and _visible(p))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and _visible(path) and path.is_file()


def _image_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if _is_image(p))


def _images_under(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def _has_images(path: Path) -> bool:
    return any(_is_image(p) for p in path.rglob("*"))


def _ext_list() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))
