from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.datasets import make_csv_dataset, make_mask_tree, write_image
from tests.racing import race
from training.cache import cache_file, decode_image, load_images
from training.config import ConfigError
from training.data import ImageTable, load_table


@pytest.fixture
def mask_table(tmp_path: Path) -> ImageTable:
    return load_table(make_mask_tree(tmp_path / "mask", n_people=3, with_eval=False))


# ---------------------------------------------------------------------------------------------
# Cache file
# ---------------------------------------------------------------------------------------------


def test_shape_dtype_read_only_and_content(mask_table: ImageTable, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    images = load_images(mask_table, 24, tmp_path / "cache", progress=lambda d, t: seen.append((d, t)))
    assert images.shape == (21, 24, 24, 3) and images.dtype == np.uint8
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert cache_file(mask_table, 24, tmp_path / "cache") == tmp_path / "cache" / (
        f"{mask_table.fingerprint()}-24.npy"
    )
    for i in (0, 7, 20):  # jpg and png members, decoded exactly as decode_image does
        np.testing.assert_array_equal(images[i], decode_image(mask_table.file(i), 24))
    assert seen[-1] == (21, 21) and [d for d, _ in seen] == list(range(1, 22))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{mask_table.fingerprint()}-24.npy"]


def test_second_load_decodes_nothing(
    mask_table: ImageTable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = np.array(load_images(mask_table, 16, tmp_path / "cache"))
    # same sizes, so the same fingerprint, but nothing decodable is left: only the cache can answer
    for i in range(len(mask_table)):
        path = mask_table.file(i)
        path.write_bytes(b"\0" * path.stat().st_size)
    with caplog.at_level(logging.INFO, logger="training.cache"):
        second = load_images(mask_table, 16, tmp_path / "cache", progress=lambda d, t: pytest.fail("decoded"))
    np.testing.assert_array_equal(second, first)
    assert "reusing image cache" in caplog.text
    with pytest.raises(ConfigError):  # a different size does need the (now broken) sources
        load_images(mask_table, 20, tmp_path / "cache")


def test_sizes_are_separate_files(mask_table: ImageTable, tmp_path: Path) -> None:
    small = load_images(mask_table, 8, tmp_path / "cache", threads=1)
    large = load_images(mask_table, 32, tmp_path / "cache", threads=3)
    assert small.shape[1:3] == (8, 8) and large.shape[1:3] == (32, 32)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_wrong_shape_cache_is_rebuilt(mask_table: ImageTable, tmp_path: Path) -> None:
    path = cache_file(mask_table, 16, tmp_path)
    np.save(path, np.zeros((3, 16, 16, 3), dtype=np.uint8))
    images = load_images(mask_table, 16, tmp_path)
    assert images.shape == (21, 16, 16, 3) and images.any()


def _build_digest(table: ImageTable, cache_dir: Path) -> tuple[str, int]:
    """Digest of the loaded array and how many images this process decoded itself."""
    decoded = [0]
    images = load_images(table, 32, cache_dir, progress=lambda done, total: decoded.__setitem__(0, done))
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(), decoded[0]


def test_two_processes_building_at_once(tmp_path: Path) -> None:
    table = load_table(make_csv_dataset(tmp_path / "data", per_class=40, size=(96, 72)))
    results = race(_build_digest, table, tmp_path / "cache")
    reference = hashlib.sha256(
        np.stack([decode_image(table.file(i), 32) for i in range(len(table))]).tobytes()
    ).hexdigest()
    assert [digest for digest, _ in results] == [reference, reference]
    assert max(decoded for _, decoded in results) == 120  # (normally both build; the barrier can't force it)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{table.fingerprint()}-32.npy"]


def test_bad_image_fails_the_build_and_leaves_no_file(tmp_path: Path) -> None:
    table = load_table(make_csv_dataset(tmp_path / "data", per_class=3))
    table.file(4).write_bytes(b"")
    with pytest.raises(ConfigError, match="fix or remove the file"):
        load_images(table, 16, tmp_path / "cache", threads=2)
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _decode_saved(tmp_path: Path, im: Image.Image, name: str, size: int = 4, **save: Any) -> np.ndarray:
    path = tmp_path / name
    im.save(path, **save)
    return decode_image(path, size)


def test_rgba_la_and_palette_transparency_composite_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert (_decode_saved(tmp_path, rgba, "clear.png") == 255).all()
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))  # half-transparent black -> mid grey
    assert np.abs(_decode_saved(tmp_path, half, "half.png").astype(int) - 127).max() <= 1

    la = Image.new("LA", (4, 4), (0, 0))
    assert (_decode_saved(tmp_path, la, "la.png") == 255).all()

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    opaque = _decode_saved(tmp_path, palette, "p.png")
    assert opaque.reshape(-1, 3).tolist() == [[10, 200, 30]] * 16
    assert (_decode_saved(tmp_path, palette, "p_t.png", transparency=1) == 255).all()


def test_cmyk_grey_and_bilevel_become_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    for name in ("cmyk.jpg", "cmyk.tif"):
        out = _decode_saved(tmp_path, cmyk, name)
        assert out.shape == (4, 4, 3)
        assert out[..., 0].min() > 230 and out[..., 1:].max() < 30, name

    grey = _decode_saved(tmp_path, Image.new("L", (4, 4), 77), "grey.png")
    assert (grey == 77).all()
    bilevel = _decode_saved(tmp_path, Image.new("1", (4, 4), 1), "one.bmp")
    assert (bilevel == 255).all()


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    for name in ("deep.png", "deep.tif"):
        out = _decode_saved(tmp_path, Image.fromarray(values), name, size=2)
        assert out[..., 0].tolist() == [[0, 128], [255, 4]], name
        assert (out[..., 0] == out[..., 2]).all()
    wide = np.array([[0, 1 << 20], [1 << 21, 3 << 20]], dtype=np.int32)  # 32-bit: stretched over its range
    out = _decode_saved(tmp_path, Image.fromarray(wide, "I"), "wide.tif", size=2)
    assert out[..., 0].tolist() == [[0, 85], [170, 255]]


def test_resize_is_square_and_jpeg_draft_keeps_colour(tmp_path: Path) -> None:
    big = Image.new("RGB", (640, 480), (20, 120, 220))
    out = _decode_saved(tmp_path, big, "big.jpg", size=32, quality=95)
    assert out.shape == (32, 32, 3)
    assert np.abs(out.astype(int) - [20, 120, 220]).max() <= 4
    small = write_image(tmp_path / "small.png", (8, 6))
    assert decode_image(small, 40).shape == (40, 40, 3)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 20, 20))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    out = _decode_saved(tmp_path, im, "rotated.jpg", size=20, exif=exif, quality=95)
    assert out[:5].mean() < 60 and out[-5:].mean() > 200  # black ends up on top


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.png", lambda: b""),
        ("garbage.jpg", lambda: b"this is not an image at all" * 10),
        ("truncated.png", lambda: _png_bytes()[: len(_png_bytes()) // 2]),
        ("truncated.jpg", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2]),
        ("header_only.png", lambda: _png_bytes()[:40]),
    ],
)
def test_corrupt_files_raise_config_error(tmp_path: Path, name: str, content: Callable[[], bytes]) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(ConfigError) as excinfo:
        decode_image(path, 16)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "fix or remove the file" in message
    assert "Traceback" not in message


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.png: image file is missing"):
        decode_image(tmp_path / "missing.png", 16)
