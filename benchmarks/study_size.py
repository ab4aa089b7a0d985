"""Study size: how the cost of one trial's storage and sampling work grows with the study's history.

For every storage (sqlite, postgresql, mariadb, journal) x history size (100, 1,000, 10,000 finished
trials) x variant, a fresh storage gets one study pre-filled with the same random history of
storage_overhead's space (3 params: a categorical, a log float, a conditional float), written in
bulk: batched multi-row INSERTs into Optuna's own tables for the SQL databases, one append of the
journal's own records for the journal file. Then one new process, like a worker joining a
running study, opens the study and runs T more trials of a cheap objective with foldtune's TPE
(multivariate, group, constant liar), which reads the whole history on every trial:

- plain: ``optuna.load_study`` on Optuna's storage for the URL (RDB behind Optuna's in-process
  trial cache) + ``study.optimize``.
- foldtune: ``hpo.workers.BudgetedStudy`` (``open_storage``: heartbeats on RDB; every ask takes the
  storage-wide lock and counts the finished and running trials), budget = history + T.
- proxy: the same BudgetedStudy on ``grpc://`` to ``storage.serve_proxy`` in its own process (an
  RDB storage there sits behind Optuna's cache), already warm, as a proxy serving running workers
  is. Through a proxy there is no storage lock, so the budget is best effort.

Per trial, the time not spent in the objective's own work is split into sampling (the suggest calls:
TPE reads the history and fits its estimators, then each param is written) and storage (ask with
the lock and the budget count, tell, heartbeats). The first trial of a process also reads the
whole history into the cache, so it is reported on its own (a journal is replayed when opened
instead); p50/p95 are over the other T - 1. ``--quick``: SQLite and PostgreSQL, T = 12.

    python -m benchmarks.study_size --quick
    python -m benchmarks.study_size --storages sqlite postgresql --sizes 1000 10000 --trials 40
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import socket
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from benchmarks.common import loadavg, report
from benchmarks.storage_overhead import (
    REAL_TRIAL_S,
    STUDY,
    TrialClock,
    _in_child,
    _num,
    _one_line,
    _plain_storage,
    _quantile,
    _score,
    _space,
    _stop,
)
from hpo.optuna_compat import bulk_add_trials, study_id
from hpo.study import StudySpec, build_sampler
from hpo.testing import STORAGE_MODES, fresh_storage_url
from hpo.workers import BudgetedStudy, BudgetReached
from storage import StorageError, open_storage, serve_proxy
from training.config import RunConfig

# ------------------------------------------------------------------------------------------ setup

VARIANTS = ("plain", "foldtune", "proxy")
SIZES = (100, 1_000, 10_000)
QUICK = {"storages": ["sqlite", "postgresql"], "sizes": list(SIZES), "trials": 12}  # ~2 min on 2 cores
PROXY_READY_S = 60.0  # the proxy process imports, binds and answers within this
CHILD_TIMEOUT_S = 600.0  # one fill, proxy warm-up or measured run; 10,000 trials on a busy CPU
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Setup:
    storage: str
    size: int  # finished trials in the study before the measured ones
    variant: str
    trials: int  # T: measured trials, the first one included


@dataclass
class Outcome:
    setup: Setup
    status: str = "ok"  # "ok" or "failed: <one-line reason>"
    fill_s: float = math.nan  # writing the history
    open_ms: float = math.nan  # opening the study in the new process
    first_ms: float = math.nan  # the first trial's overhead: it also reads the whole history
    overhead_ms: list[float] = field(default_factory=list)  # the other trials: sampling + storage
    sample_ms: list[float] = field(default_factory=list)
    finished: int = 0  # COMPLETE + PRUNED afterwards, as the measured process sees them

    def p(self, q: float, values: list[float] | None = None) -> float:
        return _quantile(self.overhead_ms if values is None else values, q)

    @property
    def storage_ms(self) -> list[float]:
        return [total - sample for total, sample in zip(self.overhead_ms, self.sample_ms, strict=True)]


class PhaseClock(TrialClock):
    """A TrialClock that also keeps each trial's sampling time: the suggest calls, TPE's work."""

    def __init__(self) -> None:
        super().__init__(_space())
        self.sample_ms: list[float] = []

    def objective(self, trial: optuna.Trial) -> float:
        work, begin = self.work, time.perf_counter()
        value = super().objective(trial)
        self.sample_ms.append((time.perf_counter() - begin - (self.work - work)) * 1000)
        return value


# -------------------------------------------------------------------------------------- the history


class _RandomDraw:
    """Just enough of a trial for ``SearchSpace.sample`` of the benchmark space (no int or stepped
    params): uniform draws, distributions kept. An in-memory study with Optuna's RandomSampler
    takes ~1 ms a trial: 10 s for 10,000."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.distributions: dict[str, BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.distributions[name] = CategoricalDistribution(choices)
        return choices[int(self.rng.integers(len(choices)))]

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None, log: bool) -> float:
        self.distributions[name] = FloatDistribution(low, high, step=step, log=log)
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return float(self.rng.uniform(low, high))


