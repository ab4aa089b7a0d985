"""Miniature datasets of real image files, one generator per layout ``training.data`` reads.

Images are small (64x48 by default) and their colour depends on the class, so a model can learn
something from them in a few CPU steps. Everything is deterministic.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "MASK_PEOPLE",
    "MASK_STEMS",
    "make_csv_dataset",
    "make_imagefolder",
    "make_mask_tree",
    "mask_label",
    "write_image",
]

MASK_STEMS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
# (gender, age): every gender x age-band pair, including the band edges 29/30 and 59/60
MASK_PEOPLE = (
    ("male", 20),
    ("female", 30),
    ("male", 60),
    ("female", 29),
    ("male", 59),
    ("female", 75),
)


def mask_label(stem: str, gender: str, age: int) -> int:
    """The mask competition's class formula, written out independently of training.data."""
    mask = 2 if stem == "normal" else 1 if stem == "incorrect_mask" else 0
    return mask * 6 + (gender == "female") * 3 + (0 if age < 30 else 1 if age < 60 else 2)


def write_image(path: Path, size: tuple[int, int] = (64, 48), *, seed: int = 0, colour: int = 0) -> Path:
    """A small noisy image whose mean colour follows ``colour``; format from the file extension."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array([(colour * 67) % 256, (colour * 131 + 40) % 256, (colour * 29 + 90) % 256])
    pixels = np.clip(base + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def make_mask_tree(
    root: Path,
    n_people: int = 6,
    size: tuple[int, int] = (64, 48),
    with_eval: bool = True,
    n_eval: int = 5,
) -> Path:
    """The mask layout: ``train/images/<id>_<gender>_Asian_<age>/<stem>.{jpg,png}`` and ``eval/``.

    People cycle through :data:`MASK_PEOPLE`; ids are ``000001``, ``000002``, ...
    Returns ``root``.
    """
    images = root / "train" / "images"
    for p in range(n_people):
        gender, age = MASK_PEOPLE[p % len(MASK_PEOPLE)]
        person = images / f"{p + 1:06d}_{gender}_Asian_{age}"
        for k, stem in enumerate(MASK_STEMS):
            ext = ".jpg" if (p + k) % 2 == 0 else ".png"
            write_image(person / f"{stem}{ext}", size, seed=p * 7 + k, colour=mask_label(stem, gender, age))
    if with_eval:
        image_ids = [hashlib.sha1(f"eval{i}".encode()).hexdigest() + ".jpg" for i in range(n_eval)]
        for i, image_id in enumerate(image_ids):
            write_image(root / "eval" / "images" / image_id, size, seed=1000 + i, colour=i)
        with (root / "eval" / "info.csv").open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["ImageID", "ans"])
            w.writerows((image_id, 0) for image_id in image_ids)
    return root


def make_imagefolder(
    root: Path,
    classes: Sequence[str] = ("bird", "cat", "dog"),
    per_class: int = 4,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """``root/<class>/<n>.<ext>`` with extensions png, jpg, JPEG and bmp mixed. Returns ``root``."""
    exts = (".png", ".jpg", ".JPEG", ".bmp")
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i:03d}{exts[i % len(exts)]}", size, seed=c * 100 + i, colour=c)
    return root


def make_csv_dataset(
    root: Path,
    classes: Sequence[str] = ("a", "b", "c"),
    per_class: int = 6,
    groups: bool = True,
    size: tuple[int, int] = (64, 48),
    name: str = "labels.csv",
) -> Path:
    """Images under ``root/imgs`` and a manifest ``root/<name>`` (``path,label[,group]``).

    Group ``g<k>`` holds the k-th pair of images of every class, so groups mix classes and each
    class spans ``per_class / 2`` groups. Returns the CSV path.
    """
    rows = []
    for c, label in enumerate(classes):
        for i in range(per_class):
            rel = f"imgs/{label}_{i:02d}.png"
            write_image(root / rel, size, seed=c * 100 + i, colour=c)
            rows.append([rel, label, f"g{i // 2}"] if groups else [rel, label])
    csv_path = root / name
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "group"] if groups else ["path", "label"])
        w.writerows(rows)
    return csv_path
