"""A meta-set of small CPU-sized image datasets of different kinds, built by this script, seeded.

The portfolio (``benchmarks.portfolio``) and the pruner replay (``benchmarks.pruner_replay``) need many
datasets, each small enough that one config of the CPU spaces trains in seconds with test_resnet. Each
set is a CSV manifest ``path,label,group`` beside its 32 px PNGs; groups play the part of people or
writers (a group's images share a look), so the folds are group-aware as on real data.

=============  =========================================================================================
``digits``     the built-in ``sample`` (sklearn digits, writer groups), whole groups drawn to ~720 images
``mask``       the built-in ``sample-mask`` (18 classes, person groups), 120 whole persons (840 images)
``shapes``     6 outline/filled shapes at random place, size and colour on a group's background
``textures``   6 textures (stripes in 3 directions, checks, dots, noise blobs) in a group's palette
``glyphs``     30 classes: 5 shapes x 6 colours, few images a class
``counts``     1-5 dots to count, heavily imbalanced (45 % / 27 % / 15 % / 9 % / 4 %)
``arrows``     (held out: not in META_SET) 8 arrow directions among distractor strokes
``faint``      (not in META_SET) 8 bar orientations at 6-18 grey levels of contrast under heavy
               noise; test_resnet stays near chance on it in the quick space's 6 epochs
=============  =========================================================================================

    python -m benchmarks.metaset            # build every set (once) and print a table of them
    >>> source = dataset_source("shapes")   # a CSV path for RunConfig's data.source
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["DATASETS", "HELD_OUT", "META_SET", "dataset_source", "metaset_root"]

SIZE = 32  # every generated image; the CPU spaces train at 32 px
_VERSION = "v1"  # bump when a generator changes, so an old build is never mistaken for the new one
_CSV = "labels.csv"

META_SET = ("digits", "mask", "shapes", "textures", "glyphs", "counts")
HELD_OUT = "arrows"  # a kind no portfolio saw: for judging a portfolio on data it was not built on
# faint: built on request only; at the quick space's budget every config stays near chance on it
DATASETS = (*META_SET, HELD_OUT, "faint")
_SEEDS = {
    "digits": 0,
    "mask": 1,
    "shapes": 2,
    "textures": 3,
    "faint": 4,
    "glyphs": 5,
    "counts": 6,
    "arrows": 7,
}


def metaset_root() -> Path:
    """``$HPO_METASET_DIR``, else a folder in the system's temp dir shared by every run on the machine."""
    return Path(os.environ.get("HPO_METASET_DIR") or Path(tempfile.gettempdir()) / "foldtune-metaset")


def dataset_source(name: str) -> str:
    """Build ``name`` once (atomically) and return its CSV manifest's path."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown meta-set dataset '{name}'; use one of: {', '.join(DATASETS)}")
    dest = metaset_root() / f"{name}-{_VERSION}"
    if not (dest / _CSV).is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        rows = _BUILDERS[name](tmp, np.random.default_rng(_SEEDS[name]))
        with (tmp / _CSV).open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", "label", "group"])
            w.writerows(rows)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process built it first: keep theirs
            if not (dest / _CSV).is_file():
                raise
    return str(dest / _CSV)


Row = tuple[str, str, str]  # path (absolute or relative to the CSV), label, group


# ------------------------------------------------------------------------------ built-in samples


def _subset_of_sample(name: str, groups_wanted: int) -> Callable[[Path, np.random.Generator], list[Row]]:
    def build(out: Path, rng: np.random.Generator) -> list[Row]:
        from training import load_table
        from training.sample import materialize_mask_sample, materialize_sample

        materialize = materialize_sample if name == "sample" else materialize_mask_sample
        table = load_table(materialize(metaset_root() / name))
        groups = np.asarray(table.groups)
        chosen = set(rng.permutation(np.unique(groups))[:groups_wanted].tolist())
        return [
            (str(table.file(i)), table.classes[table.labels[i]], str(groups[i]))
            for i in range(len(table))
            if groups[i] in chosen
        ]

    return build


# ------------------------------------------------------------------------------ generated sets


def _canvas(background: np.ndarray) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (SIZE, SIZE), _rgb(background))
    return img, ImageDraw.Draw(img)


def _finish(img: Image.Image, rng: np.random.Generator, noise: float) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(np.rint(values), 0, 255))
    return r, g, b


def _shape(d: ImageDraw.ImageDraw, kind: int, cx: float, cy: float, r: float, colour, width: int) -> None:
    """Shapes 0-5: disc, square, triangle, ring, cross, diamond."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == 0:
        d.ellipse(box, fill=colour)
    elif kind == 1:
        d.rectangle(box, fill=colour)
    elif kind == 2:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif kind == 3:
        d.ellipse(box, outline=colour, width=width)
    elif kind == 4:
        d.line((cx - r, cy, cx + r, cy), fill=colour, width=width)
        d.line((cx, cy - r, cx, cy + r), fill=colour, width=width)
    else:
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)


