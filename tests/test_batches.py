"""Whole-batch loading: every index once, labels aligned, batched flips, prefetch thread, workers."""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from training.batches import iterate_batches
from training.config import AugmentConfig
from training.transforms import Normalizer, build_augment, uses_hflip


@pytest.fixture
def images(tmp_path) -> np.ndarray:
    # Image i is constant i (mod 256) on the left half and 255 on the right half: a flip shows.
    data = np.full((50, 8, 8, 3), 255, dtype=np.uint8)
    data[:, :, :4] = (np.arange(50) % 256).reshape(-1, 1, 1, 1)
    path = tmp_path / "images.npy"
    np.save(path, data)
    return np.load(path, mmap_mode="r")


def collect(batches) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


@pytest.mark.parametrize("mode", [{}, {"prefetch": True}, {"num_workers": 1}])
def test_every_index_once_with_its_label(images, mode) -> None:
    labels = np.arange(50, dtype=np.int64) * 10
    idx = np.arange(3, 43)
    rng = np.random.default_rng(0)
    x, y = collect(iterate_batches(images, labels, idx, batch_size=8, shuffle=True, rng=rng, **mode))
    assert sorted(y.tolist()) == (idx * 10).tolist()
    assert np.array_equal(x[:, 0, 0, 0], (y // 10) % 256)  # each image travels with its own label


def test_training_never_yields_a_batch_of_one(images) -> None:
    # 33 images at batch 8: 4 x 8 + 1, and BatchNorm cannot train on the lone one.
    labels = np.arange(50, dtype=np.int64)
    idx = np.arange(33)
    rng = np.random.default_rng(0)
    batches = list(iterate_batches(images, labels, idx, batch_size=8, shuffle=True, rng=rng))
    assert [len(y) for _, y in batches] == [8, 8, 8, 7, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == idx.tolist()
    evaluation = iterate_batches(images, labels, idx, batch_size=8, shuffle=False)
    assert [len(y) for _, y in evaluation] == [8, 8, 8, 8, 1]  # eval mode takes any batch size


def test_batched_flip_mirrors_about_half_and_is_seeded(images) -> None:
    labels = np.zeros(50, dtype=np.int64)

    def flipped(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x, _ = collect(
            iterate_batches(images, labels, np.arange(50), batch_size=10, shuffle=False, rng=rng, hflip=True)
        )
        return x[:, 0, 0, 0] == 255  # left column white means mirrored

    first = flipped(1)
    assert 10 <= first.sum() <= 40
    assert np.array_equal(first, flipped(1))


def test_flip_only_with_an_augment_preset() -> None:
    assert uses_hflip(AugmentConfig(preset="light", hflip=True))
    assert not uses_hflip(AugmentConfig(preset="none", hflip=True))
    assert not uses_hflip(AugmentConfig(preset="heavy", hflip=False))
    assert build_augment(AugmentConfig(preset="none"), 32) is None
    for preset in ("light", "medium", "heavy"):
        out = build_augment(AugmentConfig(preset=preset, strength=1.0), 32)(
            image=np.zeros((32, 32, 3), np.uint8)
        )
        assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.uint8


def test_normalizer_matches_the_textbook_formula() -> None:
    batch = torch.randint(0, 256, (4, 6, 6, 3), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = Normalizer(mean, std, torch.device("cpu"))(batch)
    expected = (batch.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    assert out.shape == (4, 3, 6, 6) and out.is_contiguous()
    assert torch.allclose(out, expected, atol=1e-5)


# In a fresh interpreter: a long-lived test process may have mapped memory right above its heap, and
# then glibc serves even heap-sized blocks with mmap, whatever its thresholds say.
_PAGE_FAULTS = """
import resource, torch
from training.transforms import Normalizer
normalizer = Normalizer((0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
batch = torch.zeros((64, 224, 224, 3), dtype=torch.uint8)  # 38.5 MB as float: above glibc's 32 MB cap
normalizer(batch)
faults = []
for _ in range(5):  # the fewest: the host may reclaim idle pages now and then (e.g. DAMON), a fresh mmap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # faults in every batch
    normalizer(batch)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc thresholds are glibc's")
def test_cpu_batches_reuse_freed_memory_instead_of_faulting_in_fresh_pages() -> None:
    out = subprocess.run([sys.executable, "-c", _PAGE_FAULTS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    faults = float(out.stdout.split()[-1])
    assert faults < 1000, f"{faults:.0f} page faults per batch; a fresh mmap of the float batch is ~9,400"
