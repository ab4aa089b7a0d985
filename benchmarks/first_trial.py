"""Time to the first trial: `hpo study create` then `hpo worker`, against importing the training stack.

The baseline is ``python -c "import torch, timm, sklearn, optuna, albumentations"``: what any trial
process has to import before it trains. The measured span starts when ``hpo study create`` starts and
ends when the study's first trial is RUNNING, with ``hpo worker`` started right after create exits, as
the README runs them (built-in ``sample`` data, the ``quick`` space, ``--devices auto``). The goal is at
most 1.5 x the baseline. Every repeat creates a new study in a new SQLite file; the sample images and
their decoded cache are the user's data and are made once before the clock runs. ``cold`` repeats start
with an empty per-user foldtune cache (``XDG_CACHE_HOME``: nothing learned by an earlier create; the
facts shipped for the shipped spaces' models still apply); ``warm`` repeats keep what earlier creates
learned. ``hpo run`` (the one-command demo: create, MLflow, 2 CPU workers) is timed from its start to its
first RUNNING trial, with an empty cache. Baseline and the three kinds alternate, so a change of
load on the machine hits them alike; the ratio is the median over repeats of each time over the
baseline measured just before it.

    python -m benchmarks.first_trial --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import loadavg, report

BASELINE = "import torch, timm, sklearn, optuna, albumentations"
GOAL = 1.5  # create -> first RUNNING trial, as a multiple of the baseline
POLL_S = 0.05
HPO = str(Path(sys.executable).parent / "hpo")


def import_baseline() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BASELINE], check=True)
    return time.perf_counter() - start


def first_trial(work: Path, name: str, cache: Path) -> tuple[float, float]:
    """(seconds create took, seconds from create's start to the first RUNNING trial) of a new study."""
    url = f"sqlite:///{work / (name + '.db')}"
    env = _env(cache)
    start = time.perf_counter()
    subprocess.run(
        [HPO, "--quiet", "study", "create", name, "--space", "quick", "--data", "sample", "--storage", url],
        cwd=work,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    created = time.perf_counter() - start
    worker = [HPO, "--quiet", "worker", name, "--storage", url, "--devices", "auto", "--n-trials", "1"]
    return created, _until_running(worker, work, env, url, name, start)


def run_first_trial(work: Path, name: str, cache: Path) -> float:
    """Seconds from the start of `hpo run` (its defaults: quick, sample, 2 CPU workers, MLflow) to its
    first RUNNING trial, in a new study."""
    url = f"sqlite:///{work / (name + '.db')}"
    command = [HPO, "--quiet", "run", "--study", name, "--storage", url, "--n-trials", "1"]
    return _until_running(command, work, _env(cache), url, name, time.perf_counter())


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1"}


def _until_running(
    command: list[str], work: Path, env: dict[str, str], url: str, name: str, start: float
) -> float:
    """Start ``command``, wait for study ``name`` to have a RUNNING trial, end the command and its
    trial processes; returns the seconds since ``start``."""
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    storage = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(command[:3])} exited with {proc.returncode} before a trial ran"
                )
            with contextlib.suppress(Exception):  # the schema or the study is still being written
                if storage is None and Path(url.removeprefix("sqlite:///")).exists():
                    storage = RDBStorage(url, skip_table_creation=True)
                if storage is not None:
                    study_id = storage.get_study_id_from_name(name)
                    if storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                        return time.perf_counter() - start
            time.sleep(POLL_S)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its trial processes share its session
        proc.wait()
        if storage is not None:
            storage.remove_session()
            storage.engine.dispose()


def prepare(work: Path) -> None:
    """Write the sample, its decoded cache and the MLflow store, as a first `hpo run` would."""
    cache = work / "warmup-cache"
    first_trial(work, "warmup", cache)
    run_first_trial(work, "warmup-run", cache)
    shutil.rmtree(cache, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="first-trial-") as tmp:
        work = Path(tmp)
        prepare(work)
        warm_cache = work / "warm-cache"
        first_trial(work, "fill", warm_cache)  # the warm repeats find what this create learned
        times: dict[str, list[float]] = {"baseline": [], "cold": [], "warm": [], "hpo run": []}
        creates: dict[str, list[float]] = {"cold": [], "warm": []}
        for i in range(args.repeats):
            times["baseline"].append(import_baseline())
            cold_cache = work / f"cold-{i}"
            created, running = first_trial(work, f"cold-{i}", cold_cache)
            creates["cold"].append(created)
            times["cold"].append(running)
            created, running = first_trial(work, f"warm-{i}", warm_cache)
            creates["warm"].append(created)
            times["warm"].append(running)
            times["hpo run"].append(run_first_trial(work, f"run-{i}", work / f"run-cache-{i}"))
    base = statistics.median(times["baseline"])
    rows = [["import baseline", base, "-", 1.0, "-"]]
    ratios = {}
    for kind in ("cold", "warm", "hpo run"):
        # each repeat against the baseline measured just before it: load on the machine drifts
        ratios[kind] = statistics.median(t / b for t, b in zip(times[kind], times["baseline"], strict=True))
        met = "yes" if ratios[kind] <= GOAL else "no"
        median = statistics.median(times[kind])
        if kind == "hpo run":
            rows.append(["hpo run -> first RUNNING (cold)", median, "-", ratios[kind], met])
        else:
            create = statistics.median(creates[kind])
            rows.append([f"create, worker -> first RUNNING ({kind})", median, create, ratios[kind], met])
    report(
        "first_trial",
        f"Time to the first trial, median of {args.repeats} (goal: <= {GOAL} x the import baseline)",
        ["what", "seconds", "of it create", "x baseline (paired)", "goal met"],
        rows,
        {
            "baseline_command": f'python -c "{BASELINE}"',
            "goal": GOAL,
            "ratio_cold": ratios["cold"],
            "ratio_warm": ratios["warm"],
            "ratio_hpo_run": ratios["hpo run"],
            "repeats": args.repeats,
            "seconds": times,
            "create_seconds": creates,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
    )


if __name__ == "__main__":
    main()
