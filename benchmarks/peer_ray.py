"""Peer (b): Ray Tune with OptunaSearch and ASHA, as its users write it.

The trainable runs the plain DataLoader loop of ``benchmarks.peer_loop`` (PIL decoding every epoch,
no shared cache) over the same group-aware folds as foldtune (``StratifiedGroupKFold``), and reports
after every epoch: ``step = fold * epochs + epoch`` is ASHA's time attribute, so epochs are its rungs,
and the metric is the F1 credited so far (finished folds plus the current fold's best, over the
folds), the signal foldtune's pruner gets. ASHA as in Ray's PyTorch tutorial (grace period 1,
reduction factor 2); OptunaSearch's default TPE over the quick space written define-by-run; Tune's
defaults otherwise (``reuse_actors`` off: each trial starts a fresh worker process, imports included).

Set up for a small box: ``num_cpus`` = concurrent trials, one CPU and one torch thread per trial, no
dashboard, no usage stats, a temp dir of its own, Ray's logs kept out of the driver's output. Every
trial appends its start and completion to ``--events`` (JSON lines, wall-clock times), so the record
survives when ``benchmarks.peers`` stops this process at the end of the budget.

    python -m benchmarks.peer_ray --search search.csv --seed 0 --deadline 1767225600 \\
        --events events.jsonl --results ray_results
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.peer_loop import add_setup_arguments, cross_validate, read_manifest, setup_from, suggest_quick

__all__ = ["main"]


def _log(events: Path, record: dict) -> None:
    # One short line per write with O_APPEND: lines from the two trial processes do not interleave.
    with events.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _space(trial) -> None:
    """OptunaSearch's define-by-run form: suggest, return nothing (a dict returned would be constants)."""
    suggest_quick(trial)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_setup_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once, one CPU each")
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="Ray Tune's storage_path")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a benchmark

    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    from sklearn.model_selection import StratifiedGroupKFold

    setup = setup_from(args)
    data = read_manifest(args.search)
    splitter = StratifiedGroupKFold(setup.folds, shuffle=True, random_state=args.seed)
    folds = list(splitter.split(data.files, data.labels, data.groups))
    events = args.events.resolve()

    def trainable(config: dict) -> None:
        torch.set_num_threads(1)
        trial = uuid.uuid4().hex
        _log(events, {"event": "start", "trial": trial, "wall": time.time()})
        last_step, logged = setup.folds * setup.epochs, False

        def complete(value: float) -> None:
            nonlocal logged
            logged = True
            _log(
                events,
                {"event": "complete", "trial": trial, "wall": time.time(), "cv_f1": value, "params": config},
            )

        def report(fold: int, epoch: int, credited: float) -> None:
            step = fold * setup.epochs + epoch
            if step == last_step:  # ASHA ends the trial at max_t inside this report: the CV mean is known
                complete(credited)
            tune.report({"f1": credited, "step": step})

        value = cross_validate(config, data, folds, setup, on_epoch=report)
        if not logged:  # the last fold stopped early, before max_t
            complete(value)

    # Unix socket paths are limited to ~107 bytes: a short temp dir, not one under the results.
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    try:
        ray.init(
            num_cpus=args.concurrency,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            _temp_dir=temp_dir,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(space=_space, metric="f1", mode="max", seed=args.seed),
                scheduler=ASHAScheduler(
                    time_attr="step",
                    metric="f1",
                    mode="max",
                    max_t=setup.folds * setup.epochs,
                    grace_period=1,
                    reduction_factor=2,
                ),
                num_samples=-1,  # as many trials as the time budget allows
                max_concurrent_trials=args.concurrency,
                time_budget_s=max(1.0, args.deadline - time.time()),
            ),
            run_config=tune.RunConfig(storage_path=str(args.results.resolve()), name="peers", verbose=0),
        )
        tuner.fit()
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
