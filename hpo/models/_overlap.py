"""Is a labeled set held out? What ``hpo evaluate`` checks before it reports a macro-F1.

Two cheap checks, by what a bundle knows of its training data:

1. the data fingerprint (``bundle.json`` info, the study's): a labeled set with the same fingerprint
   is the training data itself (same relative paths, labels, groups and file sizes), on any machine;
2. when the training data's path (each member's ``data.source``) exists on this machine, each
   evaluated image is compared with the training images: the same file (device and inode, so also
   hard links and other paths to it) or a byte-identical copy (same size, then same SHA-256; only
   images whose size matches a training image are read).

Neither sees a re-encoded or resized copy of a training image. When the training data is not on this
machine and the fingerprint differs, nothing more can be said (the result is None).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpo.models._bundle import Bundle
from training.data import ImageTable, sample_dir, scan_labeled
from training.layouts import is_mask_root
from training.sample import SAMPLE_CSV

__all__ = ["Overlap", "training_overlap"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overlap:
    """How many of the evaluated images the model trained on, and how that was found."""

    n_images: int  # labeled images evaluated
    n_seen: int  # of them, images of the model's training data
    how: str  # "same data fingerprint" | "same files" | "identical copies" | both | "none"

    def message(self) -> str:
        return (
            f"{self.n_seen} of {self.n_images} labeled images are images the model was trained on "
            f"({self.how}): this macro-F1 is not a held-out score; evaluate on images kept out of the study"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_overlap(bundle: Bundle, table: ImageTable) -> Overlap | None:
    """Which images of ``table`` the bundle's members were trained on (see the module docstring)."""
    fingerprint = bundle.info.get("data_fingerprint")
    if fingerprint and table.fingerprint() == fingerprint:
        return Overlap(len(table), len(table), "same data fingerprint")
    sources = {m.config.data.source for m in bundle.members}
    training = [file for source in sorted(sources) for file in _training_files(source)]
    if not training:
        log.info("the model's training data is not on this machine: only its fingerprint was compared")
        return None
    same, copies = _seen(training, [table.file(i) for i in range(len(table))])
    how = " and ".join(k for k, n in (("same files", same), ("identical copies", copies)) if n) or "none"
    return Overlap(len(table), same + copies, how)


def _training_files(source: str) -> list[Path]:
    """The training images of ``source`` when it is on this machine, without decoding any."""
    if source == "sample":
        if not (sample_dir() / SAMPLE_CSV).is_file():  # never write the sample just to compare with it
            return []
        source = str(sample_dir() / SAMPLE_CSV)
    elif source == "sample-mask":
        if not is_mask_root(sample_dir(source)):  # nor the mask sample
            return []
        source = str(sample_dir(source))
    if not Path(source).exists():
        return []
    try:
        scan = scan_labeled(source)
    except Exception as exc:  # a training set that moved or changed: nothing to compare with
        log.info("cannot read the model's training data at %s: %s", source, exc)
        return []
    return [scan.root / e.path for e in scan.entries]


def _seen(training: list[Path], evaluated: list[Path]) -> tuple[int, int]:
    """(evaluated images that are training files, evaluated images that are byte-identical copies)."""
    identities, by_size = set(), defaultdict(list)
    for path in training:
        try:
            st = os.stat(path)
        except OSError:
            continue
        identities.add((st.st_dev, st.st_ino))
        by_size[st.st_size].append(path)
    digests: dict[int, set[str]] = {}  # size -> SHA-256 of the training images of that size, read once

    def training_digests(size: int) -> set[str]:
        if size not in digests:
            digests[size] = {_sha256(t) for t in by_size[size]}
        return digests[size]

    same = copies = 0
    for path in evaluated:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) in identities:
            same += 1
        elif st.st_size in by_size and _sha256(path) in training_digests(st.st_size):
            copies += 1
    return same, copies


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"unreadable {path}"  # equal to no digest