def _save_all(out: Path, images: list[tuple[Image.Image, str, str]]) -> list[Row]:
    (out / "images").mkdir()
    rows = []
    for i, (img, label, group) in enumerate(images):
        path = f"images/{i:04d}.png"
        img.save(out / path, optimize=False)
        rows.append((path, label, group))
    return rows


def _grouped(n_groups: int, per_group: int, draw: Callable[[dict, int], tuple[Image.Image, str]], rng):
    """``per_group`` images for each of ``n_groups`` groups; ``draw(style, i)`` makes image i of a group."""
    images = []
    for g in range(n_groups):
        style = {
            "background": rng.uniform(40, 220, 3),
            "palette": rng.uniform(0, 255, (3, 3)),
            "scale": rng.uniform(0.8, 1.2),
            "noise": rng.uniform(4, 14),
        }
        for i in range(per_group):
            img, label = draw(style, i)
            images.append((img, label, f"g{g:03d}"))
    return images


def _build_shapes(out: Path, rng: np.random.Generator) -> list[Row]:
    def draw(style: dict, i: int) -> tuple[Image.Image, str]:
        kind = int(rng.integers(6))
        img, d = _canvas(style["background"] + rng.normal(0, 6, 3))
        r = rng.uniform(5, 11) * style["scale"]
        cx, cy = rng.uniform(r + 1, SIZE - r - 1, 2)
        _shape(d, kind, cx, cy, r, _rgb(style["palette"][i % 3]), int(rng.integers(2, 4)))
        return _finish(img, rng, style["noise"]), f"shape{kind}"

    return _save_all(out, _grouped(100, 6, draw, rng))


