"""Search quality: TPE vs random sampling at an equal epoch budget.

Each sampler runs the same study as ``benchmarks.pruning`` (the ``quick`` space on the built-in
sample data, test_resnet at 32 px on the CPU, no pruner) until it has spent the epoch budget; its
score is the best F1 of the trials that finished within the budget. Over the seeds: mean ± std and
the per-seed difference TPE - random; the JSON also holds best-so-far vs epochs spent of every run.
Goal: TPE at least as good as random on average.

    python -m benchmarks.search_quality --jobs 2         # budget 96 epochs (~12 trials), 3 seeds
    python -m benchmarks.search_quality --quick          # CPU-sized for `python -m benchmarks`
    python -m benchmarks.search_quality --budget 192 --seeds 0 1 2 3 4
    python -m benchmarks.search_quality --data sample-mask --budget 240 --seeds 0 1 2 3 4 --jobs 2

Results: ``search_quality.json`` (``_mask`` for sample-mask, ``_quick`` for --quick).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import report, result_stem
from benchmarks.studies import (
    StudyRun,
    StudySize,
    Workspace,
    mean_std,
    parse_study_args,
    prepare_process,
    run_studies,
    study_arguments,
)

SAMPLERS = ("tpe", "random")
QUICK = {"budget": 96, "folds": 2, "epochs": 4, "images": 600}


def parse_args() -> argparse.Namespace:
    parser = study_arguments(__doc__, QUICK)
    parser.add_argument("--budget", type=int, default=96, help="epochs per study, over all its trials")
    parser.add_argument("--data", choices=("sample", "sample-mask"), default="sample", help="built-in data")
    return parse_study_args(parser, QUICK)


def summarize(runs: list[StudyRun], budget: int) -> dict[str, Any]:
    """Per sampler: best F1 within the budget and trials run, over seeds; the per-seed TPE - random."""
    best = {s: {r.seed: r.best_within(budget) for r in runs if r.sampler == s} for s in SAMPLERS}
    summary: dict[str, Any] = {
        sampler: {
            "best_f1": mean_std(list(best[sampler].values())),
            "trials": statistics.fmean(r.trials_within(budget) for r in runs if r.sampler == sampler),
        }
        for sampler in SAMPLERS
    }
    seeds = sorted(best["tpe"].keys() & best["random"].keys())
    summary["tpe_minus_random"] = mean_std([best["tpe"][s] - best["random"][s] for s in seeds])
    return summary


def main() -> None:
    args = parse_args()
    prepare_process(args.threads)
    size = StudySize(trials=0, folds=args.folds, epochs=args.epochs)  # trials: as many as the budget buys
    with tempfile.TemporaryDirectory(prefix="foldtune-search-") as tmp:
        work = Workspace(Path(tmp), size, images=args.images, data=args.data)
        plans = [
            dict(sampler=sampler, pruner="none", seed=seed, epoch_budget=args.budget)
            for seed in args.seeds
            for sampler in SAMPLERS
        ]
        runs = run_studies(work, plans, jobs=args.jobs, threads=args.threads)
        n_images = work.n_images
    summary = summarize(runs, args.budget)
    diff, diff_sd = summary["tpe_minus_random"]
    goal_met = diff >= 0
    setup = (
        f"{args.budget} epochs per study ({size.folds} folds x <= {size.epochs} epochs a trial, "
        f"no pruner), {n_images} {args.data} images, {len(args.seeds)} seeds"
    )
    rows = [
        [s, f"{summary[s]['best_f1'][0]:.3f} ± {summary[s]['best_f1'][1]:.3f}", f"{summary[s]['trials']:.1f}"]
        for s in SAMPLERS
    ]
    rows.append(["tpe - random", f"{diff:+.3f} ± {diff_sd:.3f}", ""])
    os.environ.setdefault("COLUMNS", "160")  # rich falls back to 80 columns when piped
    report(
        result_stem("search_quality", data=[args.data], quick=args.quick),
        f"Best F1 at an equal epoch budget: {setup}; mean ± std over seeds; "
        f"goal TPE >= random: {'met' if goal_met else 'missed'}",
        ["sampler", "best F1 within the budget", "trials within the budget"],
        rows,
        {
            "args": vars(args),
            "setup": setup,
            "summary": summary,
            "goal_met": goal_met,
            "runs": [r.to_json() for r in runs],
        },
    )


if __name__ == "__main__":
    main()
