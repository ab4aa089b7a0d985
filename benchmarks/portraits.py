"""A generated mask-competition data set: similar-looking synthetic portraits, the real one's size and layout.

``train/images/<id>_<gender>_<race>_<age>/{mask1..5,incorrect_mask,normal}.jpg``, 7 JPEGs of 384x512
(width x height) per person, as the competition ships them (2,700 persons, 18,900 images). Each
portrait is a face-like blob (skin-toned ellipse, hair, eyes, a mask over mouth and nose, none for
``normal``, below the nose for ``incorrect_mask``) on a two-colour gradient background; every person
draws their own colours, face position, size and noise texture, and each of their seven photos
shifts, scales and re-lights a little. So portraits of different people look alike at thumbnail
size, and the near-duplicate check has many close pairs to confirm, as on the real photos: on 100
persons, 0.3 % of the pairs of different persons come within the check's coarse margin (8x8
correlation >= 0.95, so at 18,900 images every image has ~60 candidates to confirm), their 16x16
correlation has median 0.67 and maximum 0.98, and none reaches the 0.99 of a near duplicate.

Deterministic: an image depends only on (seed, person, photo). Files are written to a temp name and
renamed, so an interrupted run leaves whole files only, and the next run reuses them. A data set of
N persons is a folder of hard links to the first N persons of one store, so the sizes share files.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTOS", "SIZE", "VERSION", "dataset", "folder_name", "missing", "portrait"]

VERSION = 1  # bump when the pictures change: a new store, the old files are not reused
SIZE = (384, 512)  # width, height: the competition's photos
PHOTOS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
_QUALITY = 90
_GRID: tuple[np.ndarray, np.ndarray] | None = None


def folder_name(person: int, *, seed: int = 0) -> str:
    """``<id>_<gender>_<race>_<age>``: about 60 % female, ages <30 / 30-59 / >=60 at 45 / 45 / 10 %."""
    rng = np.random.default_rng([seed, person, 1])
    gender = "female" if rng.random() < 0.6 else "male"
    band = rng.choice(3, p=[0.45, 0.45, 0.10])
    age = int(rng.integers(*((18, 30), (30, 60), (60, 75))[band]))
    return f"{person:06d}_{gender}_Asian_{age}"


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the drawing canvas, in full-size pixels (half the resolution)."""
    global _GRID
    if _GRID is None:
        ys, xs = np.mgrid[0 : SIZE[1] : 2, 0 : SIZE[0] : 2].astype(np.float32)
        _GRID = (xs + 0.5, ys + 0.5)
    return _GRID


