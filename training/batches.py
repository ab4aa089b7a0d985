"""Cached data for a run and whole-batch loading from the decoded-image memmap."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from training.cache import load_images
from training.config import DataConfig
from training.data import ImageTable, load_table

__all__ = ["LoadedData", "iterate_batches", "load_data"]


@dataclass(frozen=True)
class LoadedData:
    table: ImageTable
    images: np.ndarray  # (N, size, size, 3) uint8 memmap shared by every fold, trial and process

    @property
    def n_classes(self) -> int:
        return len(self.table.classes)


# Folds and trials in one process share the opened data instead of re-indexing the files.
_OPENED: dict[tuple[str, str, int, str], LoadedData] = {}


def load_data(cfg: DataConfig, progress: Callable[[int, int], None] | None = None) -> LoadedData:
    """Index the data and open its decoded cache (built once per fingerprint and size)."""
    key = (cfg.source, cfg.format, cfg.image_size, cfg.cache_dir)
    if key not in _OPENED:
        table = load_table(cfg.source, cfg.format)
        images = load_images(table, cfg.image_size, cfg.cache_dir, progress=progress)
        if len(_OPENED) >= 4:
            _OPENED.clear()
        _OPENED[key] = LoadedData(table, images)
    return _OPENED[key]


class _Batches(Dataset):
    """Item i is a whole batch: one fancy-indexed read of the memmap instead of batch_size reads."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batches: list[np.ndarray],
        augment: A.Compose | None,
        flip_seed: int | None,
    ) -> None:
        self.images, self.labels, self.batches = images, labels, batches
        self.augment, self.flip_seed = augment, flip_seed

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.sort(self.batches[i])  # ascending reads are sequential on disk
        x = np.asarray(self.images[idx])  # fancy indexing copies: safe to modify
        if self.flip_seed is not None:
            # Mirror a random half of the batch. OpenCV's flip copies rows with SIMD: 15x faster than
            # numpy's reversed-stride copy (0.5 vs 7.8 ms for 32 images of 224 px, one core).
            flip = np.random.default_rng([self.flip_seed, i]).random(len(x)) < 0.5
            for j in np.flatnonzero(flip):
                x[j] = cv2.flip(x[j], 1)
        if self.augment is not None:
            x = np.stack([self.augment(image=img)["image"] for img in x])
        return torch.from_numpy(x), torch.from_numpy(self.labels[idx])

    def __getstate__(self) -> dict:
        # Worker processes reopen the memmap by name instead of receiving a pickled copy of it.
        state = self.__dict__.copy()
        state["images"] = str(self.images.filename)  # type: ignore[attr-defined]
        return state

    def __setstate__(self, state: dict) -> None:
        state["images"] = np.load(state["images"], mmap_mode="r")
        self.__dict__.update(state)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    augment: A.Compose | None = None,
    hflip: bool = False,
    num_workers: int = 0,
    prefetch: bool = False,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 NHWC images, int64 labels) batches over ``indices``.

    ``prefetch`` (without worker processes) prepares the next batches in a background thread while
    the device computes; with ``pin_memory`` too, the host-to-device copy overlaps compute (CUDA).
    """
    rng = rng or np.random.default_rng(0)
    order = rng.permutation(indices) if shuffle else np.asarray(indices)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle and batch_size > 2 and len(batches) > 1 and len(batches[-1]) == 1:
        # BatchNorm cannot train on a batch of one (a fold of 897 images at batch 32 would crash the
        # trial): the last batch takes one image from the one before, keeping the number of batches.
        batches[-2:] = [batches[-2][:-1], np.concatenate([batches[-2][-1:], batches[-1]])]
    source = _Batches(images, labels, batches, augment, int(rng.integers(2**31)) if hflip else None)
    if num_workers > 0:
        yield from DataLoader(source, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
    elif prefetch:
        yield from _prefetch(source, depth=2, pin_memory=pin_memory)
    else:
        yield from (source[i] for i in range(len(source)))


def _prefetch(source: _Batches, depth: int, pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Items of ``source`` produced (and pinned) by a thread; numpy copies and pinning release the GIL."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for i in range(len(source)):
                x, y = source[i]
                put((x.pin_memory(), y.pin_memory()) if pin_memory else (x, y))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
        put(None)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer left early: let the producer finish instead of blocking forever
