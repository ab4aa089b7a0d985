"""`hpo data check`: every problem of a dataset at once, as a list of findings instead of one error.

``training.data.load_table`` stops at the first problem, which is right for training and slow for
fixing a dataset by hand. :func:`check_data` reads the same layouts with the same rules row by
row, decodes every image through the training pipeline (``training.cache.decode_image``), and
collects what it finds:

==================  ========  ====================================================================
kind                severity  what
==================  ========  ====================================================================
manifest            error     CSV unreadable, empty, or without the path/label columns
missing_value       error     a CSV row with an empty path, label or group
duplicate_row       error     a CSV row listing an image a previous row lists
path_outside        error     a CSV path leaving the CSV's folder
missing_file        error     a CSV row whose image does not exist
bad_folder_name     error     mask layout: a person folder not named <id>_<gender>_<race>_<age>
unknown_file        error     mask layout: an image that is not mask1..5/incorrect_mask/normal
incomplete_group    warning   mask layout: a person without all seven images
empty_file          error     a zero-byte image
truncated_image     error     an image whose data ends early
corrupt_image       error     a file no decoder reads
unsupported_mode    error     a pixel mode foldtune does not turn into RGB reliably (LAB, HSV, ...)
converted_mode      warning   RGBA/LA/P with alpha, CMYK, 16-bit, grayscale...: converted to RGB
multi_frame         warning   animated/multi-page images: only the first frame is used
ignored_file        warning   files in a class folder that are not images foldtune reads
few_classes         error     fewer than two classes
few_samples         error     a class (or the data) with fewer images/groups than folds
label_typo          error/w.  labels equal up to case/spaces (error) or one typo apart (warning)
group_split         warning   a group whose images carry different classes where groups are
                              otherwise pure; mask layout: one person id with two identities
duplicate_image     error/w.  identical pixels in different groups (leak) or with different labels
near_duplicate      warning   near-identical images (thumbnail correlation) in different groups
load_error          error     anything else ``load_table`` rejects
==================  ========  ====================================================================

Errors make ``hpo data check`` exit 1; warnings are listed and exit 0.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.config import ConfigError
from training.data import IMAGE_EXTENSIONS, detect_format, load_table, read_manifest_rows, sample_dir

__all__ = ["KINDS", "CheckReport", "Finding", "check_data"]

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]

KINDS = (
    "manifest",
    "missing_value",
    "duplicate_row",
    "path_outside",
    "missing_file",
    "bad_folder_name",
    "unknown_file",
    "incomplete_group",
    "empty_file",
    "truncated_image",
    "corrupt_image",
    "unsupported_mode",
    "converted_mode",
    "multi_frame",
    "ignored_file",
    "few_classes",
    "few_samples",
    "label_typo",
    "group_split",
    "duplicate_image",
    "near_duplicate",
    "load_error",
)

# Pixel modes training converts to RGB on purpose (training.cache._to_rgb), with what happens.
CONVERTED_MODES = {
    "L": "grayscale, replicated to 3 channels",
    "1": "1-bit black and white, replicated to 3 channels",
    "P": "palette, expanded to RGB",
    "PA": "palette with alpha, composited over white",
    "RGBA": "alpha composited over white",
    "RGBa": "alpha composited over white",
    "RGBX": "padding channel dropped",
    "LA": "grayscale with alpha, composited over white",
    "La": "grayscale with alpha, composited over white",
    "CMYK": "CMYK converted to RGB (colours may shift without an ICC profile)",
    "YCbCr": "YCbCr converted to RGB",
    "I;16": "16-bit grayscale scaled to 8 bits",
    "I;16L": "16-bit grayscale scaled to 8 bits",
    "I;16B": "16-bit grayscale scaled to 8 bits",
    "I;16N": "16-bit grayscale scaled to 8 bits",
    "I": "32-bit integer grayscale scaled to 8 bits",
    "F": "float grayscale scaled to 8 bits",
}

# Mask-competition layout (the same rules as training.data; load_table cross-checks them).
_MASK_STEMS = {**{f"mask{i}": 0 for i in range(1, 6)}, "incorrect_mask": 1, "normal": 2}
_GENDERS = {"male": 0, "female": 1}

THUMB_SIZE = 16  # side of the RGB thumbnail near duplicates are compared on (via the training resize)
NEAR_SIMILARITY = 0.99  # default: correlation of two thumbnails at which they count as near duplicates
# Measured on the built-in sample (1797 digits): re-encoded JPEG copies (quality 70-90, resized,
# brightness +8%) correlate >= 0.992 with their original, distinct digits at most 0.986.
_COARSE_MARGIN = 0.04  # first pass on 8x8 thumbnails keeps pairs within this of the threshold
_FLAT_STD = 2.0  # thumbnails this flat are noise after normalising; exact duplicates still count
_BLOCK = 512  # rows per block of the all-pairs similarity (memory: _BLOCK x N floats)
_PURE_GROUPS = 0.8  # groups count as "meant to hold one class" when this share of them do


@dataclass(frozen=True)
class Finding:
    """One problem: what kind, how bad, where (file/row/class), and what to do about it."""

    kind: str
    severity: Severity
    where: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class CheckReport:
    """Everything :func:`check_data` found, plus the size of what it looked at."""

    source: str
    format: str
    n_images: int = 0
    n_classes: int = 0
    n_groups: int | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "n_images": self.n_images,
            "n_classes": self.n_classes,
            "n_groups": self.n_groups,
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class _Entry:
    """One image the dataset lists: absolute file, display path, label name, group (or None)."""

    file: Path
    rel: str
    label: str
    group: str | None
    where: str


@dataclass
class _Image:
    """What decoding one image told us; ``finding`` set when it cannot be used."""

    finding: Finding | None = None
    mode: str = ""
    frames: int = 1
    pixel_hash: bytes | None = None
    thumb: np.ndarray | None = None  # (THUMB_SIZE, THUMB_SIZE, 3) uint8 RGB


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def check_data(
    source: str | Path,
    *,
    fmt: str = "auto",
    folds: int = 5,
    near_similarity: float = NEAR_SIMILARITY,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> CheckReport:
    """Check the labeled dataset at ``source`` for every problem listed in this module's docstring.

    ``progress(done, total)`` is called from the calling thread while images are decoded.

    Raises:
        ConfigError: ``source`` does not exist or is no dataset layout at all (nothing to check).
    """
    fmt = detect_format(source) if fmt == "auto" else fmt
    report = CheckReport(source=str(source), format=fmt)
    findings = report.findings
    if fmt == "sample":
        from training.sample import materialize_sample

        entries, has_groups = _scan_csv(materialize_sample(sample_dir()), findings)
    elif fmt == "csv":
        entries, has_groups = _scan_csv(Path(source), findings)
    elif fmt == "imagefolder":
        entries, has_groups = _scan_imagefolder(Path(source), findings), False
    elif fmt == "mask":
        entries, has_groups = _scan_mask(Path(source), findings), True
    else:
        raise ConfigError(f"data.format: unknown format '{fmt}'; use auto, csv, imagefolder, mask or sample")

    images = _inspect_all(entries, progress=progress, threads=threads)
    findings += [im.finding for im in images if im.finding is not None]
    findings += _mode_findings(entries, images)

    report.n_images = len(entries)
    report.n_classes = len({e.label for e in entries})
    report.n_groups = len({e.group for e in entries}) if has_groups else None
    findings += _label_typos(entries) if fmt in ("csv", "sample", "imagefolder") else []
    findings += _fold_findings(entries, folds, has_groups)
    if has_groups and fmt != "mask":
        findings += _group_split(entries)
    findings += _duplicates(entries, images, near_similarity)

    if not report.errors:  # the same rules as training, so nothing passes here that fails there
        try:
            load_table(source, fmt)
        except ConfigError as exc:
            findings.append(Finding("load_error", "error", str(source), str(exc)))
    findings.sort(key=lambda f: (f.severity != "error", KINDS.index(f.kind)))  # stable: file order
    return report


# ---------------------------------------------------------------------------------------------
# Layouts: the rules of training.data, one finding per problem instead of the first error
# ---------------------------------------------------------------------------------------------


def _scan_csv(csv_path: Path, findings: list[Finding]) -> tuple[list[_Entry], bool]:
    where = str(csv_path)
    try:
        header, rows = read_manifest_rows(csv_path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        findings.append(
            Finding("manifest", "error", where, f"cannot read the manifest ({exc}); fix the file")
        )
        return [], False
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        findings.append(
            Finding(
                "manifest",
                "error",
                where,
                f"missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
                "the header must be path,label[,group]",
            )
        )
        return [], False
    if not rows:
        findings.append(Finding("manifest", "error", where, "lists no images; add one line per image"))
        return [], False

    root = csv_path.parent.resolve()
    has_group = "group" in header
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        at = f"{csv_path.name} row {line}"
        problems = []
        if not row["label"]:
            problems.append(Finding("missing_value", "error", at, "empty label; give every image a label"))
        if has_group and not row["group"]:
            problems.append(
                Finding("missing_value", "error", at, "empty group; fill it in or drop the group column")
            )
        rel = _csv_path(root, row["path"], at, problems)
        if rel is not None:
            if rel in seen:
                problems.append(
                    Finding(
                        "duplicate_row",
                        "error",
                        at,
                        f"'{rel}' is already listed on row {seen[rel]}; remove the duplicate row",
                    )
                )
            else:
                seen[rel] = line
        findings += problems
        if rel is not None and seen[rel] == line and row["label"]:
            # still decoded and counted when only the group is missing: one row, one finding
            entries.append(
                _Entry(
                    root / rel,
                    rel,
                    row["label"],
                    row.get("group") if has_group else None,
                    f"{rel} (row {line})",
                )
            )
    return entries, has_group


def _csv_path(root: Path, raw: str, at: str, problems: list[Finding]) -> str | None:
    """The row's path relative to ``root`` (as training.data resolves it), or None with a finding."""
    if not raw:
        problems.append(Finding("missing_value", "error", at, "empty path; give every row an image path"))
        return None
    candidate = Path(os.path.normpath(root / raw.replace("\\", "/")))
    if not candidate.is_relative_to(root):  # an absolute path may reach root through a symlinked dir
        candidate = candidate.parent.resolve() / candidate.name
    if not candidate.is_relative_to(root):
        problems.append(
            Finding(
                "path_outside",
                "error",
                at,
                f"path '{raw}' is outside {root}; move the image under the CSV's folder and give the "
                "path relative to it",
            )
        )
        return None
    if not candidate.is_file():
        problems.append(
            Finding("missing_file", "error", at, f"image '{raw}' not found; fix the path or remove the row")
        )
        return None
    return candidate.relative_to(root).as_posix()