def make_history(size: int, seed: int = 0) -> list[FrozenTrial]:
    """``size`` finished trials of the benchmark space with uniformly random params."""
    space, rng = _space(), np.random.default_rng(seed)
    history = []
    for number in range(size):
        draw = _RandomDraw(rng)
        params = space.sample(draw)
        trial = optuna.trial.create_trial(
            params=params, distributions=draw.distributions, value=_score(params)
        )
        trial.number = number
        history.append(trial)
    return history


def _fill(url: str, history: list[FrozenTrial]) -> float:
    """Create the study at ``url`` holding ``history``; returns the seconds it took."""
    begin = time.perf_counter()
    if url.startswith("journal://"):
        _fill_journal(url.removeprefix("journal://"), history)
    else:
        _fill_rdb(url, history)
    return time.perf_counter() - begin


def _fill_rdb(url: str, history: list[FrozenTrial]) -> None:
    storage = open_storage(url, heartbeat_interval=None)
    try:
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
        bulk_add_trials(storage, study_id(study), history)
    finally:
        storage.engine.dispose()


class _MemoryJournal(BaseJournalBackend):
    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)


def _fill_journal(path: str, history: list[FrozenTrial]) -> None:
    """The journal's own records, written by a JournalStorage in memory, appended to the file at
    once (a file lock, write and read-back per trial is ~6 ms: a minute for 10,000)."""
    memory = _MemoryJournal()
    study = optuna.create_study(study_name=STUDY, storage=JournalStorage(memory), direction="maximize")
    study.add_trials(history)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    JournalFileBackend(path).append_logs(memory.logs)


# ------------------------------------------------------------------------------------ the measuring


def _open_study(variant: str, url: str, budget: int) -> optuna.Study:
    space = _space()
    if variant == "plain":
        sampler = build_sampler("tpe", seed=1, space=space)
        return optuna.load_study(study_name=STUDY, storage=_plain_storage(url), sampler=sampler)
    spec = StudySpec(space, RunConfig(), "benchmark", sampler="tpe", pruner="none", seed=0)
    return BudgetedStudy(STUDY, url, spec, n_trials=budget, deadline=None, seed=1, poll_seconds=0.05)


def _run(setup: Setup, url: str) -> dict[str, Any]:
    """In a new process: open the study, run T trials, report the clock's numbers."""
    begin = time.perf_counter()
    study = _open_study(setup.variant, url, budget=setup.size + setup.trials)
    open_ms = (time.perf_counter() - begin) * 1000
    clock = PhaseClock()
    clock.restart()
    if setup.variant == "plain":
        study.optimize(clock.objective, n_trials=setup.trials, callbacks=[clock.after_trial])
    else:
        with contextlib.suppress(BudgetReached):  # how a budgeted worker ends
            study.optimize(clock.objective, callbacks=[clock.after_trial])
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    return {
        "open_ms": open_ms,
        "overhead_ms": clock.overhead_ms,
        "sample_ms": clock.sample_ms,
        "finished": finished,
    }


