"""Dataset layouts and their rules, in one place: each scanner lists a layout's images and every problem.

Four layouts are read: a CSV manifest (``path,label[,group]``), an ImageFolder tree, the
mask-competition layout (18 classes, grouped by person) and, for prediction, the mask layout's eval
split (``eval/info.csv`` + ``eval/images``). A scanner never stops at the first problem:
``training.data.load_table`` raises the first error of a scan, ``hpo data check`` reports them all,
so what the check passes is exactly what training accepts.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from training.config import ConfigError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_ATTRIBUTES",
    "MASK_CLASSES",
    "Entry",
    "Problem",
    "Scan",
    "class_names",
    "detect_format",
    "examples",
    "existing_source",
    "is_mask_eval",
    "is_mask_root",
    "mask_attributes",
    "mask_class_name",
    "plural",
    "scan_csv",
    "scan_imagefolder",
    "scan_mask",
    "scan_mask_eval",
    "scan_unlabeled_csv",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# Mask layout: file stem -> mask state; class = mask * 6 + gender * 3 + age band.
_MASK_STEMS = {**{f"mask{i}": 0 for i in range(1, 6)}, "incorrect_mask": 1, "normal": 2}
_GENDERS = {"male": 0, "female": 1}
_MASK_STATES = ("wear", "incorrect", "not wear")
_AGE_BANDS = ("<30", "30-59", ">=60")
MASK_CLASSES = tuple(str(c) for c in range(18))  # the competition's labels: what a submission's `ans` holds
MASK_ATTRIBUTES = {"mask": _MASK_STATES, "gender": tuple(_GENDERS), "age": _AGE_BANDS}  # value names

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: its kind (see ``hpo.data.KINDS``), where, and what to do."""

    kind: str
    where: str  # a file, a CSV row, a folder or a class
    message: str  # what is wrong and how to fix it
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Entry:
    """One labeled image a layout lists."""

    path: str  # POSIX path relative to the scan's root (``../`` when a manifest points outside it)
    label: str
    group: str | None
    where: str  # how findings name it: the path, and the CSV row for manifests


@dataclass
class Scan:
    """What a scanner found: the images it can use and every problem, in file order."""

    layout: str  # csv | imagefolder | mask | mask-eval
    root: Path  # absolute; entries' paths are relative to it
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    has_groups: bool = False
    classes: tuple[str, ...] | None = None  # a fixed class list (mask layout); else from the labels

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def raise_first_error(self) -> None:
        if errors := self.errors:
            raise ConfigError(str(errors[0]))


