"""CPU trial processes on one host share its cores, also across separate ``hpo worker`` commands.

Each CPU trial process holds a lock file in a host-wide registry (one per user, in the system temp
directory) for as long as it lives, and before every trial and after every epoch sets torch's
intra-op threads to cores // processes alive. Two ``hpo worker --devices cpu`` started from two
shells thus split the cores instead of each taking all of them: torch's threads spin while they
wait, so oversubscribed processes slow each other down many times over, not merely in proportion.

A registry file whose lock nobody holds belongs to a process that died; it is removed when seen.
Containers that do not share the host's temp directory do not see each other: give each its CPUs
(``--cpus`` / ``cpuset``) instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from pathlib import Path

import optuna

from hpo.tracking import TrialObserver
from training.config import RunConfig
from training.cv import Fold
from training.loop import EpochStats

__all__ = ["CpuShare", "host_cores"]

log = logging.getLogger(__name__)


def host_cores() -> int:
    """Cores this process may run on (its CPU affinity, as taskset and container cpusets set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_registry() -> Path:
    return Path(tempfile.gettempdir()) / f"foldtune-cpu-{os.getuid()}"


class CpuShare(TrialObserver):
    """This process's share of the host's cores; ``apply()`` sets torch's threads to it."""

    def __init__(self, *, registry: Path | None = None, cores: int | None = None) -> None:
        self.registry = registry or default_registry()
        self.cores = cores or host_cores()
        self.registry.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Lock a temp file, then rename it into place: others only ever see locked entries.
        fd, tmp = tempfile.mkstemp(dir=self.registry, prefix=".join-")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd
        self.path = self.registry / f"{os.getpid()}.lock"
        os.replace(tmp, self.path)
        self._warned = False

    def members(self) -> int:
        """CPU trial processes alive on this host, this one included."""
        alive = 0
        for entry in self.registry.glob("*.lock"):
            if entry == self.path:
                alive += 1
                continue
            try:
                fd = os.open(entry, os.O_RDWR)
            except FileNotFoundError:  # its process just left
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive += 1  # its owner holds the lock: alive
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()  # nobody holds it: its owner died
            finally:
                os.close(fd)
        return alive

    def threads(self) -> int:
        return max(1, self.cores // self.members())

    def apply(self) -> int:
        """Set torch's intra-op threads to this process's share; returns it."""
        import torch

        members = self.members()
        threads = max(1, self.cores // members)
        if members > self.cores and not self._warned:
            log.warning(
                "%d CPU trial processes share %d cores on this host: each runs 1 thread and they slow "
                "each other down; run fewer (--devices cpu:%d in all)",
                members,
                self.cores,
                self.cores,
            )
            self._warned = True
        if torch.get_num_threads() != threads:
            log.info("CPU share: %d threads, %d cores, %d CPU trial processes", threads, self.cores, members)
            torch.set_num_threads(threads)
        return threads

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)

    # As an observer: rebalance when a trial starts and after each epoch, as processes come and go.
    def on_trial_start(self, trial: optuna.Trial, config: RunConfig) -> None:
        self.apply()

    def on_epoch(self, trial: optuna.Trial, fold: Fold, stats: EpochStats) -> None:
        self.apply()
