"""The worker pool: one process per device, each pulling trials with ``study.optimize`` until the
study-wide budget (``hpo.workers._budget``) is met; SIGTERM hands running trials back for retry.

Every worker process joins the study with a number drawn under the storage lock, so each samples
from its own seed (two processes on one host, or containers sharing a hostname, never propose twin
trials) and is named ``host:pid/device`` in trial attrs and ``hpo status``. A worker whose trials
keep failing stops with the reason (``hpo.workers._failures``); CPU worker processes on one host
split its cores (``hpo.workers._cpu_share``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import UserError
from hpo.records import study_record, trial_record, write_study
from hpo.study import StudySpec, artifact_location, open_study, storage_url, study_lock
from hpo.tracking import finish_study_run
from hpo.workers._budget import HEARTBEAT_SECONDS, BudgetedStudy, BudgetReached
from hpo.workers._devices import Slot, parse_devices
from hpo.workers._failures import (
    DEFAULT_MAX_FAILURES,
    FailureLog,
    FailureStreak,
    WorkerStopped,
    quiet_optuna_failures,
)
from hpo.workers._stop import interrupt_on_sigterm
from storage import normalize_url, redact

__all__ = ["STOP_GRACE_SECONDS", "PoolResult", "PullArgs", "pull_trials", "run_workers"]

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 60  # after SIGTERM, how long children get to hand their trial back
_STOPPED_EXIT = 3  # a worker process that stopped because its trials kept failing


@dataclass(frozen=True)
class PullArgs:
    """What every worker process of a pool is told."""

    name: str  # the study
    url: str  # its storage
    n_trials: int | None  # the study-wide budget of finished trials
    deadline: float | None  # time.time() after which no trial starts
    data: str | None  # where the study's data lives on this machine
    checkpoint_dir: str
    heartbeat: int = HEARTBEAT_SECONDS
    max_failures: int = DEFAULT_MAX_FAILURES
    started: float | None = None  # when the pool started: failures before it do not count


@dataclass(frozen=True)
class PoolResult:
    exit_codes: list[int]  # one per worker process
    stopped: list[str] = field(default_factory=list)  # why workers stopped on failures, one line each
    interrupted_by: int | None = None  # the signal (SIGTERM, SIGINT) that stopped the pool, if any

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.exit_codes)


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
    max_failures: int = DEFAULT_MAX_FAILURES,
    on_poll: Callable[[], None] | None = None,
    on_cache: Callable[[int, int], None] | None = None,
    on_trial: Callable[[str], None] | None = None,
    prepare: Callable[[], None] | None = None,
) -> PoolResult:
    """Run one worker process per device slot until the budget or timeout.

    ``on_poll()`` is called about twice a second, ``on_cache(done, total)`` while images are decoded,
    ``on_trial(line)`` with one line for each trial a worker process of this pool ends. ``prepare()``
    runs while the trial processes start, before they get their orders: set-up the trials need (such
    as the study's MLflow tracking) then costs no time of its own.
    """
    if n_trials is not None and n_trials < 1:
        raise UserError(f"--n-trials: {n_trials} must be at least 1")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout: {timeout} must be a positive number of seconds")
    if heartbeat < 1:
        raise UserError(f"--heartbeat: {heartbeat} must be at least 1 second")
    if max_failures < 0:
        raise UserError(f"--max-failures: {max_failures} must be 0 (never stop) or more")
    slots = parse_devices(devices)
    ctx = mp.get_context("spawn")
    events = ctx.SimpleQueue()  # children -> this process: first tracebacks of failures, stop reasons
    # The trial processes start now and import the training stack (the longest part of reaching the first
    # trial) while this process checks the inputs; they touch nothing before their orders come.
    procs, orders = _start_trial_processes(ctx, slots, events)
    try:
        if prepare is not None:
            prepare()
        url = storage_url(storage)
        study, spec = open_study(name, url)  # fail here, once, if the study is missing; creates the schema
        checkpoints = _writable(Path(checkpoint_dir).resolve(), "--checkpoint-dir", "a writable directory")
        if (plots := artifact_location(study)) is not None:
            _writable(
                Path(plots), f"study '{name}' keeps its trial plots in", "make it writable or mount it here"
            )
        _warm_cache(spec, data, on_cache)
        offline = _fetch_weights(study)
    except BaseException:  # refused inputs, or Ctrl-C: the trial processes have not touched anything yet
        for proc in procs:
            proc.kill()
            proc.join()
        raise
    # Only now, with every input checked, does the worker change the study.
    if n_trials is not None:
        write_study(study, {"budget": n_trials})  # lets `hpo status` show an ETA
    started = time.time()
    deadline = started + timeout if timeout else None
    args = PullArgs(name, url, n_trials, deadline, data, str(checkpoints), heartbeat, max_failures, started)
    _send(orders, (args, offline))
    stop = _forward_stop_signals(procs)
    relay = _Relay(events, on_trial)
    try:
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5 / len(procs))
            relay.drain()
            if on_poll is not None:
                on_poll()
            if stop["at"] is not None and time.time() - stop["at"] > STOP_GRACE_SECONDS:
                for proc in procs:
                    proc.kill()
    finally:
        stop["restore"]()
    relay.drain()
    codes = [p.exitcode if p.exitcode is not None else -1 for p in procs]
    return PoolResult(codes, relay.stopped, interrupted_by=stop["signal"])


def _start_trial_processes(ctx, slots: list[Slot], events) -> tuple[list[mp.Process], list]:
    """One started process per slot, each with the sending end of a pipe for its orders."""
    level = logging.getLogger("hpo").getEffectiveLevel()
    procs, orders = [], []
    for slot in slots:
        receive, send = ctx.Pipe(duplex=False)
        procs.append(
            ctx.Process(
                target=_worker_main,
                args=(slot, receive),
                kwargs={"events": events, "log_level": level},
                name=f"hpo-worker-{slot.label}",
            )
        )
        orders.append(send)
    for proc in procs:
        proc.start()
    return procs, orders


def _send(orders: list, order: tuple[PullArgs, bool]) -> None:
    """``(args, offline)`` to each trial process: what to pull, and whether every weight is cached."""
    for conn in orders:
        with contextlib.suppress(OSError):  # a child that already died is reported by its exit code
            conn.send(order)
        conn.close()


class _Relay:
    """What the children report: each kind of failure's traceback shown once for the whole pool."""

    def __init__(self, events, on_trial: Callable[[str], None] | None) -> None:
        self.events = events
        self.on_trial = on_trial
        self.shown: set[str] = set()
        self.stopped: list[str] = []

    def drain(self) -> None:
        while not self.events.empty():
            kind, *payload = self.events.get()
            if kind == "stopped":
                self.stopped.append(payload[0])
            elif kind == "trial" and self.on_trial is not None:
                self.on_trial(payload[0])
            elif kind == "failure" and payload[0] not in self.shown:
                self.shown.add(payload[0])
                log.warning("%s", payload[1])


def _writable(directory: Path, what: str, fix: str) -> Path:
    """Fail before the first trial, not in every trial, when ``directory`` cannot be written; creates
    nothing (a refused run leaves nothing behind)."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"no permission to write in {existing}"
    else:
        return directory
    raise UserError(f"{what} {directory}: cannot write there ({reason}); {fix}")


def _warm_cache(spec: StudySpec, data: str | None, progress: Callable[[int, int], None] | None) -> None:
    """Decode the images once here rather than in every worker process at the same time.

    Only PIL and numpy: the pool process of a CPU worker never imports torch.
    """
    from training.cache import load_images
    from training.config import apply_overrides
    from training.data import load_table

    cfg = apply_overrides(spec.base, {"data.source": data}, where="--data").data if data else spec.base.data
    load_images(load_table(cfg.source, cfg.format), cfg.image_size, cfg.cache_dir, progress=progress)


def _fetch_weights(study: optuna.Study) -> bool:
    """Put the pretrained weights the study's trials can load in the cache, downloading any missing
    here once rather than in every trial process; True when the trial processes can run offline.

    Only huggingface_hub: the study lists the files, so this process does not import timm or torch.
    """
    listed = study_record(study).get("weights")
    if listed is None:  # a study made before foldtune listed them: trials fetch what they need
        return False
    if not listed:  # nothing to fetch: huggingface_hub stays unimported (a second or so on a small machine)
        return True
    from training.weights import Weights, fetch

    for raw in listed:
        fetch(Weights.from_dict(raw), fix=f"hpo weights fetch {raw['model']}")
    return True


def _forward_stop_signals(procs: list[mp.Process]) -> dict:
    """SIGTERM/SIGINT to the pool: pass SIGTERM to every child once and give them a bounded grace period."""
    state: dict = {"at": None, "signal": None}

    def handler(signum, frame) -> None:
        if state["at"] is not None:
            return  # a child hands its trial back once; a second signal would cut that short
        state["at"], state["signal"] = time.time(), signum
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


def _join(study: optuna.Study, url: str) -> int:
    """This worker's number in the study's fleet, drawn under the storage lock (0, 1, 2, ...)."""
    if normalize_url(url).startswith("grpc://"):  # a proxy offers no lock: a random number is as distinct
        return int.from_bytes(os.urandom(4), "big")
    with study_lock(url, f"workers:{study.study_name}"):
        number = int(study_record(study).get("workers", 0))
        write_study(study, {"workers": number + 1})
    return number


def _worker_main(slot: Slot, orders, *, events, log_level: int = logging.WARNING) -> None:
    """A spawned worker process: set it up and import what trials need, then wait for the pool's orders
    and pull trials; exit 3 when its trials keep failing."""
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.visible  # before torch initializes CUDA
    interrupt_on_sigterm()
    _child_logging(log_level)
    try:
        _import_trial_stack()
        order = orders.recv()
    except (EOFError, KeyboardInterrupt):  # the pool went away, or Ctrl-C, before any trial
        return
    args, offline = order
    if offline:  # every weight is cached: nothing in this process asks the Hub
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        pull_trials(
            slot,
            args,
            failures=FailureLog(emit=lambda key, text: events.put(("failure", key, text))),
            on_trial=lambda line: events.put(("trial", line)),
        )
    except WorkerStopped as exc:
        events.put(("stopped", str(exc)))
        sys.exit(_STOPPED_EXIT)


def _import_trial_stack() -> None:
    """torch, timm, albumentations, scikit-learn, through the modules that use them."""
    import torch  # noqa: F401

    import hpo.workers._objective  # noqa: F401


def pull_trials(
    slot: Slot,
    args: PullArgs,
    *,
    failures: FailureLog | None = None,
    on_trial: Callable[[str], None] | None = None,
) -> None:
    """What one worker process does: join the study, then run trials until the budget or the deadline.

    Raises:
        WorkerStopped: trials keep failing; the message says which and why.
    """
    import torch

    from hpo.tracking import ObserverGroup
    from hpo.workers._cpu_share import CpuShare
    from hpo.workers._objective import Objective
    from hpo.workers._observers import observers_for
    from hpo.workers._promotion import Promotion

    share = None
    if slot.threads is not None:
        torch.set_num_threads(slot.threads)
    else:  # CPU: the host's cores are split among every CPU trial process on it
        share = CpuShare()
        share.apply()
    try:
        study, spec = open_study(args.name, args.url)
        number = _join(study, args.url)
        worker = f"{socket.gethostname()}:{os.getpid()}/{slot.label}"
        log.info("worker %s joined study %s as worker %d", worker, args.name, number)
        promotion = (
            Promotion(args.url, checkpoint_root=args.checkpoint_dir, keep=spec.keep_paused)
            if spec.pruner == "asha"
            else None
        )
        budgeted = BudgetedStudy(
            args.name,
            args.url,
            spec,
            n_trials=args.n_trials,
            deadline=args.deadline,
            seed=spec.seed * 10_007 + number,  # its own seed: parallel workers never propose twin trials
            heartbeat=args.heartbeat,
            max_failures=args.max_failures,
            since=dt.datetime.fromtimestamp(args.started) if args.started is not None else None,
            promotion=promotion,
        )
        observers = observers_for(study)
        objective = Objective(
            spec,
            device=slot.device,
            checkpoint_root=args.checkpoint_dir,
            data_source=args.data,
            device_label=slot.label,
            worker=worker,
            observer=ObserverGroup([share, *observers.observers]) if share is not None else observers,
            failure_log=failures,
            promotion=promotion,
        )
        remaining = None if args.deadline is None else max(1e-3, args.deadline - time.time())
        try:
            budgeted.optimize(
                objective,
                timeout=remaining,
                catch=(Exception,),
                callbacks=[
                    FailureStreak(args.max_failures),
                    *([_TrialLine(worker, on_trial)] if on_trial else []),
                ],
            )
        except BudgetReached as done:
            log.info("worker %s done: %s", worker, done)
            finish_study_run(study, budget=args.n_trials)  # the study's MLflow run ends with its budget
        except KeyboardInterrupt:
            log.info("worker %s stopped; its trial was handed back for retry", worker)
        except WorkerStopped as exc:
            raise WorkerStopped(f"worker {worker} stopped: {exc}") from None
    finally:
        if share is not None:
            share.close()


class _TrialLine:
    """One line per trial this process ends, as Optuna logs them: state, value, best so far, time, worker."""

    def __init__(self, worker: str, emit: Callable[[str], None]) -> None:
        self.worker, self.emit = worker, emit

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        record = trial_record(trial)
        took = f"{trial.duration.total_seconds():.0f} s" if trial.duration else "?"
        if trial.state == TrialState.COMPLETE:
            try:
                best = study.best_trial  # the best feasible one: Optuna honours the trials' constraints
                so_far = f"best {best.value:.4f} (trial {best.number})"
            except ValueError:
                so_far = "no trial within the study's limits yet"
            line = (
                f"trial {trial.number} complete: macro-F1 {trial.value:.4f}, {so_far}, "
                f"{took} on {self.worker}"
            )
        elif trial.state == TrialState.PRUNED:
            line = (
                f"trial {trial.number} pruned after {took} on {self.worker}: {record.get('prune_reason', '')}"
            )
        else:
            why = record.get("fail_reason", "handed back for retry")
            line = f"trial {trial.number} failed after {took} on {self.worker}: {why}"
        self.emit(redact(line))


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # tracebacks may quote URLs with passwords


def _child_logging(level: int) -> None:
    """A spawned child starts with no logging: plain lines on stderr at the CLI's level, passwords masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Redacting("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("hpo").setLevel(level)
    optuna.logging.disable_default_handler()  # optuna's records reach the handler above instead
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(max(level, logging.WARNING))
    quiet_optuna_failures()