def mask_attributes(label):
    """A mask-layout class index (an int, or an integer array) -> its mask, gender and age-band indices."""
    return {"mask": label // 6, "gender": label % 6 // 3, "age": label % 3}


def mask_class_name(label: str) -> str:
    """A mask-layout class as people read it: ``"4"`` -> ``"4 wear/female/30-59"``."""
    parts = mask_attributes(int(label))
    return f"{label} " + "/".join(MASK_ATTRIBUTES[k][v] for k, v in parts.items())


def class_names(classes: Sequence[str], layout: str | None) -> tuple[str, ...]:
    """How people read a dataset's classes: for the mask layout (``layout == "mask"`` and every class
    one of :data:`MASK_CLASSES`) ``"4 wear/female/30-59"``; any other classes as they are.

    Names are for reading only: labels, submissions (``ans``) and bundles keep the classes themselves.
    """
    if layout == "mask" and classes and all(c in MASK_CLASSES for c in classes):
        return tuple(mask_class_name(c) for c in classes)
    return tuple(classes)


# ---------------------------------------------------------------------------------------------
# Finding the layout
# ---------------------------------------------------------------------------------------------


def existing_source(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if str(source).strip() == "":
        raise ConfigError(
            "data.source is empty; give a CSV manifest, an image folder, the mask layout root or 'sample'"
        )
    if not path.exists():
        raise ConfigError(
            f"data.source: {path} does not exist; give a CSV manifest, an image folder, the mask "
            "layout root, or a built-in sample: 'sample' (digits) or 'sample-mask'"
        )
    return path


def detect_format(source: str | Path) -> str:
    """Name the layout of a labeled source: ``csv``, ``imagefolder``, ``mask`` or ``sample``."""
    if str(source) == "sample":
        return "sample"
    if str(source) == "sample-mask":  # the built-in sample in the mask layout
        return "mask"
    path = existing_source(source)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise ConfigError(
            f"data.source: {path} is a file but not a .csv manifest; "
            "give a CSV (path,label[,group]), an image folder or 'sample'"
        )
    if _mask_images(path) is not None:
        return "mask"
    if any(_has_images(sub) for sub in _subdirs(path)):
        return "imagefolder"
    raise ConfigError(
        f"data.source: no class folders with images under {path}; expected <root>/<class>/*.png, "
        "the mask layout (train/images/...), a CSV manifest or 'sample'"
    )


def is_mask_eval(path: Path) -> bool:
    """``path`` holds the mask layout's eval split (``eval/info.csv`` + ``eval/images``)."""
    return _mask_eval_dir(path) is not None


def is_mask_root(path: Path) -> bool:
    """``path`` is the mask layout's root, its ``train`` or its ``train/images``."""
    return _mask_images(path) is not None


# ---------------------------------------------------------------------------------------------
# CSV manifest
# ---------------------------------------------------------------------------------------------


def scan_csv(csv_path: Path) -> Scan:
    """``path,label[,group]`` rows; paths are absolute or relative to the CSV (``../`` included)."""
    scan = Scan("csv", csv_path.parent.resolve())
    rows = _read_rows(csv_path, scan, layout="path,label[,group]", required=("path", "label"))
    if rows is None:
        return scan
    header, lines = rows
    scan.has_groups = "group" in header
    seen: dict[str, int] = {}
    for line, row in lines:
        at = f"{csv_path} row {line}"
        problems = []
        if not row["label"]:
            problems.append(Problem("missing_value", at, "empty label; give every image a label"))
        if scan.has_groups and not row["group"]:
            problems.append(Problem("missing_value", at, "empty group; fill it in or drop the group column"))
        rel = _manifest_path(scan.root, row["path"], at, problems)
        if rel is not None and rel in seen:
            problems.append(
                Problem(
                    "duplicate_row", at, f"'{rel}' is already listed on row {seen[rel]}; remove the duplicate"
                )
            )
        elif rel is not None:
            seen[rel] = line
        scan.problems += problems
        if rel is not None and seen[rel] == line and row["label"]:
            # listed even when only its group is missing: one row, one finding
            group = row.get("group") if scan.has_groups else None
            scan.entries.append(Entry(rel, row["label"], group, f"{rel} (row {line})"))
    _check_two_classes(scan, str(csv_path))
    return scan


def scan_unlabeled_csv(csv_path: Path) -> Scan:
    """Images to predict on: a ``path`` column, by the manifest's path rules; labels may be absent."""
    scan = Scan("csv", csv_path.parent.resolve())
    rows = _read_rows(csv_path, scan, layout="path", required=("path",))
    if rows is not None:
        for line, row in rows[1]:
            at = f"{csv_path} row {line}"
            rel = _manifest_path(scan.root, row["path"], at, scan.problems)
            if rel is not None:
                scan.entries.append(Entry(rel, "", None, f"{rel} (row {line})"))
    return scan


def _read_rows(
    csv_path: Path, scan: Scan, *, layout: str, required: tuple[str, ...]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]] | None:
    """Stripped header and non-blank rows with line numbers (header = line 1), or None with a problem."""
    where = str(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [
                (i, {h: (cells[j].strip() if j < len(cells) else "") for j, h in enumerate(header)})
                for i, cells in enumerate(reader, start=2)
                if any(c.strip() for c in cells)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        scan.problems.append(Problem("manifest", where, f"cannot read the manifest ({exc}); check the file"))
        return None
    if not rows:
        message = f"the manifest lists no images; write a header {layout} and one line per image"
        scan.problems.append(Problem("manifest", where, message))
        return None
    for column in required:
        if column not in header:
            found = ", ".join(header) or "none"
            message = f"missing column '{column}' (found: {found}); the header must be {layout}"
            scan.problems.append(Problem("manifest", where, message))
            return None
    return header, rows


def _manifest_path(root: Path, raw: str, at: str, problems: list[Problem]) -> str | None:
    """A manifest entry as a POSIX path relative to ``root``, or None with a problem."""
    if not raw:
        problems.append(Problem("missing_value", at, "empty path; give every row an image path"))
        return None
    # Windows manifests use backslashes; '..' is folded without following links, and an absolute path
    # that reaches root through a symlinked folder still counts as inside it.
    candidate = Path(os.path.normpath(root / raw.replace("\\", "/")))
    if not candidate.is_relative_to(root) and candidate.parent.exists():
        linked = candidate.parent.resolve() / candidate.name
        candidate = linked if linked.is_relative_to(root) else candidate
    if not candidate.is_file():
        problems.append(
            Problem(
                "missing_file", at, f"image '{raw}' not found at {candidate}; fix the path or remove the row"
            )
        )
        return None
    if not os.access(candidate, os.R_OK):
        problems.append(Problem("missing_file", at, f"image '{raw}' cannot be read (permission denied)"))
        return None
    return Path(os.path.relpath(candidate, root)).as_posix()


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def scan_imagefolder(path: Path) -> Scan:
    """``<root>/<class>/**/<image>``: each sub-folder holding images is a class."""
    scan = Scan("imagefolder", path.resolve())
    for sub in _subdirs(scan.root):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and not _hidden(p.relative_to(scan.root)))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        others = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if others:
            shown = examples(p.relative_to(scan.root).as_posix() for p in others)
            scan.problems.append(
                Problem(
                    "ignored_file",
                    f"{sub.name}/",
                    f"{plural(len(others), 'file')} ignored, not an image type foldtune reads "
                    f"(e.g. {shown}); convert them to one of {_ext_list()} or remove them",
                    "warning",
                )
            )
        if not images:
            scan.problems.append(
                Problem("ignored_file", f"{sub.name}/", "no images: not used as a class", "warning")
            )
        for file in images:
            rel = file.relative_to(scan.root).as_posix()
            scan.entries.append(Entry(rel, sub.name, None, rel))
    n_classes = len({e.label for e in scan.entries})
    if n_classes < 2:
        scan.problems.append(
            Problem(
                "few_classes",
                str(scan.root),
                f"found {n_classes} class folder(s) with images; an ImageFolder needs <root>/<class>/*.png "
                "for at least two classes",
            )
        )
    return scan


# ---------------------------------------------------------------------------------------------
# Mask-competition layout
# ---------------------------------------------------------------------------------------------


def scan_mask(path: Path) -> Scan:
    """``train/images/<id>_<gender>_<race>_<age>/<stem>.<ext>`` -> class mask*6 + gender*3 + age band."""
    images = _mask_images(path)
    if images is None:
        raise ConfigError(f"data.source: {path} has no train/images folder; point it at the mask root")
    scan = Scan("mask", images, has_groups=True, classes=MASK_CLASSES)
    identities: dict[str, list[str]] = defaultdict(list)
    for person in _subdirs(images):
        parts = person.name.split("_")
        if len(parts) != 4 or not parts[0] or parts[1].lower() not in _GENDERS or not parts[3].isdigit():
            scan.problems.append(
                Problem(
                    "bad_folder_name",
                    f"{images}/{person.name}",
                    "folder name must be <id>_<gender>_<race>_<age> with gender male/female "
                    "(e.g. 000001_female_Asian_45); rename or remove the folder",
                )
            )
            continue
        person_id, gender, age = parts[0], _GENDERS[parts[1].lower()], int(parts[3])
        identities[person_id].append(person.name)
        age_band = 0 if age < 30 else 1 if age < 60 else 2
        stems: Counter[str] = Counter()
        for file in _image_files(person):
            rel = file.relative_to(images).as_posix()
            mask = _MASK_STEMS.get(file.stem.lower())
            if mask is None:
                scan.problems.append(
                    Problem(
                        "unknown_file",
                        f"{images}/{rel}",
                        "unknown image name; expected mask1..mask5, incorrect_mask or normal; "
                        "rename or remove it",
                    )
                )
                continue
            stems[file.stem.lower()] += 1
            scan.entries.append(Entry(rel, str(mask * 6 + gender * 3 + age_band), person_id, rel))
        if lacking := [s for s in _MASK_STEMS if s not in stems]:
            scan.problems.append(
                Problem(
                    "incomplete_group",
                    f"{person.name}/",
                    f"no {', '.join(lacking)} image; the person's classes are unbalanced",
                    "warning",
                )
            )
    for person_id, names in identities.items():
        if len(names) > 1:
            scan.problems.append(
                Problem(
                    "group_split",
                    f"person {person_id}",
                    f"one id, several identities ({', '.join(names)}): its images get different "
                    "gender/age classes but one group; fix the folder names",
                    "warning",
                )
            )
    if not scan.entries and not scan.errors:
        message = "no person folders with images; expected <id>_<gender>_<race>_<age>/"
        scan.problems.append(Problem("few_classes", str(images), message))
    return scan


def scan_mask_eval(path: Path) -> Scan:
    """The eval split: ``info.csv`` (``ImageID[,ans]``) listing images under ``images/``, in its order."""
    eval_dir = _mask_eval_dir(path)
    if eval_dir is None:
        raise ConfigError(
            f"data.source: no eval/info.csv with eval/images under {path}; point it at the mask root"
        )
    info = eval_dir / "info.csv"
    scan = Scan("mask-eval", (eval_dir / "images").resolve())
    rows = _read_rows(info, scan, layout="ImageID[,ans]", required=("ImageID",))
    if rows is not None:
        for line, row in rows[1]:
            at = f"{info} row {line}"
            rel = _manifest_path(scan.root, row["ImageID"], at, scan.problems)
            if rel is not None:
                scan.entries.append(Entry(rel, row["ImageID"], None, f"eval/images/{rel} (row {line})"))
    return scan


def _mask_images(path: Path) -> Path | None:
    """``train/images`` of a mask layout given its root, ``train`` or ``train/images``."""
    path = path.resolve()
    for candidate in (path / "train" / "images", path / "images", path):
        if candidate.parent.name == "train" and candidate.name == "images" and candidate.is_dir():
            return candidate
    return None


def _mask_eval_dir(path: Path) -> Path | None:
    """The directory holding ``info.csv`` and ``images/``: ``<root>/eval`` or the eval dir itself."""
    path = path.resolve()
    images = _mask_images(path)
    root = images.parent.parent if images is not None else path
    for candidate in (root / "eval", path):
        if (candidate / "info.csv").is_file() and (candidate / "images").is_dir():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _check_two_classes(scan: Scan, where: str) -> None:
    labels = sorted({e.label for e in scan.entries})
    if len(labels) == 1 and not scan.errors:
        message = f"every row has label '{labels[0]}'; a classifier needs images of at least two classes"
        scan.problems.append(Problem("few_classes", where, message))


def _hidden(rel: Path) -> bool:
    # dot-names are OS litter (macOS '._mask1.jpg', '.DS_Store'), never data
    return any(part.startswith(".") for part in rel.parts)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(Path(p.name)) and p.is_file()
    )


def _has_images(path: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() for p in path.rglob("*"))


def _ext_list() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def plural(n: int, noun: str) -> str:
    """``plural(1, "file")`` -> "1 file", ``plural(3, "file")`` -> "3 files"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def examples(items, n: int = 3) -> str:
    """The first ``n`` items joined, and how many more there are."""
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")
