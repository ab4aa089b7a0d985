"""Storage overhead: foldtune's budgeted study vs plain Optuna, per storage backend and worker count.

For every storage (sqlite, postgresql, mariadb, journal) x N worker processes (1, 4, 16, 64) x
variant, M trials of a cheap objective (3 params: a categorical, a log float, a conditional float;
no training) run on a fresh database:

- plain: each process ``optuna.load_study`` + ``study.optimize(objective, n_trials=M // N)`` (the
  first ``M % N`` processes take one more, so the total is M) on Optuna's own storage for the URL.
- foldtune: each process ``hpo.workers.BudgetedStudy`` (``open_storage``: heartbeats on RDB; the
  storage-wide lock around trial creation; the study-wide budget of M finished trials), optimizing
  until it raises ``BudgetReached``.

Both use foldtune's TPE settings (multivariate, group, constant liar), so the ratio measures the
storage layer and the budget, not a different sampler. Per-trial overhead is the time between two
trial ends in one process minus the objective's own work: ask, sampling (suggest calls, which also
write the params), tell, heartbeats, and lock and budget waits. Processes are forked after all
imports and a warm-up of Optuna's lazy imports (or spawned, with ``--start-method spawn``) and open
their storage themselves; the clock starts when every process is ready, so imports and connection
setup are excluded. With more processes than cores the intervals also contain waiting for a CPU.

    python -m benchmarks.storage_overhead --quick
    python -m benchmarks.storage_overhead --storages sqlite postgresql --workers 1 4 16 --trials 320
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import re
import statistics
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import optuna

from benchmarks.common import loadavg, report
from hpo.space import SearchSpace
from hpo.study import StudySpec, build_sampler
from hpo.testing import STORAGE_MODES, fresh_storage_url
from hpo.workers import BudgetedStudy, BudgetReached
from storage import open_storage
from training.config import RunConfig

# ------------------------------------------------------------------------------------------ setup

STUDY = "storage-overhead"
VARIANTS = ("plain", "foldtune")
WORKERS = (1, 4, 16, 64)
REAL_TRIAL_S = 30.0  # the order of one CPU demo trial (`hpo run`: 3 folds of test_resnet)
OVERHEAD_GOAL = 0.01  # per-trial overhead as a share of a real trial
SPACE = {
    "description": "storage benchmark: 3 params, one conditional",
    "params": {
        "optim.name": {"type": "categorical", "choices": ["sgd", "adamw"]},
        "optim.lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
        "optim.momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"optim.name": "sgd"}},
    },
}
QUICK = {"trials": 80, "workers": [1, 4, 16, 64], "timeout": 60.0}  # ~8 min on 2 shared cores
SETUP_TIMEOUT_S = 60.0  # every process must have opened its storage by then
SUBPROCESS_TIMEOUT_S = 60.0  # study creation / trial counting in a helper process


@dataclass(frozen=True)
class Setup:
    storage: str
    workers: int
    variant: str
    trials: int  # M, over all processes
    poll_seconds: float  # BudgetedStudy's wait while running trials cover the budget
    timeout_s: float  # the measured phase is cut off after this


@dataclass
class WorkerReport:
    rank: int
    start: float = math.nan  # time.time() when this process was released
    end: float = math.nan
    overhead_ms: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class Outcome:
    setup: Setup
    status: str = "ok"  # "ok" or "failed: <one-line reason>"
    finished: int = 0  # COMPLETE + PRUNED in the storage afterwards
    failed_trials: int = 0  # FAIL in the storage afterwards
    stuck_trials: int = 0  # RUNNING / WAITING in the storage afterwards
    wall_s: float = math.nan
    overhead_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per process that raised
    load_before: tuple[float, ...] = ()

    @property
    def trials_per_s(self) -> float:
        return self.finished / self.wall_s if self.wall_s > 0 else math.nan

    def overhead(self, q: float) -> float:
        return _quantile(self.overhead_ms, q)


# ---------------------------------------------------------------------------------- the objective


class TrialClock:
    """Splits each trial interval of one process into the objective's work and everything else."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.last = time.perf_counter()
        self.work = 0.0
        self.overhead_ms: list[float] = []

    def restart(self) -> None:
        self.last, self.work = time.perf_counter(), 0.0

    def objective(self, trial: optuna.Trial) -> float:
        params = self.space.sample(trial)  # sampling and param writes: counted as overhead
        begin = time.perf_counter()
        value = _score(params)
        self.work += time.perf_counter() - begin
        return value

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        now = time.perf_counter()  # optimize calls back after tell: the trial's storage work is done
        self.overhead_ms.append((now - self.last - self.work) * 1000)
        self.last, self.work = now, 0.0