def _texture(kind: int, rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Textures 0-5: horizontal, vertical, diagonal stripes, checks, dots, smooth noise blobs."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period = rng.uniform(4, 9)
    phase = rng.uniform(0, 2 * math.pi)
    if kind == 0:
        t = np.sin(2 * math.pi * y / period + phase)
    elif kind == 1:
        t = np.sin(2 * math.pi * x / period + phase)
    elif kind == 2:
        t = np.sin(2 * math.pi * (x + y) / (period * 1.41) + phase)
    elif kind == 3:
        t = np.sin(2 * math.pi * x / period + phase) * np.sin(2 * math.pi * y / period + phase)
    elif kind == 4:
        cx, cy = (x % period) - period / 2, (y % period) - period / 2
        t = np.where(cx**2 + cy**2 < (period / 3.5) ** 2, 1.0, -1.0)
    else:
        coarse = rng.normal(0, 1, (5, 5)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
        t = np.tanh(2 * t)
    w = (t[..., None] + 1) / 2
    return w * a + (1 - w) * b


def _build_textures(out: Path, rng: np.random.Generator) -> list[Row]:
    def draw(style: dict, i: int) -> tuple[Image.Image, str]:
        kind = int(rng.integers(6))
        a, b = style["palette"][0], style["palette"][1] * 0.5 + style["background"] * 0.5
        img = Image.fromarray(np.clip(_texture(kind, rng, a, b), 0, 255).astype(np.uint8), "RGB")
        return _finish(img, rng, style["noise"]), f"texture{kind}"

    return _save_all(out, _grouped(100, 6, draw, rng))


def _build_faint(out: Path, rng: np.random.Generator) -> list[Row]:
    def draw(style: dict, i: int) -> tuple[Image.Image, str]:
        kind = int(rng.integers(8))
        grey = float(style["background"].mean())
        img, d = _canvas(np.full(3, grey))
        angle = math.pi * kind / 8 + rng.normal(0, 0.05)
        cx, cy = rng.uniform(11, SIZE - 11, 2)
        dx, dy = 10 * math.cos(angle), 10 * math.sin(angle)
        contrast = rng.uniform(6, 18) * rng.choice([-1, 1])
        d.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=_rgb(np.full(3, grey + contrast)), width=3)
        return _finish(img, rng, 14.0), f"angle{kind * 45 // 2}"

    return _save_all(out, _grouped(120, 6, draw, rng))


def _build_glyphs(out: Path, rng: np.random.Generator) -> list[Row]:
    colours = np.array(
        [(220, 40, 40), (40, 170, 60), (50, 80, 220), (230, 200, 40), (160, 60, 190), (40, 190, 200)]
    )

    def draw(style: dict, i: int) -> tuple[Image.Image, str]:
        kind, colour = int(rng.integers(5)), int(rng.integers(6))
        img, d = _canvas(style["background"] * 0.3 + 150)
        r = rng.uniform(7, 12)
        cx, cy = rng.uniform(r + 1, SIZE - r - 1, 2)
        _shape(d, kind, cx, cy, r, _rgb(colours[colour] + rng.normal(0, 20, 3)), 3)
        return _finish(img, rng, style["noise"]), f"glyph{kind}{colour}"

    return _save_all(out, _grouped(120, 6, draw, rng))


def _build_counts(out: Path, rng: np.random.Generator) -> list[Row]:
    shares = np.array([0.45, 0.27, 0.15, 0.09, 0.04])

    def draw(style: dict, i: int) -> tuple[Image.Image, str]:
        count = int(rng.choice(5, p=shares)) + 1
        img, d = _canvas(style["background"])
        placed: list[np.ndarray] = []
        while len(placed) < count:
            p = rng.uniform(5, SIZE - 5, 2)
            if all(np.linalg.norm(p - q) > 7 for q in placed):
                placed.append(p)
        for p in placed:
            r = rng.uniform(2, 3.5)
            d.ellipse((p[0] - r, p[1] - r, p[0] + r, p[1] + r), fill=_rgb(style["palette"][0]))
        return _finish(img, rng, style["noise"]), f"count{count}"

    return _save_all(out, _grouped(110, 6, draw, rng))


def _build_arrows(out: Path, rng: np.random.Generator) -> list[Row]:
    def draw(style: dict, i: int) -> tuple[Image.Image, str]:
        kind = int(rng.integers(8))
        img, d = _canvas(style["background"])
        for _ in range(3):  # distractor strokes in the group's second colour
            a, b = rng.uniform(0, SIZE, 2), rng.uniform(0, SIZE, 2)
            d.line((*a, *b), fill=_rgb(style["palette"][1]), width=1)
        angle = 2 * math.pi * kind / 8
        c = rng.uniform(12, SIZE - 12, 2)
        u = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-u[1], u[0]])
        tip, tail = c + 9 * u, c - 9 * u
        colour = _rgb(style["palette"][0])
        d.line((*tail, *tip), fill=colour, width=2)
        d.polygon([tuple(tip), tuple(tip - 5 * u + 4 * n), tuple(tip - 5 * u - 4 * n)], fill=colour)
        return _finish(img, rng, style["noise"]), f"dir{kind * 45}"

    return _save_all(out, _grouped(100, 6, draw, rng))


_BUILDERS: dict[str, Callable[[Path, np.random.Generator], list[Row]]] = {
    "digits": _subset_of_sample("sample", 120),
    "mask": _subset_of_sample("sample-mask", 120),
    "shapes": _build_shapes,
    "textures": _build_textures,
    "faint": _build_faint,
    "glyphs": _build_glyphs,
    "counts": _build_counts,
    "arrows": _build_arrows,
}


def main() -> None:
    from training import load_table

    for name in DATASETS:
        table = load_table(dataset_source(name))
        counts = table.class_counts()
        print(
            f"{name:9s} {len(table):5d} images {len(table.classes):3d} classes "
            f"{len(np.unique(table.groups)):4d} groups  class sizes {counts.min()}-{counts.max()}"
            f"{'  (held out)' if name == HELD_OUT else ''}"
        )


if __name__ == "__main__":
    main()
