"""`hpo data check`: every problem of a dataset at once, as a list of findings instead of one error.

``training.data.load_table`` stops at the first problem, which is right for training and slow for
fixing a dataset by hand. :func:`check_data` runs the same layout scanners (``training.layouts``),
keeps every problem they find, decodes every image through the training pipeline
(``training.cache.decode_image``), and adds what only a look at all images and labels shows:

==================  ========  ====================================================================
kind                severity  what
==================  ========  ====================================================================
manifest            error     CSV (or the eval split's info.csv) unreadable, empty, or without its
                              columns
missing_value       error     a CSV row with an empty path, label or group
duplicate_row       error     a CSV row listing an image a previous row lists
missing_file        error     a listed image that does not exist or cannot be read
bad_folder_name     error     mask layout: a person folder not named <id>_<gender>_<race>_<age>
unknown_file        error     mask layout: an image that is not mask1..5/incorrect_mask/normal
incomplete_group    warning   mask layout: a person without all seven images
empty_file          error     a zero-byte image
truncated_image     error     an image whose data ends early
corrupt_image       error     a file no decoder reads
unsupported_mode    error     a pixel mode foldtune does not turn into RGB reliably (LAB, HSV, ...)
converted_mode      warning   RGBA/LA/P with alpha, CMYK, 16-bit, grayscale...: converted to RGB
multi_frame         warning   animated/multi-page images: only the first frame is used
ignored_file        warning   files in a class folder that are not images foldtune reads, or a
                              class folder without images
few_classes         error     fewer than two classes
few_samples         error     a class (or the data) with fewer images/groups than folds
label_typo          error/w.  labels equal up to case/spaces (error) or one typo apart (warning)
group_split         warning   a group whose images carry different classes where groups are
                              otherwise pure; mask layout: one person id with two identities
duplicate_image     error/w.  identical pixels in different groups (leak) or with different labels
near_duplicate      warning   near-identical images (thumbnail correlation) in different groups
==================  ========  ====================================================================

For the mask layout, the eval split (``eval/info.csv`` + ``eval/images``) is checked too when it is
there: its header, the images it lists, and that each of them decodes.

Errors make ``hpo data check`` exit 1; warnings are listed and exit 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpo.data._duplicates import NEAR_SIMILARITY, duplicates
from hpo.data._images import inspect_all, mode_findings
from hpo.data._labels import fold_findings, group_split, label_typos
from training.config import CVConfig
from training.data import scan_labeled
from training.layouts import Problem, class_names, is_mask_eval, scan_mask_eval

__all__ = ["KINDS", "CheckReport", "check_data"]

KINDS = (
    "manifest",
    "missing_value",
    "duplicate_row",
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
)


@dataclass
class CheckReport:
    """Everything :func:`check_data` found, plus the size of what it looked at."""

    source: str
    format: str
    n_images: int = 0
    n_classes: int = 0
    n_groups: int | None = None
    n_eval_images: int | None = None  # mask layout with an eval split
    class_counts: dict[str, int] = field(default_factory=dict)  # readable class name -> images, class order
    findings: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
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
            "n_eval_images": self.n_eval_images,
            "class_counts": self.class_counts,
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }


def check_data(
    source: str | Path,
    *,
    fmt: str = "auto",
    folds: int = CVConfig().folds,
    near_similarity: float = NEAR_SIMILARITY,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> CheckReport:
    """Check the labeled dataset at ``source`` for every problem listed in this module's docstring.

    ``progress(done, total)`` is called from the calling thread while images are decoded.

    Raises:
        ConfigError: ``source`` does not exist or is no dataset layout at all (nothing to check).
    """
    scan = scan_labeled(source, fmt)
    report = CheckReport(source=str(source), format=scan.layout)
    findings = report.findings
    findings += scan.problems
    entries = scan.entries
    # scan.root is train/images: the eval split sits beside train, for a path and for sample-mask alike
    eval_scan = scan_mask_eval(scan.root) if scan.layout == "mask" and is_mask_eval(scan.root) else None
    eval_entries = eval_scan.entries if eval_scan is not None else []

    total = len(entries) + len(eval_entries)
    images = inspect_all(
        scan.root,
        entries,
        progress=None if progress is None else lambda done, _: progress(done, total),
        threads=threads,
    )
    findings += [im.problem for im in images if im.problem is not None]
    findings += mode_findings(entries, images)
    if eval_scan is not None:
        findings += eval_scan.problems
        evaluated = inspect_all(
            eval_scan.root,
            eval_entries,
            progress=None if progress is None else lambda done, _: progress(len(entries) + done, total),
            threads=threads,
        )
        findings += [im.problem for im in evaluated if im.problem is not None]
        report.n_eval_images = len(eval_entries)

    labels = [e.label for e in entries]
    report.n_images = len(entries)
    report.n_classes = len(set(labels))
    report.n_groups = len({e.group for e in entries}) if scan.has_groups else None
    present = sorted(set(labels), key=_class_order)
    names = class_names(present, scan.layout)  # mask layout: "4 wear/female/30-59"
    report.class_counts = {name: labels.count(c) for c, name in zip(present, names, strict=True)}
    if scan.layout != "mask":  # mask labels are computed from folder names, never typed
        findings += label_typos(entries)
    if not any(f.kind == "few_classes" for f in findings):
        findings += fold_findings(entries, folds, scan.has_groups, dict(zip(present, names, strict=True)))
    if scan.has_groups and scan.layout != "mask":
        findings += group_split(entries)
    findings += duplicates(entries, images, near_similarity)
    findings.sort(key=lambda f: (f.severity != "error", KINDS.index(f.kind)))  # stable: file order
    return report


def _class_order(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)