def _score(params: dict[str, Any]) -> float:
    """A made-up accuracy with its best at sgd, lr 3e-3, momentum 0.9."""
    value = 1.0 - abs(math.log10(params["optim.lr"]) + 2.5) / 2
    if params["optim.name"] == "sgd":
        value += 0.05 - abs(params["optim.momentum"] - 0.9)
    return value


def _space() -> SearchSpace:
    return SearchSpace.from_dict(SPACE, where="benchmarks.storage_overhead")


# ------------------------------------------------------------------------------------ the studies


def _plain_storage(url: str) -> str | optuna.storages.BaseStorage:
    """What a plain Optuna user passes: the URL, or a JournalStorage for a journal file."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal://")))
    return url


def _create_study(setup: Setup, url: str) -> None:
    """Schema and study, once, before the workers start (concurrent schema creation fails)."""
    for prefix in ("sqlite:///", "journal://"):  # fresh file storages live in a directory not made yet
        if url.startswith(prefix):
            os.makedirs(os.path.dirname(url.removeprefix(prefix)), exist_ok=True)
    storage = open_storage(url) if setup.variant == "foldtune" else _plain_storage(url)
    optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")


def _count_trials(url: str) -> dict[str, int]:
    study = optuna.load_study(study_name=STUDY, storage=_plain_storage(url))
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return dict(counts)


def _load_study(setup: Setup, url: str, rank: int) -> optuna.Study:
    space = _space()
    if setup.variant == "plain":
        sampler = build_sampler("tpe", seed=rank, space=space)
        return optuna.load_study(study_name=STUDY, storage=_plain_storage(url), sampler=sampler)
    spec = StudySpec(space, RunConfig(), "benchmark", sampler="tpe", pruner="none", seed=0)
    return BudgetedStudy(
        STUDY, url, spec, n_trials=setup.trials, deadline=None, seed=rank, poll_seconds=setup.poll_seconds
    )


def _optimize(setup: Setup, study: optuna.Study, clock: TrialClock, rank: int) -> None:
    if setup.variant == "plain":
        share = setup.trials // setup.workers + (rank < setup.trials % setup.workers)
        study.optimize(clock.objective, n_trials=share, callbacks=[clock.after_trial])
        return
    with contextlib.suppress(BudgetReached):  # how a budgeted worker ends
        study.optimize(clock.objective, catch=(Exception,), callbacks=[clock.after_trial])


# ------------------------------------------------------------------------------------ the workers


def _warm_up() -> None:
    """Load in the parent what Optuna and SQLAlchemy import lazily, so that forked workers inherit it
    instead of each paying ~0.5 s of CPU (64 of them on 2 cores took a minute to start). Uses an
    in-memory SQLite study: no connection to a measured storage exists when the workers fork."""
    from sqlalchemy.dialects import registry

    for dialect in ("postgresql.psycopg", "mysql.pymysql", "sqlite.pysqlite"):
        registry.load(dialect)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    rdb = optuna.storages.RDBStorage("sqlite:///:memory:")
    space = _space()
    study = optuna.create_study(storage=rdb, sampler=build_sampler("tpe", seed=0, space=space))
    study.optimize(TrialClock(space).objective, n_trials=8)  # past TPE's 5 startup trials
    rdb.engine.dispose()


def _worker_main(setup: Setup, url: str, rank: int, queue: Any, go: Any) -> None:
    """One worker process: open the study, report ready, wait for the start, run, report."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    result = WorkerReport(rank)
    try:
        study = _load_study(setup, url, rank)
        clock = TrialClock(_space())
    except Exception as exc:
        result.error = f"setup: {_one_line(exc)}"
        queue.put(("ready", result))
        return
    queue.put(("ready", None))
    if not go.wait(SETUP_TIMEOUT_S + setup.timeout_s):
        return
    result.start = time.time()
    clock.restart()
    try:
        _optimize(setup, study, clock, rank)
    except Exception as exc:
        result.error = _one_line(exc)
    result.end = time.time()
    result.overhead_ms = clock.overhead_ms
    queue.put(("done", result))


