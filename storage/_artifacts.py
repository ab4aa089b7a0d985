"""Artifact stores: where trial files (curves, confusion matrices) live, apart from the study database."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from optuna.artifacts import FileSystemArtifactStore

from storage._errors import StorageError
from storage._redact import redact

__all__ = ["artifact_dir", "open_artifact_store"]


class _AtomicFileSystemStore(FileSystemArtifactStore):
    """Optuna's file store, but a reader (the dashboard) never sees a half-written file."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self._get_filepath(artifact_id)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := content_body.read(1 << 20):
                    f.write(chunk)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a dashboard run by another user must read it
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def artifact_dir(location: str | Path) -> Path:
    """``DIR`` or ``file:///DIR`` -> an absolute directory path (not created); StorageError otherwise."""
    text = str(location)
    scheme = urlsplit(text).scheme
    if scheme == "file":
        text = urlsplit(text).path
    elif len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise StorageError(
            f"artifact store '{redact(text)}' is not supported; use a directory "
            "(on a disk every worker and the dashboard can reach)"
        )
    if not text:
        raise StorageError("the artifact store location is empty; pass a directory")
    return Path(text).expanduser().resolve()


def open_artifact_store(location: str | Path) -> FileSystemArtifactStore:
    """Open the artifact store at ``location`` (a directory or ``file://`` URL), creating it.

    Writes are atomic (temp file + rename), so a dashboard reading while workers upload never serves
    a truncated file. Raises StorageError for other schemes or a directory that cannot be created.
    """
    path = artifact_dir(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = StorageError(
            f"cannot create the artifact directory {path} ({exc.strerror}); check the path and permissions"
        )
    else:
        return _AtomicFileSystemStore(path)
    raise error
