"""The worker pool: one process per device, each pulling trials with ``study.optimize`` until the
study-wide budget is met.

The budget counts COMPLETE + PRUNED trials across every worker on every machine. It is enforced
where trials are created: under a storage-wide lock a worker only starts a trial while
finished + running < budget, and it waits (failing stale trials meanwhile) while running trials may
still fail and need a retry. So N workers with ``--n-trials 12`` end with exactly 12 finished trials.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo.errors import UserError
from hpo.samplers import build_pruner, build_sampler
from hpo.study import StudySpec, open_study, storage_url, study_lock
from storage import open_storage

__all__ = ["BudgetReached", "BudgetedStudy", "Slot", "gpu_count", "parse_devices", "run_workers"]

log = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STOP_GRACE_SECONDS = 60  # after SIGTERM, how long children get to hand their trial back
HEARTBEAT_SECONDS = 30  # a killed worker's trial is failed and retried after 2 missed beats + 10 s


def gpu_count() -> int:
    import torch  # lazy: `hpo --help` should not pay for importing torch

    return torch.cuda.device_count()


class BudgetReached(Exception):
    """The study has its budgeted number of finished trials (or the worker's time is up)."""


@dataclass(frozen=True)
class Slot:
    device: str  # what training uses: "cpu" or "cuda" (the one GPU the process sees)
    visible: str  # CUDA_VISIBLE_DEVICES for the process ("" hides every GPU)
    label: str  # shown in status and trial attrs: "cpu#1", "cuda:3"
    threads: int  # torch intra-op threads


def parse_devices(devices: str) -> list[Slot]:
    """``auto`` | ``cpu`` | ``cpu:N`` | ``0,1,...`` -> one Slot per worker process."""
    cores = os.cpu_count() or 1
    gpus = gpu_count()
    if devices == "auto":
        devices = ",".join(str(i) for i in range(gpus)) if gpus else "cpu"
    if devices == "cpu" or devices.startswith("cpu:"):
        count_text = devices.partition(":")[2] or "1"
        if not count_text.isdigit() or int(count_text) < 1:
            raise UserError(f"--devices: '{devices}' needs a positive process count, e.g. cpu:2")
        n = int(count_text)
        return [Slot("cpu", "", f"cpu#{i}", max(1, cores // n)) for i in range(n)]
    ids = [part.strip() for part in devices.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise UserError(f"--devices: '{devices}' is not auto, cpu, cpu:N or a list of GPU indices like 0,1")
    missing = [i for i in ids if int(i) >= gpus]
    if missing:
        raise UserError(
            f"--devices: GPU {', '.join(missing)} does not exist (this machine has {gpus} CUDA device(s)); "
            "use indices below that, auto, or cpu"
        )
    return [Slot("cuda", i, f"cuda:{i}", max(1, cores // len(ids))) for i in ids]


class BudgetedStudy(optuna.Study):
    """A Study whose ``ask`` enforces the study-wide trial budget across processes and machines."""

    def __init__(
        self,
        name: str,
        url: str,
        spec: StudySpec,
        *,
        n_trials: int | None,
        deadline: float | None,
        seed: int,
        poll_seconds: float = 1.0,
        heartbeat: int = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(
            study_name=name,
            storage=open_storage(url, heartbeat_interval=heartbeat),
            sampler=build_sampler(spec.sampler, seed=seed, space=spec.space),
            pruner=build_pruner(
                spec.pruner, folds=spec.base.cv.folds, max_epochs=spec.base.budget.max_epochs
            ),
        )
        self._url, self._n_trials, self._deadline, self._poll = url, n_trials, deadline, poll_seconds

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        while True:
            if self._deadline is not None and time.time() >= self._deadline:
                raise BudgetReached("time is up")
            if self._n_trials is None:
                return super().ask(fixed_distributions)
            with study_lock(self._url, f"budget:{self.study_name}"):
                finished, running = self._count()
                if finished >= self._n_trials:
                    raise BudgetReached(f"{finished} trials finished")
                if finished + running < self._n_trials:
                    return super().ask(fixed_distributions)
            # Budget is covered by running trials, but one of them may still fail and need a retry.
            time.sleep(self._poll)
            with warnings.catch_warnings():  # "experimental" in Optuna since 2.9; the heartbeat relies on it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self)

    def _count(self) -> tuple[int, int]:
        """(finished, running) from ONE read: with two, a trial finishing in between is counted in neither."""
        trials = self._storage.get_all_trials(
            self._study_id, deepcopy=False, states=(*_FINISHED, TrialState.RUNNING)
        )
        finished = sum(t.state in _FINISHED for t in trials)
        return finished, len(trials) - finished


def run_workers(
    name: str,
    *,
    storage: str | None = None,
    devices: str = "auto",
    n_trials: int | None = None,
    timeout: float | None = None,
    data: str | None = None,
    checkpoint_dir: str = ".hpo/checkpoints",
    heartbeat: int = HEARTBEAT_SECONDS,
    on_poll: Callable[[], None] | None = None,
    on_cache: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Run one worker process per device slot until the budget or timeout; returns their exit codes."""
    if n_trials is not None and n_trials < 1:
        raise UserError(f"--n-trials: {n_trials} must be at least 1")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout: {timeout} must be a positive number of seconds")
    if heartbeat < 1:
        raise UserError(f"--heartbeat: {heartbeat} must be at least 1 second")
    slots = parse_devices(devices)
    url = storage_url(storage)
    study, spec = open_study(
        name, url
    )  # fail here, once, if the study is missing; also creates the schema once
    _warm_cache(spec, data, on_cache)
    # Only now, with every input checked, does the worker change the study.
    if n_trials is not None:
        study.set_user_attr("budget", n_trials)  # lets `hpo status` show an ETA
    deadline = time.time() + timeout if timeout else None
    checkpoints = str(Path(checkpoint_dir).resolve())
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(rank, slot, name, url, n_trials, deadline, data, checkpoints, heartbeat),
            name=f"hpo-worker-{slot.label}",
        )
        for rank, slot in enumerate(slots)
    ]
    for proc in procs:
        proc.start()
    stop = _forward_stop_signals(procs)
    try:
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5 / len(procs))
            if on_poll is not None:
                on_poll()
            if stop["at"] is not None and time.time() - stop["at"] > STOP_GRACE_SECONDS:
                for proc in procs:
                    proc.kill()
    finally:
        stop["restore"]()
    return [p.exitcode if p.exitcode is not None else -1 for p in procs]


def _warm_cache(spec: StudySpec, data: str | None, progress: Callable[[int, int], None] | None) -> None:
    """Decode the images once here rather than in every worker process at the same time."""
    from training.batches import load_data
    from training.config import apply_overrides

    cfg = apply_overrides(spec.base, {"data.source": data}, where="--data").data if data else spec.base.data
    load_data(cfg, progress=progress)


def _forward_stop_signals(procs: list[mp.Process]) -> dict:
    """SIGTERM/SIGINT to the pool: pass SIGTERM to every child and give them a bounded grace period."""
    state: dict = {"at": None}

    def handler(signum, frame) -> None:
        if state["at"] is None:
            state["at"] = time.time()
            log.warning("stopping: running trials are handed back for retry")
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    state["restore"] = restore
    return state


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _worker_main(
    rank: int,
    slot: Slot,
    name: str,
    url: str,
    n_trials: int | None,
    deadline: float | None,
    data: str | None,
    checkpoint_dir: str,
    heartbeat: int,
) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.visible  # before torch initializes CUDA
    signal.signal(signal.SIGTERM, _raise_interrupt)
    import torch

    from hpo.objective import Objective
    from hpo.observers import observers_for

    torch.set_num_threads(slot.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    host = socket.gethostname()
    study, spec = open_study(name, url)
    # Distinct, reproducible seeds per process and host, so parallel workers do not propose twins.
    seed = spec.seed * 10_007 + rank + zlib.crc32(host.encode()) % 1000
    budgeted = BudgetedStudy(
        name, url, spec, n_trials=n_trials, deadline=deadline, seed=seed, heartbeat=heartbeat
    )
    objective = Objective(
        spec,
        device=slot.device,
        checkpoint_root=checkpoint_dir,
        data_source=data,
        device_label=slot.label,
        observer=observers_for(study),
    )
    remaining = None if deadline is None else max(1e-3, deadline - time.time())
    try:
        budgeted.optimize(objective, timeout=remaining, catch=(Exception,))
    except BudgetReached as done:
        log.info("worker %s done: %s", slot.label, done)
    except KeyboardInterrupt:
        log.info("worker %s stopped; its trial was handed back for retry", slot.label)