def portrait(person: int, photo: str, *, seed: int = 0) -> np.ndarray:
    """One ``(512, 384, 3)`` uint8 portrait of ``person`` in ``photo`` (one of PHOTOS).

    Drawn at half resolution and scaled up bilinearly (4x less work, soft edges as in a photo).
    """
    xs, ys = _grid()
    who = np.random.default_rng([seed, person, 2])  # the person: the same in all seven photos
    shot = np.random.default_rng([seed, person, 3, PHOTOS.index(photo)])  # this photo's jitter
    # Colours and layout vary per person, but as in real portraits a bright face sits on a darker
    # background, lighter towards the bottom: at thumbnail size people look alike.
    top = who.uniform(40, 110, 3)
    bottom = top + who.uniform(15, 45)
    skin, hair = who.uniform([170, 125, 100], [240, 200, 170]), who.uniform(10, 60, 3)
    cx = SIZE[0] / 2 + who.uniform(-12, 12) + shot.uniform(-5, 5)
    cy = SIZE[1] * 0.47 + who.uniform(-12, 12) + shot.uniform(-5, 5)
    scale = who.uniform(0.92, 1.08) * shot.uniform(0.97, 1.03)
    ax, ay = 95 * scale * who.uniform(0.93, 1.07), 130 * scale

    t = (ys / SIZE[1])[..., None]
    img = (top * (1 - t) + bottom * t).astype(np.float32)
    body = ((xs - cx) / (ax * 1.9)) ** 2 + ((ys - (cy + 2.3 * ay)) / (ay * 1.2)) ** 2 <= 1
    img[body] = who.uniform(60, 140, 3)
    head = ((xs - cx) / (ax * 1.08)) ** 2 + ((ys - (cy - 0.12 * ay)) / (ay * 1.06)) ** 2 <= 1
    img[head] = hair
    face = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1
    img[face] = skin
    for side in (-1, 1):
        eye = ((xs - (cx + side * 0.38 * ax)) / (0.14 * ax)) ** 2 + (
            (ys - (cy - 0.12 * ay)) / (0.07 * ay)
        ) ** 2
        img[eye <= 1] = (40, 30, 25)
    if photo != "normal":
        low = 0.35 if photo == "incorrect_mask" else 0.08  # incorrectly worn: below the nose
        mask = face & (ys >= cy + low * ay) & (ys <= cy + 0.85 * ay)
        colours = ((235, 235, 240), (90, 140, 210), (30, 30, 35), (200, 120, 150), (120, 170, 120))
        img[mask] = colours[PHOTOS.index(photo) % len(colours)] if photo.startswith("mask") else colours[0]
    img *= shot.uniform(0.9, 1.1)  # lighting
    # the person's texture (skin, fabric, sensor), in 4x4-pixel grains that survive the JPEG
    texture = np.random.default_rng([seed, person, 4]).normal(0, 6, (SIZE[1] // 4, SIZE[0] // 4, 1))
    img += texture.repeat(2, 0).repeat(2, 1).astype(np.float32)
    half = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return np.asarray(half.resize(SIZE, Image.Resampling.BILINEAR))


def _write_person(store: Path, person: int, seed: int) -> None:
    folder = store / folder_name(person, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        out = folder / f"{photo}.jpg"
        if out.is_file():
            continue
        tmp = folder / f".{photo}.{os.getpid()}.tmp"
        Image.fromarray(portrait(person, photo, seed=seed)).save(tmp, format="JPEG", quality=_QUALITY)
        os.replace(tmp, out)


def _write_people(store: Path, people: list[int], seed: int) -> int:
    for person in people:
        _write_person(store, person, seed)
    return len(people)


def _store(work: Path, seed: int) -> Path:
    return work / f"portraits-v{VERSION}-seed{seed}"


def missing(work: Path, persons: int, *, seed: int = 0) -> list[int]:
    """The persons of the first ``persons`` whose seven photos are not all in the store yet."""
    store = _store(work, seed)
    return [
        p
        for p in range(persons)
        if not all((store / folder_name(p, seed=seed) / f"{photo}.jpg").is_file() for photo in PHOTOS)
    ]


def dataset(work: Path, persons: int, *, seed: int = 0, jobs: int | None = None) -> Path:
    """The mask-layout root of ``persons`` persons under ``work`` (made once, then reused)."""
    store = _store(work, seed)
    todo = missing(work, persons, seed=seed)
    if todo:
        jobs = jobs or os.cpu_count() or 1
        chunks = [todo[i :: jobs * 4] for i in range(jobs * 4)]
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_write_people, [store] * len(chunks), chunks, [seed] * len(chunks)))
    root = work / f"mask-{persons}-v{VERSION}-seed{seed}"
    images = root / "train" / "images"
    done = root / ".complete"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for p in range(persons):
        name = folder_name(p, seed=seed)
        (images / name).mkdir(parents=True)
        for photo in PHOTOS:
            src, dst = store / name / f"{photo}.jpg", images / name / f"{photo}.jpg"
            try:
                os.link(src, dst)
            except OSError:  # another file system: copy
                shutil.copy2(src, dst)
    done.write_text(f"{persons} persons x {len(PHOTOS)} photos\n")
    return root
