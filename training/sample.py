"""The built-in samples: ``sample`` (sklearn's digits as 32x32 PNGs with writer groups) and
``sample-mask`` (synthetic faces in the mask competition's layout).

``sample``: 1797 images, 10 classes, ``labels.csv`` with ``path,label,group``. Each synthetic
"writer" (group) owns about six digits of mixed classes and one ink colour, so grouped k-fold matters
here as it does on real data: a model that learns a writer's ink must not be rewarded for it in
validation. Digits are easy: a small CPU model reaches 0.99 macro-F1 on them.

``sample-mask``: 270 people x 7 photos (``train/images/<id>_<gender>_<race>_<age>/mask1..5,
incorrect_mask, normal``) plus an eval split of 60 people (``eval/info.csv`` + ``eval/images``), 48 px
drawn faces. Mask state shows as a mask over nose and mouth, over the chin only, or none; gender as
hair length (15% of people the other way); age as greying hair and forehead lines that grow with the
age in years, so ages near 30 and 60 are ambiguous. Skin, hair, background and where the face sits
belong to the person, so a model can learn people instead of classes, and grouped folds catch it.
Like the real set, the ages >= 60 are few (about 7% of people) and 5 of a person's 7 photos are
masked, which makes the 18-class macro-F1 hard: the default config scores well below its ceiling.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.config import ConfigError

__all__ = ["SAMPLES", "SAMPLE_CSV", "materialize_mask_sample", "materialize_sample"]

logger = logging.getLogger(__name__)

SAMPLES = ("sample", "sample-mask")  # the built-in data names `data.source` accepts
SAMPLE_CSV = "labels.csv"
_SIZE = 32  # digits: output side in pixels
_PER_WRITER = 6  # digits: images per synthetic writer group
_SEED = 0  # fixed: a sample is the same bytes everywhere

_MASK_SIZE = 48  # sample-mask: output side in pixels
_MASK_PEOPLE = 270  # train split: 1890 images
_MASK_EVAL_PEOPLE = 60  # eval split: 420 images
_MASK_EVAL_INFO = "eval/info.csv"  # written last: its presence marks a complete sample
_AGE_BANDS = ((18, 30, 0.46), (30, 60, 0.47), (60, 80, 0.07))  # [low, high) years, share of people
_RACES = ("Asian", "White", "Black")
_MASK_COLOURS = ((235, 235, 240), (90, 140, 210), (35, 35, 40), (120, 190, 160), (220, 150, 170))


def materialize_sample(dest: Path) -> Path:
    """Write the digits sample into ``dest`` (once) and return its CSV path."""
    return _materialize(Path(dest), SAMPLE_CSV, _write_sample) / SAMPLE_CSV


def materialize_mask_sample(dest: Path) -> Path:
    """Write the mask-layout sample into ``dest`` (once) and return its root."""
    return _materialize(Path(dest), _MASK_EVAL_INFO, _write_mask_sample)


def _materialize(dest: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """Build the dataset in a sibling temp dir and rename it into place, so concurrent callers never
    see half a dataset; when another process finishes first, this one's copy is discarded."""
    dest = dest.absolute()
    if (dest / marker).is_file():
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(
            f"{dest} exists but holds no {marker}; remove it or set HPO_SAMPLE_DIR to another folder"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the dataset is meant to be shared
        write(tmp)
        try:
            os.replace(tmp, dest)  # atomic; replaces only a missing or empty dest
            logger.info("wrote sample dataset to %s", dest)
        except OSError:
            if not (dest / marker).is_file():
                raise
            logger.debug("sample appeared at %s meanwhile; keeping that one", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_sample(out: Path) -> None:
    from sklearn.datasets import load_digits  # deferred: sklearn import is slow and rarely needed

    digits = load_digits()
    ink_intensity = digits.images / 16.0  # 0..1, 1 = full ink
    n = len(ink_intensity)
    rng = np.random.default_rng(_SEED)
    writer = np.empty(n, dtype=np.int64)
    writer[rng.permutation(n)] = np.arange(n) // _PER_WRITER
    n_writers = int(writer.max()) + 1
    inks = rng.integers(0, 160, size=(n_writers, 3))  # dark-ish pen colours, one per writer
    paper = np.array([250.0, 248.0, 240.0])

    (out / "images").mkdir()
    rows = []
    for i in range(n):
        small = ink_intensity[i][..., None] * inks[writer[i]] + (1 - ink_intensity[i][..., None]) * paper
        img = Image.fromarray(np.rint(small).astype(np.uint8), "RGB")
        path = f"images/{i:04d}.png"
        img.resize((_SIZE, _SIZE), Image.Resampling.BICUBIC).save(out / path, optimize=False)
        rows.append((path, int(digits.target[i]), f"w{writer[i]:03d}"))
    with (out / SAMPLE_CSV).open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "group"])
        w.writerows(rows)