def _scan_imagefolder(path: Path, findings: list[Finding]) -> list[_Entry]:
    root = path.resolve()
    entries: list[_Entry] = []
    for sub in _subdirs(root):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and _visible(p.relative_to(root)))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        others = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if others:
            findings.append(
                Finding(
                    "ignored_file",
                    "warning",
                    f"{sub.name}/",
                    f"{_count(len(others), 'file')} ignored, not an image type foldtune reads "
                    f"(e.g. {_examples(p.relative_to(root).as_posix() for p in others)}); "
                    f"convert them to one of {', '.join(sorted(IMAGE_EXTENSIONS))} or remove them",
                )
            )
        for file in images:
            rel = file.relative_to(root).as_posix()
            entries.append(_Entry(file, rel, sub.name, None, rel))
    return entries


def _scan_mask(path: Path, findings: list[Finding]) -> list[_Entry]:
    path = path.resolve()  # given the root, train/ or train/images/ (as training.data accepts)
    images = next(
        (
            p
            for p in (path / "train" / "images", path / "images", path)
            if p.parent.name == "train" and p.is_dir()
        ),
        None,
    )
    if images is None:
        raise ConfigError(f"data.source: {path} has no train/images folder; point it at the mask root")
    entries: list[_Entry] = []
    identities: dict[str, list[str]] = defaultdict(list)
    for person in _subdirs(images):
        parts = person.name.split("_")
        if len(parts) != 4 or not parts[0] or parts[1].lower() not in _GENDERS or not parts[3].isdigit():
            findings.append(
                Finding(
                    "bad_folder_name",
                    "error",
                    f"{person.name}/",
                    "folder name must be <id>_<gender>_<race>_<age> with gender male/female "
                    "(e.g. 000001_female_Asian_45); rename or remove the folder",
                )
            )
            continue
        person_id, gender, age = parts[0], _GENDERS[parts[1].lower()], int(parts[3])
        identities[person_id].append(person.name)
        age_band = 0 if age < 30 else 1 if age < 60 else 2
        stems: Counter[str] = Counter()
        for file in sorted(p for p in person.iterdir() if p.is_file() and _visible(p)):
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            mask = _MASK_STEMS.get(file.stem.lower())
            rel = file.relative_to(images).as_posix()
            if mask is None:
                findings.append(
                    Finding(
                        "unknown_file",
                        "error",
                        rel,
                        "unknown image name; expected mask1..mask5, incorrect_mask or normal; "
                        "rename or remove it",
                    )
                )
                continue
            stems[file.stem.lower()] += 1
            entries.append(_Entry(file, rel, str(mask * 6 + gender * 3 + age_band), person_id, rel))
        lacking = [s for s in _MASK_STEMS if s not in stems]
        if lacking:
            findings.append(
                Finding(
                    "incomplete_group",
                    "warning",
                    f"{person.name}/",
                    f"no {', '.join(lacking)} image; the person's classes are unbalanced",
                )
            )
    for person_id, names in identities.items():
        if len(names) > 1:
            findings.append(
                Finding(
                    "group_split",
                    "warning",
                    f"person {person_id}",
                    f"one id, several identities ({', '.join(names)}): its images get different "
                    "gender/age classes but one group; fix the folder names",
                )
            )
    return entries


