"""Progress bars while workers run, and the study status tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo.cli._app import console, err, quiet

__all__ = ["finished_count", "print_status", "with_trial_progress"]


def finished_count(study) -> int:
    """Finished trials as the budget counts them (``hpo.records.unbudgeted``)."""
    from optuna.trial import TrialState

    from hpo.records import study_record, unbudgeted

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    return finished - unbudgeted(study_record(study))


def with_trial_progress(name: str, storage: str | None, target: int | None, work: Callable) -> Any:
    """Run ``work(on_poll, on_cache, on_trial)`` while showing how the study goes.

    On a terminal: progress bars, which appear with the first report and vanish when the work fails,
    so input errors stay one line. Without one (nohup, docker logs, Kubernetes): one line per trial
    the workers end, as they end. ``--quiet``: nothing.
    """
    from hpo.study import open_study

    study, _ = open_study(name, storage)
    if quiet():
        return work(lambda: None, lambda done, total: None, None)
    reporter = _Bars(study, target) if err.is_terminal else _Lines()
    try:
        result = work(reporter.poll, reporter.cache, reporter.trial)
        reporter.poll(force=True)
    except BaseException:
        reporter.abort()
        raise
    finally:
        reporter.close()
    return result


class _Bars:
    """Rich progress bars for the image cache and the finished trials."""

    trial = None  # the bars show trials; no line each

    def __init__(self, study, target: int | None) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.study = study
        self.progress = Progress(*columns, console=err, transient=False)
        self.cache_task = self.progress.add_task("decoding images", total=None, visible=False)
        self.trials_task = self.progress.add_task("trials", total=target)
        self.last = 0.0

    def cache(self, done: int, total: int) -> None:
        self.progress.start()
        self.progress.update(self.cache_task, completed=done, total=total, visible=True)

    def poll(self, *, force: bool = False) -> None:
        from hpo.study import study_status

        if not force and time.time() - self.last < 1.0:
            return
        self.progress.start()
        self.last = time.time()
        s = study_status(self.study)
        best = f"best {s.best_value:.4f}" if s.best_value is not None else "no result yet"
        running = "; ".join(f"#{r.number} {r.progress}" for r in s.running)
        self.progress.update(self.trials_task, completed=s.finished, description=f"trials ({best}) {running}")

    def abort(self) -> None:
        self.progress.live.transient = True  # a failed run leaves its one error line, not half-drawn bars

    def close(self) -> None:
        self.progress.stop()


class _Lines:
    """Plain lines for logs without a terminal: the cache build, then each trial as a worker ends it."""

    QUIET_SECONDS = 2.0  # a cache built (or refused) faster than this prints nothing

    def __init__(self) -> None:
        self.cache_started: float | None = None
        self.next_share = 0.25

    def cache(self, done: int, total: int) -> None:
        now = time.time()
        if self.cache_started is None:
            self.cache_started = now
        elapsed = now - self.cache_started
        if done == total and elapsed >= self.QUIET_SECONDS:
            _line(f"decoded {total} images into the shared cache in {elapsed:.0f} s")
        elif total and done / total >= self.next_share and elapsed >= self.QUIET_SECONDS:
            _line(f"decoding images into the shared cache: {done} of {total}")
            self.next_share = (int(done / total * 4) + 1) / 4

    def trial(self, line: str) -> None:
        _line(line)

    def poll(self, *, force: bool = False) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def _line(text: str) -> None:
    err.print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", markup=False, highlight=False, soft_wrap=True)


def print_status(name: str, storage: str | None, *, as_json: bool = False):
    from hpo.records import study_record
    from hpo.study import open_study, study_status

    study, _ = open_study(name, storage)
    s = study_status(study, target=study_record(study).get("budget"))
    if as_json:
        console.print_json(json.dumps(s.to_dict(), default=str))
        return s
    budget = f"{s.finished} of the budget of {s.budget} finished" if s.budget else f"{s.finished} finished"
    console.print(f"study [bold]{escape(name)}[/]: {budget if s.counts else 'no trials'}")
    if s.counts:
        counts = Table(*s.counts.keys())
        counts.add_row(*(str(v) for v in s.counts.values()))
        console.print(counts)
    if s.pauses is not None:
        p = s.pauses
        console.print(f"asha: {p['paused']} paused, {p['promoted']} promoted, {p['continued']} continuing")
    if s.origins:
        copied = f" (the {s.copied} copied ones are outside the budget)" if s.copied else ""
        shown = ", ".join(f"{n} {kind}" for kind, n in s.origins.items())
        console.print(f"trials by origin: {shown}{copied}")
    if s.limits:
        limits = ", ".join(f"{m} <= {v:g}" for m, v in s.limits.items())
        where = "; latency measured on " + ", ".join(s.cost_devices) if s.cost_devices else ""
        console.print(f"limits {limits}: {s.infeasible} complete trial(s) infeasible{escape(where)}")
    if s.best_value is not None:
        feasible = "feasible " if s.limits else ""
        console.print(f"best {feasible}trial {s.best_number}: macro-F1 [bold green]{s.best_value:.4f}[/]")
        best = Table("param", "value")
        for key, value in s.best_params.items():
            best.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(best)
    if s.running:
        running = Table(
            "trial", "worker", "elapsed", "progress", title=f"running on {len(s.workers)} worker(s)"
        )
        for r in s.running:
            running.add_row(str(r.number), r.worker, f"{r.elapsed_s:.0f} s", r.progress)
        console.print(running)
    if s.failures:
        failures = Table("trials", "last", "reason", title="failed trials by reason")
        for group in s.failures:
            failures.add_row(str(group.count), str(group.last_trial), escape(group.reason))
        console.print(failures)
    if s.mean_trial_s is not None:
        eta = f"; ETA {s.eta_s:.0f} s to the budget" if s.eta_s else ""
        console.print(f"mean trial time {s.mean_trial_s:.1f} s{eta}")
    return s
