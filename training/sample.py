"""The built-in sample dataset: sklearn's handwritten digits as 32x32 RGB PNGs with writer groups.

1797 images, 10 classes, ``labels.csv`` with ``path,label,group``. Each synthetic "writer" (group)
owns about six digits of mixed classes and one ink colour, so grouped k-fold matters here as it
does on real data: a model that learns a writer's ink must not be rewarded for it in validation.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from training.config import ConfigError

__all__ = ["SAMPLE_CSV", "materialize_sample"]

logger = logging.getLogger(__name__)

SAMPLE_CSV = "labels.csv"
_SIZE = 32  # output side in pixels
_PER_WRITER = 6  # images per synthetic writer group
_SEED = 0  # fixed: the sample is the same bytes everywhere


def materialize_sample(dest: Path) -> Path:
    """Write the sample into ``dest`` (once) and return its CSV path.

    The dataset is built in a sibling temp dir and renamed into place, so concurrent callers never
    see half a dataset; when another process finishes first, this one's copy is discarded.
    """
    dest = Path(dest).absolute()
    csv_path = dest / SAMPLE_CSV
    if csv_path.is_file():
        return csv_path
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(
            f"{dest} exists but holds no {SAMPLE_CSV}; remove it or set HPO_SAMPLE_DIR to another folder"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the dataset is meant to be shared
        _write_sample(tmp)
        try:
            os.replace(tmp, dest)  # atomic; replaces only a missing or empty dest
            logger.info("wrote sample dataset to %s", dest)
        except OSError:
            if not csv_path.is_file():
                raise
            logger.debug("sample appeared at %s meanwhile; keeping that one", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return csv_path


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
