"""Checkpoints as plain state: tensors and JSON-like values, written atomically, read with weights_only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

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
    # weights_only: a checkpoint from an artifact store must never be able to run code.
    return torch.load(Path(path), map_location="cpu", weights_only=True)
