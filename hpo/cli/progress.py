"""Progress bars while workers run, and the study status tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo.cli._app import console, err, quiet

__all__ = ["finished_count", "print_status", "with_trial_progress"]


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def with_trial_progress(name: str, storage: str | None, target: int | None, work: Callable) -> Any:
    """Run ``work(on_poll, on_cache)`` under progress bars for data caching and finished trials.

    The bars appear with the first report and vanish when the work fails, so input errors stay one line.
    """
    from hpo.study import open_study, study_status

    study, _ = open_study(name, storage)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=err, transient=False, disable=quiet())
    cache_task = progress.add_task("decoding images", total=None, visible=False)
    trials_task = progress.add_task("trials", total=target)
    last = [0.0]

    def on_cache(done: int, total: int) -> None:
        progress.start()
        progress.update(cache_task, completed=done, total=total, visible=True)

    def on_poll() -> None:
        if time.time() - last[0] < 1.0:
            return
        progress.start()
        last[0] = time.time()
        s = study_status(study)
        best = f"best {s.best_value:.4f}" if s.best_value is not None else "no result yet"
        running = "; ".join(f"#{r.number} {r.progress}" for r in s.running)
        done = s.counts.get("complete", 0) + s.counts.get("pruned", 0)
        progress.update(trials_task, completed=done, description=f"trials ({best}) {running}")

    try:
        result = work(on_poll, on_cache)
        last[0] = 0.0
        on_poll()
    except BaseException:
        progress.live.transient = True  # a failed run leaves its one error line, not half-drawn bars
        raise
    finally:
        progress.stop()
    return result


def print_status(name: str, storage: str | None, *, as_json: bool = False):
    from hpo.records import study_record
    from hpo.study import open_study, study_status

    study, _ = open_study(name, storage)
    s = study_status(study, target=study_record(study).get("budget"))
    if as_json:
        console.print_json(json.dumps(s.to_dict(), default=str))
        return s
    counts = (
        Table(*s.counts.keys(), title=f"study {name}")
        if s.counts
        else Table(title=f"study {name}: no trials")
    )
    if s.counts:
        counts.add_row(*(str(v) for v in s.counts.values()))
    console.print(counts)
    if s.best_value is not None:
        best = Table("param", "value", title=f"best trial {s.best_number}: macro-F1 {s.best_value:.4f}")
        for key, value in s.best_params.items():
            best.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(best)
    if s.running:
        running = Table("trial", "host", "device", "elapsed", "progress", title="running")
        for r in s.running:
            running.add_row(str(r.number), r.host, r.device, f"{r.elapsed_s:.0f} s", r.progress)
        console.print(running)
    if s.mean_trial_s is not None:
        eta = f"; ETA {s.eta_s:.0f} s to the budget" if s.eta_s else ""
        console.print(f"mean trial time {s.mean_trial_s:.1f} s{eta}")
    return s
