"""Decoding every image of a dataset as training would, keeping what the duplicate checks need."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.config import ConfigError
from training.layouts import Entry, Problem, examples, plural

__all__ = ["CONVERTED_MODES", "THUMB_SIZE", "ImageInfo", "inspect_all", "mode_findings"]

THUMB_SIZE = 16  # side of the RGB thumbnail near duplicates are compared on (via the training resize)

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


@dataclass
class ImageInfo:
    """What decoding one image told us; ``problem`` set when it cannot be used."""

    problem: Problem | None = None
    mode: str = ""
    frames: int = 1
    pixel_hash: bytes | None = None
    thumb: np.ndarray | None = None  # (THUMB_SIZE, THUMB_SIZE, 3) uint8 RGB


def inspect_all(
    root: Path,
    entries: list[Entry],
    *,
    progress: Callable[[int, int], None] | None,
    threads: int | None,
) -> list[ImageInfo]:
    total = len(entries)
    if progress is not None:
        progress(0, total)
    # PIL releases the GIL while decoding, so threads scale across cores (as in training.cache).
    with ThreadPoolExecutor(max_workers=threads or min(16, (os.cpu_count() or 1) + 4)) as pool:
        out = []
        for done, image in enumerate(pool.map(lambda e: _inspect(root / e.path, e.where), entries), start=1):
            out.append(image)
            if progress is not None:
                progress(done, total)
    return out


def _inspect(file: Path, where: str) -> ImageInfo:
    from training.cache import decode_image

    def bad(kind: str, message: str) -> ImageInfo:
        return ImageInfo(problem=Problem(kind, where, message))

    try:
        if file.stat().st_size == 0:
            return bad("empty_file", "zero-byte file; restore the image or remove it")
        with Image.open(file) as im:
            im.verify()  # container structure and checksums
        with Image.open(file) as im:
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
        thumb = decode_image(file, THUMB_SIZE)  # the training pipeline itself
    except ConfigError as exc:
        return bad("unsupported_mode", f"mode {mode}: {exc}")
    return ImageInfo(mode=mode, frames=frames, pixel_hash=pixel_hash, thumb=thumb)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def mode_findings(entries: list[Entry], images: list[ImageInfo]) -> list[Problem]:
    """One warning per converted mode (a dataset of 10k grey images is one fact, not 10k)."""
    by_mode: dict[str, list[str]] = defaultdict(list)
    multi: list[str] = []
    for entry, image in zip(entries, images, strict=True):
        if image.problem is None and image.mode != "RGB":
            by_mode[image.mode].append(entry.path)
        if image.problem is None and image.frames > 1:
            multi.append(entry.path)
    out = [
        Problem(
            "converted_mode",
            plural(len(files), "image"),
            f"mode {mode}, {CONVERTED_MODES[mode]}: {examples(files)}; fine if intended, "
            "else convert them to RGB yourself",
            "warning",
        )
        for mode, files in sorted(by_mode.items())
    ]
    if multi:
        out.append(
            Problem(
                "multi_frame",
                plural(len(multi), "image"),
                f"several frames/pages, only the first is used: {examples(multi)}",
                "warning",
            )
        )
    return out