def _run_workers(setup: Setup, url: str, ctx: Any) -> list[WorkerReport]:
    """Start N processes, release them together once all are ready, collect their reports."""
    queue, go = ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_worker_main, args=(setup, url, rank, queue, go), daemon=True)
        for rank in range(setup.workers)
    ]
    for proc in procs:
        proc.start()
    try:
        ready = _collect(queue, "ready", setup.workers, procs, SETUP_TIMEOUT_S)
        setup_failed = [r for r in ready if r is not None]
        go.set()
        done = _collect(queue, "done", setup.workers - len(setup_failed), procs, setup.timeout_s)
    finally:
        _stop(procs)
    reports = setup_failed + [r for r in done if r is not None]
    missing = sorted(set(range(setup.workers)) - {r.rank for r in reports})
    reports += [
        WorkerReport(rank, error=f"no report (timed out after {setup.timeout_s:g} s)") for rank in missing
    ]
    return sorted(reports, key=lambda r: r.rank)


def _collect(inbox: Any, kind: str, count: int, procs: list[Any], timeout: float) -> list[Any]:
    """``count`` payloads of messages ``kind`` (fewer if time runs out or every process died)."""
    deadline, payloads = time.monotonic() + timeout, []
    while len(payloads) < count and time.monotonic() < deadline:
        try:
            got, payload = inbox.get(timeout=0.2)
        except Empty:
            if not any(p.is_alive() for p in procs) and inbox.empty():
                break
            continue
        if got == kind:
            payloads.append(payload)
    return payloads


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(timeout=5)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _in_child(ctx: Any, fn: Callable[..., Any], *args: Any, timeout: float = SUBPROCESS_TIMEOUT_S) -> Any:
    """``fn(*args)`` in a helper process: this one never holds a connection the workers would inherit."""
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_send_result, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise TimeoutError(f"{fn.__name__} took over {timeout:g} s")
        ok, value = receive.recv()
    except EOFError:
        ok, value = False, f"{fn.__name__}: helper process died (exit code {proc.exitcode})"
    finally:
        _stop([proc])
    if not ok:
        raise RuntimeError(value)
    return value