def _write_mask_sample(out: Path) -> None:
    rng = np.random.default_rng(_SEED)
    people = [_person(rng, i + 1) for i in range(_MASK_PEOPLE + _MASK_EVAL_PEOPLE)]
    stems = [*(f"mask{i}" for i in range(1, 6)), "incorrect_mask", "normal"]
    train = out / "train" / "images"
    for person in people[:_MASK_PEOPLE]:
        folder = train / f"{person['id']:06d}_{person['gender']}_{person['race']}_{person['age']}"
        folder.mkdir(parents=True)
        for stem in stems:
            _face(person, stem, rng).save(folder / f"{stem}.png", optimize=False)
    (out / "eval" / "images").mkdir(parents=True)
    names = []
    for person in people[_MASK_PEOPLE:]:
        for stem in stems:
            name = f"{rng.integers(16**12):012x}.png"  # the competition's eval images are anonymous
            _face(person, stem, rng).save(out / "eval" / "images" / name, optimize=False)
            names.append(name)
    with (out / _MASK_EVAL_INFO).open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ImageID", "ans"])
        w.writerows((name, 0) for name in sorted(names))  # ans: placeholders, as in the competition


def _person(rng: np.random.Generator, number: int) -> dict:
    """One person's identity and look: what all seven of their photos share."""
    band = rng.choice(len(_AGE_BANDS), p=[share for *_, share in _AGE_BANDS])
    low, high, _ = _AGE_BANDS[band]
    gender = "female" if rng.random() < 0.6 else "male"
    race = int(rng.choice(len(_RACES), p=[0.7, 0.2, 0.1]))
    skin = np.array([(235, 200, 170), (245, 215, 195), (140, 95, 70)][race]) + rng.normal(0, 15, 3)
    long_hair = (gender == "female") != (rng.random() < 0.15)  # 15% wear the other gender's hair
    age = int(rng.integers(low, high))
    return {
        "id": number,
        "gender": gender,
        "race": _RACES[race],
        "age": age,
        "skin": skin,
        "hair": rng.uniform(20, 90, 3),  # the hair's colour before it greys
        "grey": float(np.clip((age - 25) / 45 + rng.normal(0, 0.12), 0, 1)),
        "lines": int(np.clip(round((age - 30) / 12 + rng.normal(0, 0.7)), 0, 3)),  # forehead lines
        "long_hair": long_hair,
        "background": rng.uniform(60, 230, 3),
        "offset": rng.integers(-4, 5, 2),  # where this person's photos put the face
        "width": int(rng.integers(13, 17)),  # half-width of the face
    }


def _face(person: dict, stem: str, rng: np.random.Generator) -> Image.Image:
    """One photo: the person's face with the mask state of ``stem``, jittered and noisy."""
    s = _MASK_SIZE
    img = Image.new("RGB", (s, s), _rgb(person["background"] + rng.normal(0, 10, 3)))
    d = ImageDraw.Draw(img)
    cx, cy = np.array([s // 2, s // 2 + 2]) + person["offset"] + rng.integers(-2, 3, 2)
    w, h = person["width"], person["width"] + 4
    hair = _rgb(person["hair"] * (1 - person["grey"]) + 200 * person["grey"] + rng.normal(0, 8, 3))
    if person["long_hair"]:
        d.rectangle((cx - w - 3, cy - h + 2, cx + w + 3, cy + h + 6), fill=hair)
    d.ellipse((cx - w, cy - h, cx + w, cy + h), fill=_rgb(person["skin"] + rng.normal(0, 6, 3)))
    d.chord((cx - w, cy - h - 2, cx + w, cy - h // 3), 180, 360, fill=hair)  # hair on top
    for k in range(person["lines"]):
        y = cy - h // 2 + 3 + 2 * k
        d.line((cx - w // 2, y, cx + w // 2, y), fill=_rgb(person["skin"] * 0.6), width=1)
    for ex in (cx - w // 2, cx + w // 2 - 2):  # eyes
        d.rectangle((ex, cy - 3, ex + 2, cy - 1), fill=(30, 30, 30))
    d.line((cx, cy, cx, cy + 4), fill=_rgb(person["skin"] * 0.7), width=1)  # nose
    d.line((cx - 4, cy + 8, cx + 4, cy + 8), fill=(150, 60, 60), width=2)  # mouth
    if stem != "normal":
        colour = np.array(_MASK_COLOURS[int(stem[-1]) - 1 if stem.startswith("mask") else rng.integers(5)])
        top = cy + 1 if stem.startswith("mask") else cy + 7  # worn over the nose, or only over the chin
        d.rounded_rectangle((cx - w + 1, top, cx + w - 1, cy + h - 1), radius=3, fill=_rgb(colour))
    pixels = np.asarray(img, dtype=np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 8, (s, s, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(np.rint(values), 0, 255))
    return r, g, b
