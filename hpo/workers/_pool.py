"""The worker pool: one process per device, each pulling trials with ``study.optimize`` until the
study-wide budget (``hpo.workers._budget``) is met; SIGTERM hands running trials back for retry."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import optuna

from hpo.errors import UserError
from hpo.records import write_study
from hpo.study import StudySpec, open_study, storage_url
from hpo.tracking import finish_study_run
from hpo.workers._budget import HEARTBEAT_SECONDS, BudgetedStudy, BudgetReached
from hpo.workers._devices import Slot, parse_devices

__all__ = ["STOP_GRACE_SECONDS", "run_workers"]

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 60  # after SIGTERM, how long children get to hand their trial back


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
        write_study(study, {"budget": n_trials})  # lets `hpo status` show an ETA
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

    from hpo.workers._objective import Objective
    from hpo.workers._observers import observers_for

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
        finish_study_run(study, budget=n_trials)  # the study's MLflow run ends with its budget
    except KeyboardInterrupt:
        log.info("worker %s stopped; its trial was handed back for retry", slot.label)
