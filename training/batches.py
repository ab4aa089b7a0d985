"""Cached data for a run and whole-batch loading from the decoded-image memmap."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import albumentations as A
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

    def __init__(self, images: np.ndarray, labels: np.ndarray, batches: list[np.ndarray], augment) -> None:
        self.images, self.labels, self.batches, self.augment = images, labels, batches, augment

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.sort(self.batches[i])  # ascending reads are sequential on disk
        x = np.asarray(self.images[idx])
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
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 NHWC images, int64 labels) batches over ``indices``."""
    order = rng.permutation(indices) if shuffle and rng is not None else np.asarray(indices)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if num_workers == 0:
        source = _Batches(images, labels, batches, augment)
        yield from (source[i] for i in range(len(source)))
        return
    yield from DataLoader(
        _Batches(images, labels, batches, augment),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