def _visible(rel: Path) -> bool:
    return not any(part.startswith(".") for part in rel.parts)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _examples(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------
# Images: decode every file as training would, keep hashes for the duplicate checks
# ---------------------------------------------------------------------------------------------


def _inspect_all(
    entries: list[_Entry], *, progress: Callable[[int, int], None] | None, threads: int | None
) -> list[_Image]:
    total = len(entries)
    if progress is not None:
        progress(0, total)
    # PIL releases the GIL while decoding, so threads scale across cores (as in training.cache).
    with ThreadPoolExecutor(max_workers=threads or min(16, (os.cpu_count() or 1) + 4)) as pool:
        out = []
        for done, image in enumerate(pool.map(_inspect, entries), start=1):
            out.append(image)
            if progress is not None:
                progress(done, total)
    return out


def _inspect(entry: _Entry) -> _Image:
    from training.cache import decode_image

    def bad(kind: str, message: str) -> _Image:
        return _Image(finding=Finding(kind, "error", entry.where, message))

    try:
        if entry.file.stat().st_size == 0:
            return bad("empty_file", "zero-byte file; restore the image or remove it")
        with Image.open(entry.file) as im:
            im.verify()  # container structure and checksums
        with Image.open(entry.file) as im:
            im.load()  # every pixel: truncated data shows only here for JPEG
            mode, frames = im.mode, getattr(im, "n_frames", 1)
            pixel_hash = hashlib.blake2b(f"{mode}{im.size}".encode() + im.tobytes(), digest_size=16).digest()
    except UnidentifiedImageError:
        return bad("corrupt_image", "not an image any decoder reads; replace or remove the file")
    except Image.DecompressionBombError as exc:
        return bad("corrupt_image", f"{_reason(exc)}; downscale the image or remove it")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = _reason(exc)
        if "truncat" in reason.lower() or isinstance(exc, EOFError):
            return bad("truncated_image", f"the data ends early ({reason}); re-export or remove the file")
        return bad("corrupt_image", f"cannot decode ({reason}); replace or remove the file")
    if mode != "RGB" and mode not in CONVERTED_MODES:
        return bad(
            "unsupported_mode",
            f"pixel mode {mode} has no reliable conversion to RGB; convert the file to RGB "
            "(e.g. PIL: Image.open(p).convert('RGB').save(p)) or remove it",
        )
    try:
        thumb = decode_image(entry.file, THUMB_SIZE)  # the training pipeline itself
    except ConfigError as exc:
        return bad("unsupported_mode", f"mode {mode}: {exc}")
    return _Image(
        mode=mode,
        frames=frames,
        pixel_hash=pixel_hash,
        thumb=thumb,
    )


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _mode_findings(entries: list[_Entry], images: list[_Image]) -> list[Finding]:
    """One warning per converted mode (a dataset of 10k grey images is one fact, not 10k)."""
    by_mode: dict[str, list[str]] = defaultdict(list)
    multi: list[str] = []
    for entry, image in zip(entries, images, strict=True):
        if image.finding is None and image.mode != "RGB":
            by_mode[image.mode].append(entry.rel)
        if image.finding is None and image.frames > 1:
            multi.append(entry.rel)
    out = [
        Finding(
            "converted_mode",
            "warning",
            _count(len(files), "image"),
            f"mode {mode}, {CONVERTED_MODES[mode]}: {_examples(files)}; fine if intended, "
            "else convert them to RGB yourself",
        )
        for mode, files in sorted(by_mode.items())
    ]
    if multi:
        out.append(
            Finding(
                "multi_frame",
                "warning",
                _count(len(multi), "image"),
                f"several frames/pages, only the first is used: {_examples(multi)}",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Labels, folds and groups
# ---------------------------------------------------------------------------------------------


def _label_typos(entries: list[_Entry]) -> list[Finding]:
    counts = Counter(e.label for e in entries)
    out = []
    for a, b in itertools.combinations(sorted(counts), 2):
        rare, common = (a, b) if (counts[a], b) < (counts[b], a) else (b, a)
        pair = f"'{rare}' ({_count(counts[rare], 'image')}) and '{common}' ({counts[common]})"
        if _norm_label(a) == _norm_label(b):
            out.append(
                Finding(
                    "label_typo",
                    "error",
                    f"label '{rare}'",
                    f"labels {pair} differ only in case, spaces or separators; they are two classes "
                    f"now; relabel '{rare}' as '{common}'",
                )
            )
        elif _typo_pair(rare, common) and counts[rare] * 4 <= counts[common]:
            out.append(
                Finding(
                    "label_typo",
                    "warning",
                    f"label '{rare}'",
                    f"labels {pair} are one typo apart; if '{rare}' means '{common}', relabel it",
                )
            )
        if len(out) > 200:
            break
    return out


def _norm_label(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label.casefold()).strip()


def _typo_pair(a: str, b: str) -> bool:
    """Within one edit (two for long names), not numbers, not names that differ only in digits."""
    shortest = min(len(a), len(b))
    if shortest < 4 or re.sub(r"\d", "", a) == re.sub(r"\d", "", b):  # class1/class2, 0/1
        return False
    limit = 2 if shortest >= 8 else 1
    return abs(len(a) - len(b)) <= limit and _edit_distance(a.casefold(), b.casefold(), limit) <= limit


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, stopping early once every path exceeds ``limit``."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _fold_findings(entries: list[_Entry], folds: int, has_groups: bool) -> list[Finding]:
    labels = [e.label for e in entries]
    classes = sorted(set(labels))
    if len(classes) < 2:
        return [
            Finding(
                "few_classes",
                "error",
                "dataset",
                f"{len(classes)} class(es) ({', '.join(classes) or 'none'}); a classifier needs images "
                "of at least two",
            )
        ]
    out = []
    if has_groups:
        n_groups = len({e.group for e in entries})
        if n_groups < folds:
            out.append(
                Finding(
                    "few_samples",
                    "error",
                    "dataset",
                    f"{_count(n_groups, 'group')} but {folds} folds; "
                    f"lower the folds to {max(n_groups, 2)} or fewer, or add groups",
                )
            )
    members: dict[str, list[_Entry]] = defaultdict(list)
    for e in entries:
        members[e.label].append(e)
    for label in classes:
        count = len(members[label])
        n_groups = len({e.group for e in members[label]})
        if count < folds:
            out.append(
                Finding(
                    "few_samples",
                    "error",
                    f"class '{label}'",
                    f"{_count(count, 'image')} but {folds} folds; "
                    "add images of this class, merge or drop it, or lower the folds",
                )
            )
        elif has_groups and n_groups < folds:
            out.append(
                Finding(
                    "few_samples",
                    "error",
                    f"class '{label}'",
                    f"its {count} images come from {_count(n_groups, 'group')} but {folds} folds; add images "
                    "from other groups or lower the folds",
                )
            )
    if not out and folds >= 2:
        from training.folds import make_folds

        index = {c: i for i, c in enumerate(classes)}
        groups = np.array([e.group for e in entries], dtype=object) if has_groups else None
        try:
            make_folds(np.array([index[c] for c in labels]), groups, folds, seed=0, classes=classes)
        except ConfigError as exc:
            out.append(Finding("few_samples", "error", "dataset", str(exc)))
    return out


def _group_split(entries: list[_Entry]) -> list[Finding]:
    """Groups spanning classes, reported only when the other groups each hold one class."""
    labels_of: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        labels_of[e.group][e.label] += 1
    multi = {g: c for g, c in labels_of.items() if sum(c.values()) > 1}
    mixed = {g: c for g, c in multi.items() if len(c) > 1}
    if len(multi) < 3 or not mixed or 1 - len(mixed) / len(multi) < _PURE_GROUPS:
        return []  # groups mix classes by design (e.g. one person, several expressions)
    return [
        Finding(
            "group_split",
            "warning",
            f"group '{g}'",
            "images of classes "
            + ", ".join(f"'{label}' ({n})" for label, n in sorted(c.items()))
            + f", while {len(multi) - len(mixed)} of {len(multi)} groups hold one class; check the labels",
        )
        for g, c in sorted(mixed.items())
    ]


# ---------------------------------------------------------------------------------------------
# Duplicates across groups: the same picture on both sides of a split inflates validation
# ---------------------------------------------------------------------------------------------


def _duplicates(entries: list[_Entry], images: list[_Image], similarity: float) -> list[Finding]:
    ok = [i for i, im in enumerate(images) if im.finding is None]
    group = [e.group if e.group is not None else f"\0{e.rel}" for e in entries]  # no groups: one each

    def describe(members: list[int]) -> str:
        shown = [
            f"{entries[i].rel} ({entries[i].label}"
            + (f", group {entries[i].group})" if entries[i].group is not None else ")")
            for i in members
        ]
        return _examples(shown, 4)

    out = []
    by_hash: dict[bytes, list[int]] = defaultdict(list)
    for i in ok:
        by_hash[images[i].pixel_hash].append(i)  # type: ignore[index]
    for members in by_hash.values():
        if len({group[i] for i in members}) < 2:
            continue
        conflicting = len({entries[i].label for i in members}) > 1
        out.append(
            Finding(
                "duplicate_image",
                "error" if conflicting else "warning",
                entries[members[0]].where,
                f"identical pixels in {len(members)} images: {describe(members)}; "
                + (
                    "with different labels: keep one and fix its label"
                    if conflicting
                    else "in different groups they leak between folds: drop the copies or give them one group"
                ),
            )
        )

    # One representative per exact-duplicate set, then near pairs between them.
    reps = [members[0] for members in by_hash.values()]
    for members in _near_clusters(reps, images, similarity):
        expanded = sorted(i for r in members for i in by_hash[images[r].pixel_hash])  # type: ignore[index]
        if len({group[i] for i in expanded}) < 2:
            continue
        out.append(
            Finding(
                "near_duplicate",
                "warning",
                entries[expanded[0]].where,
                f"{len(expanded)} near-identical images: {describe(expanded)}; in different groups they "
                "leak between folds: drop the copies or give them one group",
            )
        )
    return out


def _near_clusters(reps: list[int], images: list[_Image], similarity: float) -> list[list[int]]:
    """Clusters of images whose thumbnails correlate at ``similarity`` or more (each channel centred
    on its mean: re-encoding, resizing and brightness/contrast changes keep it near 1, a colour
    cast shared by a whole dataset does not make images alike).

    All pairs are compared on 8x8 thumbnails in blocks (one matrix product each), and the pairs
    within a margin of the threshold are confirmed on the 16x16 ones.
    """
    if similarity > 1 or len(reps) < 2:
        return []
    fine = np.stack([images[i].thumb for i in reps]).astype(np.float32)  # type: ignore[misc]
    fine -= fine.mean(axis=(1, 2), keepdims=True)  # per channel: a shared colour cast is no likeness
    n, side = len(reps), fine.shape[1]
    coarse = fine.reshape(n, side // 2, 2, side // 2, 2, 3).mean(axis=(2, 4))
    keep = np.flatnonzero(fine.reshape(n, -1).std(axis=1) >= _FLAT_STD)
    if len(keep) < 2:
        return []
    coarse, fine = _unit_rows(coarse[keep]), _unit_rows(fine[keep])
    parent = np.arange(len(keep))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for start in range(0, len(keep), _BLOCK):
        sims = coarse[start : start + _BLOCK] @ coarse.T
        a, b = np.nonzero(sims >= similarity - _COARSE_MARGIN)
        a += start
        a, b = a[a < b], b[a < b]
        confirmed = np.einsum("ij,ij->i", fine[a], fine[b]) >= similarity
        for x, y in zip(a[confirmed], b[confirmed], strict=True):
            parent[find(int(x))] = find(int(y))
    clusters: dict[int, list[int]] = defaultdict(list)
    for k in range(len(keep)):
        clusters[find(k)].append(reps[keep[k]])
    return [sorted(members) for members in clusters.values() if len(members) > 1]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Each (channel-centred) image as a unit-length vector: dot products are correlations."""
    x = x.reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