def _send_result(send: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    try:
        send.send((True, fn(*args)))
    except Exception as exc:
        send.send((False, _one_line(exc)))


# ---------------------------------------------------------------------------------- one setting


def measure(setup: Setup, ctx: Any, workdir: Path) -> Outcome:
    """One (storage, N, variant) on its own fresh storage; any failure becomes the outcome's status."""
    outcome = Outcome(setup, load_before=os.getloadavg())
    try:
        with fresh_storage_url(setup.storage, workdir) as url:
            _in_child(ctx, _create_study, setup, url)
            reports = _run_workers(setup, url, ctx)
            counts = _in_child(ctx, _count_trials, url)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # also pytest's Skipped: fresh_storage_url's "server unreachable"
        outcome.status = f"failed: {_one_line(exc)}"
        return outcome
    _summarize(outcome, reports, counts)
    return outcome


def _summarize(outcome: Outcome, reports: list[WorkerReport], counts: dict[str, int]) -> None:
    outcome.finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    outcome.failed_trials = counts.get("FAIL", 0)
    outcome.stuck_trials = counts.get("RUNNING", 0) + counts.get("WAITING", 0)
    outcome.errors = [f"worker {r.rank}: {r.error}" for r in reports if r.error]
    outcome.overhead_ms = [ms for r in reports for ms in r.overhead_ms]
    started = [r for r in reports if not math.isnan(r.start)]
    if started:
        outcome.wall_s = max(r.end for r in started) - min(r.start for r in started)
    if not started or outcome.finished == 0:
        outcome.status = f"failed: {_reasons(outcome.errors) or 'no trial finished'}"


# ------------------------------------------------------------------------------------------ report


def _rows(outcomes: list[Outcome]) -> list[list[Any]]:
    plain = {(o.setup.storage, o.setup.workers): o for o in outcomes if o.setup.variant == "plain"}
    rows = []
    for o in outcomes:
        s = o.setup
        base = plain.get((s.storage, s.workers)) if s.variant == "foldtune" else None
        ratio = o.trials_per_s / base.trials_per_s if base and base.status == "ok" else math.nan
        finished = str(o.finished) if o.finished == s.trials else f"{o.finished} != {s.trials} MISMATCH"
        p50 = o.overhead(0.5)
        rows.append(
            [
                s.storage,
                s.workers,
                s.variant,
                finished if o.status == "ok" else "-",
                _num(o.trials_per_s),
                _num(p50),
                _num(o.overhead(0.95)),
                _num(100 * p50 / 1000 / REAL_TRIAL_S),
                len(o.errors) + o.failed_trials + o.stuck_trials,
                _num(ratio),
                _notes(o),
            ]
        )
    return rows


def _notes(o: Outcome) -> str:
    if o.status != "ok":
        return o.status[:100]
    parts = []
    if o.failed_trials:
        parts.append(f"FAIL trials: {o.failed_trials}")
    if o.stuck_trials:
        parts.append(f"left RUNNING/WAITING: {o.stuck_trials}")
    if o.errors:
        parts.append(f"{len(o.errors)} workers raised: {_reasons(o.errors)}")
    return "; ".join(parts)[:100]


def _context_lines(outcomes: list[Outcome]) -> list[str]:
    """Per storage: foldtune's per-trial overhead next to a real trial; then the budget check."""
    cores = os.cpu_count() or 1
    lines = [
        f"overhead as a share of a {REAL_TRIAL_S:g} s trial (the order of a CPU demo trial), "
        f"goal <= {OVERHEAD_GOAL:.0%}; with N > {cores} processes on {cores} cores the intervals also "
        "hold the wait for a CPU behind the other processes, so they are an upper bound:"
    ]
    for storage in dict.fromkeys(o.setup.storage for o in outcomes):
        ok = [o for o in outcomes if o.setup.storage == storage and o.setup.variant == "foldtune"]
        ok = sorted((o for o in ok if o.status == "ok"), key=lambda o: o.setup.workers)
        shown = ok[:1] + ok[-1:] if len(ok) > 1 else ok  # the fewest processes (uncontended) and the most
        if shown:
            lines.append(f"  {storage}: " + "; ".join(_overhead_text(o) for o in shown))
    wrong = [
        o
        for o in outcomes
        if o.setup.variant == "foldtune" and o.status == "ok" and o.finished != o.setup.trials
    ]
    lines.append(
        "budget: every foldtune run finished exactly M trials"
        if not wrong
        else "budget MISMATCH (foldtune must finish exactly M): "
        + ", ".join(f"{o.setup.storage} N={o.setup.workers}: {o.finished}/{o.setup.trials}" for o in wrong)
    )
    return lines


def _overhead_text(o: Outcome) -> str:
    p50, p95 = o.overhead(0.5), o.overhead(0.95)
    return f"N={o.setup.workers} p50 {p50:.0f} ms = {_share(p50)}, p95 {p95:.0f} ms = {_share(p95)}"


def _share(ms: float) -> str:
    share = ms / 1000 / REAL_TRIAL_S
    return f"{share:.2%}" + ("" if share <= OVERHEAD_GOAL else " (over goal)")


def _reasons(errors: list[str]) -> str:
    """Distinct reasons with counts: 'too many clients (x12); ...'."""
    counts = Counter(e.split(": ", 1)[1] if ": " in e else e for e in errors)
    return "; ".join(f"{reason} (x{n})" if n > 1 else reason for reason, n in counts.most_common())


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of the root cause: Optuna's StorageInternalError hides e.g. "too many clients"."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(getattr(exc, "orig", None) or exc).split()) or type(exc).__name__
    text = re.sub(r"\bat \w[\w+.-]*://\S+", "at <url>", text)  # the URL of a fresh database: noise
    return f"{type(exc).__name__}: {text}"[:300]


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2 or q >= 1:
        return max(values) if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _num(value: float) -> float | str:
    """A number for the table and the JSON; '-' where there is none (JSON has no NaN)."""
    return "-" if math.isnan(value) else value


# -------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storages", nargs="+", choices=STORAGE_MODES, default=list(STORAGE_MODES))
    parser.add_argument("--workers", nargs="+", type=int, default=list(WORKERS), help="process counts N")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--trials", type=int, default=160, help="M: finished trials per run, all processes")
    parser.add_argument("--poll-seconds", type=float, default=0.05, help="BudgetedStudy poll_seconds")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before a run is cut off")
    parser.add_argument("--start-method", choices=("fork", "spawn"), default="fork")
    parser.add_argument(
        "--quick", action="store_true", help=f"CPU-sized: M={QUICK['trials']}, N={QUICK['workers']}"
    )
    args = parser.parse_args()
    if args.quick:
        args.trials, args.workers, args.timeout = QUICK["trials"], QUICK["workers"], QUICK["timeout"]
    if args.trials < max(args.workers):
        parser.error(f"--trials {args.trials} is fewer than {max(args.workers)} workers")
    return args


def main() -> None:
    args = parse_args()
    ctx = mp.get_context(args.start_method)
    _warm_up()
    load_start, began = loadavg(), time.time()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="foldtune-storage-bench-") as workdir:
        for storage in args.storages:
            for workers in args.workers:
                for variant in args.variants:
                    setup = Setup(storage, workers, variant, args.trials, args.poll_seconds, args.timeout)
                    outcomes.append(measure(setup, ctx, Path(workdir)))
                    _print_progress(outcomes[-1])
    context = _context_lines(outcomes)
    os.environ.setdefault("COLUMNS", "180")  # rich falls back to 80 columns when piped; this table is wider
    report(
        "storage_overhead",
        f"Storage overhead: M={args.trials} cheap trials, TPE, poll_seconds={args.poll_seconds:g}",
        [
            "storage",
            "N",
            "variant",
            "finished",
            "trials/s",
            "overhead p50 ms",
            "p95 ms",
            f"p50 % of {REAL_TRIAL_S:g} s",
            "failures",
            "foldtune/plain trials/s",
            "notes",
        ],
        _rows(outcomes),
        {
            "args": vars(args),
            "real_trial_s": REAL_TRIAL_S,
            "overhead_goal": OVERHEAD_GOAL,
            # 1/5/15-min load averages as `uptime` shows them: above the core count, other work
            # shared the CPU and every number here is slower than on an idle machine
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
        f"{s.storage:>10} N={s.workers:<3} {s.variant:<8} {o.status:.60}  "
        f"{o.finished} trials in {o.wall_s:.2f} s  load {loadavg()}",
        flush=True,
    )


def _as_json(o: Outcome) -> dict[str, Any]:
    return {
        **asdict(o.setup),
        "status": o.status,
        "finished": o.finished,
        "failed_trials": o.failed_trials,
        "stuck_trials": o.stuck_trials,
        "wall_s": _num(o.wall_s),
        "trials_per_s": _num(o.trials_per_s),
        "overhead_ms": {q: _num(o.overhead(p)) for q, p in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))},
        "errors": o.errors,
        "loadavg_before": o.load_before,
    }


if __name__ == "__main__":
    main()
