"""The processes behind an `hpo worker` pool, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["alive", "worker_processes"]


def worker_processes(pool_pid: int) -> list[int]:
    """The spawned trial processes of the pool ``pool_pid`` (not multiprocessing's resource tracker)."""
    return [pid for pid in _children(pool_pid) if b"spawn_main" in _read(pid, "cmdline")]


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (exited, not yet reaped) counts as stopped."""
    stat = _read(pid, "stat")
    return bool(stat) and stat.rpartition(b")")[2].split()[0] != b"Z"


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _read(int(entry.name), "stat").rpartition(b")")[2].split()
            if len(fields) > 1 and int(fields[1]) == parent:  # fields: state, ppid, ...
                found.append(int(entry.name))
    return found


def _read(pid: int, name: str) -> bytes:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except OSError:  # gone meanwhile
        return b""
