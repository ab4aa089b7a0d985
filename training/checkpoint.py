"""Checkpoints as plain state: tensors and JSON-like values, written atomically, read with weights_only."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.config import ConfigError

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write to a temp file beside ``path`` and rename, so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else pickled in it is refused.

    Raises:
        ConfigError: the file holds objects other than tensors and plain values.
    """
    # weights_only: a checkpoint from an artifact store must never be able to run code.
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text advises weights_only=False, the one thing never to do with such a file
        found = re.search(r"WeightsUnpickler error: ([^.]*)", str(exc))
        raise ConfigError(
            f"{path}: refused to load a checkpoint holding more than tensors and plain values "
            f"({found.group(1) if found else 'unsupported object'}); foldtune never writes such "
            "files: delete it and retrain"
        ) from None
