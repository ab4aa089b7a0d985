"""What measuring a trial's serving cost costs, as a share of the trial: goal < 2 % on the quick space.

Runs ``--trials`` trials of the quick space (test_resnet at 32 px, 3 folds, the built-in digits) on
the CPU through the real objective (which measures every trial), then times, for each trial's own
config, what the objective spends on it: the timed model (``measure_cost``: build, FLOP count,
warm-up, batch-1 latency, throughput at the trial's batch size) and, for studies with a params or
FLOPs limit, the meta-device count before it (``static_cost``). Each is the median of ``--repeats``
calls in the same process after the trials, so imports and caches are warm as in a worker.

    python -m benchmarks.cost_overhead --trials 4   # default: 1 trial (minutes on a busy 2-core CPU)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import loadavg, report
from hpo.study import build_sampler, create_study, open_study
from hpo.workers import Objective
from training.config import RunConfig
from training.cost import measure_cost, static_cost


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'study.db'}"
        create_study("cost", space="quick", data="sample", storage=url, artifacts=Path(tmp) / "art")
        _, spec = open_study("cost", url)
        study = optuna.load_study(
            study_name="cost", storage=url, sampler=build_sampler(spec.sampler, seed=0, space=spec.space)
        )
        objective = Objective(spec, device="cpu", checkpoint_root=Path(tmp) / "ckpt")
        study.optimize(objective, n_trials=args.trials)
        trials = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        rows, shares = [], []
        for t in trials:
            config = RunConfig.from_dict(t.user_attrs["config"])
            timed = functools.partial(measure_cost, config, num_classes=10, device="cpu")
            counted_only = functools.partial(
                static_cost, config.model, num_classes=10, image_size=config.data.image_size
            )
            measured = _median_seconds(timed, args.repeats)
            counted = _median_seconds(counted_only, args.repeats)
            seconds = t.duration.total_seconds()
            share = (measured + counted) / seconds
            shares.append(share)
            rows.append(
                [
                    t.number,
                    t.state.name.lower(),
                    config.budget.batch_size,
                    round(seconds, 2),
                    round(measured * 1e3, 1),
                    round(counted * 1e3, 1),
                    f"{share:.2%}",
                    t.user_attrs["latency_ms"],
                ]
            )
    report(
        "cost_overhead",
        "measuring a trial's serving cost, share of the trial (quick space, CPU)",
        ["trial", "state", "batch", "trial s", "measure_cost ms", "static_cost ms", "share", "latency ms"],
        rows,
        {
            "max_share": max(shares),
            "median_share": statistics.median(shares),
            "goal": "< 2 % of a quick-space trial",
            "repeats": args.repeats,
            "loadavg": loadavg(),
        },
    )


if __name__ == "__main__":
    main()
