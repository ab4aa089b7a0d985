"""Decoded-image cache: every image decoded and resized once, shared by all folds, trials and workers.

The cache is one ``.npy`` file per (data fingerprint, size) holding ``(N, size, size, 3)`` uint8 RGB,
opened read-only as a memmap so every process shares the page cache instead of its own copy.
Building goes to a temp file in the same directory and is renamed into place, so a reader never
sees a partial file and two processes building at once just race to an identical result.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.config import ConfigError
from training.data import ImageTable

__all__ = ["cache_file", "decode_image", "load_images"]

logger = logging.getLogger(__name__)

_WHITE = (255, 255, 255, 255)


def cache_file(table: ImageTable, size: int, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"{table.fingerprint()}-{size}.npy"


def load_images(
    table: ImageTable,
    size: int,
    cache_dir: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """All images of ``table`` as a read-only ``(N, size, size, 3)`` uint8 memmap, built on first use.

    ``progress(done, total)`` is called from the calling thread while building.
    """
    path = cache_file(table, size, cache_dir)
    expected = (len(table), size, size, 3)
    if path.is_file():
        cached = _open(path, expected)
        if cached is not None:
            logger.info("reusing image cache %s", path)
            return cached
        logger.warning("image cache %s is unreadable or has the wrong shape; rebuilding it", path)
    logger.info("building image cache %s (%d images at %dx%d)", path, len(table), size, size)
    _build(table, size, path, progress=progress, threads=threads)
    cached = _open(path, expected)
    if cached is None:  # only if something outside foldtune rewrote the file just now
        raise ConfigError(f"{path}: image cache changed while opening; delete it and run again")
    return cached


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file as ``(size, size, 3)`` uint8 RGB; unreadable files raise ConfigError."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: let libjpeg decode at the smallest scale >= size
            rgb = _to_rgb(ImageOps.exif_transpose(im))
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
            return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: image file is missing; restore it or remove it from the dataset"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ConfigError(
            f"{path}: cannot decode image ({_reason(path, exc)}); fix or remove the file"
        ) from None


def _reason(path: Path, exc: BaseException) -> str:
    """Why a file did not decode, in a few words (the message already names the file)."""
    if isinstance(path, Path) and path.is_file() and path.stat().st_size == 0:
        return "the file is empty"
    text = " ".join(str(exc).split()).replace(f" {str(path)!r}", "")
    return text or type(exc).__name__


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: transparency over white, high bit depths scaled, not clipped."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im)), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """A grey image deeper than 8 bits as 0..255: integers as 16-bit, floats in 0..1 as fractions,
    anything else stretched over its own range."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if values.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        scaled = values / 257.0
    elif values.dtype.kind == "f" and lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros(values.shape)
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def _open(path: Path, expected: tuple[int, ...]) -> np.ndarray | None:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if arr.shape != expected or arr.dtype != np.uint8:
        return None
    return arr


def _build(
    table: ImageTable,
    size: int,
    path: Path,
    *,
    progress: Callable[[int, int], None] | None,
    threads: int | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fill(tmp, table, size, progress=progress, threads=threads)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fill(
    tmp: Path,
    table: ImageTable,
    size: int,
    *,
    progress: Callable[[int, int], None] | None,
    threads: int | None,
) -> None:
    total = len(table)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, size, size, 3))

    def work(i: int) -> None:
        out[i] = decode_image(table.file(i), size)

    # PIL releases the GIL while decoding and resizing, so threads scale across cores.
    pool = ThreadPoolExecutor(max_workers=threads or min(32, (os.cpu_count() or 1) + 4))
    try:
        for done, _ in enumerate(pool.map(work, range(total)), start=1):
            if progress is not None:
                progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a bad file, skip decoding the rest
    out.flush()