def _serve(url: str, port: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    serve_proxy(url, port=port)


def _load_through(url: str) -> int:
    """Read the whole study through the proxy once, so that its cache holds the history."""
    deadline = time.monotonic() + PROXY_READY_S
    while True:
        try:
            storage = open_storage(url)
            break
        except StorageError:
            if time.monotonic() > deadline:
                raise
    study = optuna.load_study(study_name=STUDY, storage=storage)
    return len(study.get_trials(deepcopy=False))


@contextlib.contextmanager
def _proxy(url: str, ctx: Any) -> Any:
    """``grpc://`` URL of a warm serve_proxy(url) in a child process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = ctx.Process(target=_serve, args=(url, port), daemon=True)
    proc.start()
    try:
        grpc_url = f"grpc://127.0.0.1:{port}"
        _in_child(ctx, _load_through, grpc_url, timeout=CHILD_TIMEOUT_S)
        yield grpc_url
    finally:
        proc.terminate()
        _stop([proc])


def measure(setup: Setup, history: list[FrozenTrial], ctx: Any, workdir: Path) -> Outcome:
    """One (storage, size, variant) on its own fresh storage; any failure becomes the status."""
    outcome = Outcome(setup)
    try:
        with fresh_storage_url(setup.storage, workdir) as url:
            outcome.fill_s = _in_child(ctx, _fill, url, history, timeout=CHILD_TIMEOUT_S)
            with _proxy(url, ctx) if setup.variant == "proxy" else contextlib.nullcontext(url) as target:
                result = _in_child(ctx, _run, setup, target, timeout=CHILD_TIMEOUT_S)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # also pytest's Skipped: fresh_storage_url's "server unreachable"
        outcome.status = f"failed: {_one_line(exc)}"
        return outcome
    outcome.open_ms, outcome.finished = result["open_ms"], result["finished"]
    outcome.first_ms = result["overhead_ms"][0]
    outcome.overhead_ms, outcome.sample_ms = result["overhead_ms"][1:], result["sample_ms"][1:]
    return outcome


# ------------------------------------------------------------------------------------------ report


def _rows(outcomes: list[Outcome]) -> list[list[Any]]:
    plain = {(o.setup.storage, o.setup.size): o for o in outcomes if o.setup.variant == "plain"}
    rows = []
    for o in outcomes:
        s = o.setup
        base = plain.get((s.storage, s.size))
        ratio = o.p(0.5) / base.p(0.5) if base and base.status == "ok" and base is not o else math.nan
        expected = s.size + s.trials
        finished = str(o.finished) if o.finished == expected else f"{o.finished} != {expected} MISMATCH"
        ok = o.status == "ok"
        rows.append(
            [
                s.storage,
                s.size,
                s.variant,
                _num(o.fill_s),
                _num(o.open_ms),
                _num(o.first_ms),
                _num(o.p(0.5)),
                _num(o.p(0.95)),
                _num(o.p(0.5, o.sample_ms)) if ok else "-",
                _num(o.p(0.5, o.storage_ms)) if ok else "-",
                _num(ratio),
                _num(100 * o.p(0.5) / 1000 / REAL_TRIAL_S),
                finished if ok else o.status[:100],
            ]
        )
    return rows


def _context_lines(outcomes: list[Outcome]) -> list[str]:
    """Per storage: growth of the p50 with the history, what sampling takes, the joining worker's
    first trial direct and through the proxy."""
    ok = {(o.setup.storage, o.setup.size, o.setup.variant): o for o in outcomes if o.status == "ok"}
    sizes = sorted({o.setup.size for o in outcomes})
    lines = [f"per-trial p50 in ms for a history of {' -> '.join(f'{n:,}' for n in sizes)} trials:"]
    for storage in dict.fromkeys(o.setup.storage for o in outcomes):
        growth = [
            f"{variant} " + " -> ".join(_ms(ok.get((storage, n, variant))) for n in sizes)
            for variant in VARIANTS
            if any((storage, n, variant) in ok for n in sizes)
        ]
        lines.append(f"  {storage}: " + "; ".join(growth))
        largest = next((n for n in reversed(sizes) if (storage, n, "foldtune") in ok), None)
        if largest is None:
            continue
        ours, proxy = ok[(storage, largest, "foldtune")], ok.get((storage, largest, "proxy"))
        share = ours.p(0.5, ours.sample_ms) / ours.p(0.5)
        text = (
            f"    at {largest:,}: sampling is {share:.0%} of foldtune's p50; "
            f"a new worker's first trial {ours.first_ms / 1000:.1f} s"
        )
        lines.append(text + (f", {proxy.first_ms / 1000:.1f} s through the proxy" if proxy else ""))
    wrong = [o for o in outcomes if o.status == "ok" and o.finished != o.setup.size + o.setup.trials]
    lines.append(
        "budget: every run ended with exactly history + T finished trials"
        if not wrong
        else "MISMATCH: " + ", ".join(f"{o.setup.storage} {o.setup.size} {o.setup.variant}" for o in wrong)
    )
    return lines


def _ms(o: Outcome | None) -> str:
    return "-" if o is None else f"{o.p(0.5):.0f}"


def _as_json(o: Outcome) -> dict[str, Any]:
    ok = o.status == "ok"
    return {
        **asdict(o.setup),
        "status": o.status,
        "fill_s": _num(o.fill_s),
        "open_ms": _num(o.open_ms),
        "first_trial_ms": _num(o.first_ms),
        "overhead_ms": {q: _num(o.p(p)) for q, p in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))},
        "sampling_ms_p50": _num(o.p(0.5, o.sample_ms)) if ok else "-",
        "storage_ms_p50": _num(o.p(0.5, o.storage_ms)) if ok else "-",
        "finished": o.finished,
    }


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.study_size",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--storages", nargs="+", choices=STORAGE_MODES, default=list(STORAGE_MODES))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="finished trials before")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--trials", type=int, default=30, help="T: measured trials per run, the first included"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CPU-sized: {' '.join(QUICK['storages'])}, T={QUICK['trials']}",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.storages, args.sizes, args.trials = QUICK["storages"], QUICK["sizes"], QUICK["trials"]
    if args.trials < 3:
        parser.error(f"--trials {args.trials}: need at least 3 (the first one is reported on its own)")
    if min(args.sizes) < 0:
        parser.error("--sizes: history sizes cannot be negative")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    ctx = mp.get_context("fork")  # children inherit the imports and the history: no pickling of 10k trials
    load_start, began = loadavg(), time.time()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="foldtune-study-size-") as workdir:
        for size in args.sizes:
            history = make_history(size)
            for storage in args.storages:
                for variant in args.variants:
                    outcomes.append(
                        measure(Setup(storage, size, variant, args.trials), history, ctx, Path(workdir))
                    )
                    _print_progress(outcomes[-1])
    context = _context_lines(outcomes)
    os.environ.setdefault("COLUMNS", "200")  # rich falls back to 80 columns when piped; this table is wider
    report(
        f"study_size{'_quick' if args.quick else ''}",  # a quick run keeps the full-size results
        f"Per-trial overhead vs study size: T={args.trials} trials after the history, TPE, 1 process",
        [
            "storage",
            "history",
            "variant",
            "fill s",
            "open ms",
            "first trial ms",
            "p50 ms",
            "p95 ms",
            "sampling p50 ms",
            "storage p50 ms",
            "p50 / plain",
            f"p50 % of {REAL_TRIAL_S:g} s",
            "finished / notes",
        ],
        _rows(outcomes),
        {
            "args": vars(args),
            "real_trial_s": REAL_TRIAL_S,
            # 1/5/15-min load averages: above the core count, other work shared the CPU
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "total_s": time.time() - began,
            "context": context,
            "runs": [_as_json(o) for o in outcomes],
        },
    )
    for line in context:
        print(line)


def _print_progress(o: Outcome) -> None:
    s = o.setup
    print(
        f"{s.storage:>10} {s.size:>6} {s.variant:<8} {o.status:.60}  fill {o.fill_s:.1f} s  "
        f"first {o.first_ms:.0f} ms  p50 {o.p(0.5):.1f} ms  load {loadavg()}",
        flush=True,
    )


if __name__ == "__main__":
    main()
