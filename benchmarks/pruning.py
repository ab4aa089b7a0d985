"""Pruning efficiency: one seeded k-fold study per pruner — none, median, hyperband, sh, wilcoxon.

Every run is the same TPE study (the ``quick`` space on the built-in sample data, test_resnet at
32 px on the CPU, the same number of finished trials); only the pruner differs. Per run: best F1,
epochs trained over all trials (pruned ones included) and wall time; over the seeds, mean ± std,
the per-seed comparison with ``none``, and where the epochs went: the share trained by trials that
ran to the end, and what a pruned trial cost. Goal: pruned best F1 within 0.01 of unpruned at
<= 1/3 of the epochs. Epoch counts and F1 do not depend on the machine's load; wall times do.
Results go to ``pruning_<folds>x<epochs>.json`` (``pruning_quick.json`` for ``--quick``).

    python -m benchmarks.pruning --jobs 2        # 30 trials x 2 folds x <= 4 epochs, 3 seeds, all images
    python -m benchmarks.pruning --jobs 2 --folds 3 --epochs 6 --pruners none median hyperband sh
    python -m benchmarks.pruning --quick         # CPU-sized for `python -m benchmarks`
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import report
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

PRUNERS = ("none", "median", "hyperband", "sh", "wilcoxon")
F1_GOAL = 0.01  # pruned best F1 at most this far below unpruned
EPOCHS_GOAL = 1 / 3  # pruned epochs as a share of unpruned
QUICK = {"trials": 12, "folds": 2, "epochs": 4, "images": 600}


def summarize(runs: list[StudyRun]) -> dict[str, dict[str, Any]]:
    """Per pruner: mean/std over seeds of best F1, epochs, wall time, and of the per-seed ratios to none."""
    baseline = {r.seed: r for r in runs if r.pruner == "none"}
    summary = {}
    for pruner in dict.fromkeys(r.pruner for r in runs):
        mine = [r for r in runs if r.pruner == pruner]
        paired = [(r, baseline[r.seed]) for r in mine if r.seed in baseline]
        f1_diff = mean_std([r.best_f1 - b.best_f1 for r, b in paired])
        epochs_ratio = mean_std([r.epochs / b.epochs for r, b in paired])
        summary[pruner] = {
            "best_f1": mean_std([r.best_f1 for r in mine]),
            "epochs": mean_std([float(r.epochs) for r in mine]),
            "wall_s": mean_std([r.wall_s for r in mine]),
            "complete_trials": statistics.fmean(r.states.get("COMPLETE", 0) for r in mine),
            "pruned_trials": statistics.fmean(r.states.get("PRUNED", 0) for r in mine),
            # where the epochs went: share trained by trials that ran to the end, cost of a pruned one
            "complete_epochs_share": mean_std([_share(r, "COMPLETE") for r in mine]),
            "epochs_per_pruned_trial": mean_std(
                [float(n) for r in mine for n, state in r.trial_epochs() if state == "PRUNED"]
            ),
            "f1_diff": f1_diff,
            "epochs_ratio": epochs_ratio,
            "wall_ratio": mean_std([r.wall_s / b.wall_s for r, b in paired]),
            "goal_met": pruner != "none" and f1_diff[0] >= -F1_GOAL and epochs_ratio[0] <= EPOCHS_GOAL,
        }
    return summary


def _share(run: StudyRun, state: str) -> float:
    return sum(n for n, s in run.trial_epochs() if s == state) / run.epochs if run.epochs else math.nan


def _pm(pair: tuple[float, float], fmt: str = ".3f") -> str:
    mean, std = pair
    return "-" if math.isnan(mean) else f"{mean:{fmt}} ± {std:{fmt.lstrip('+')}}"


def parse_args() -> argparse.Namespace:
    parser = study_arguments(__doc__, QUICK)
    parser.add_argument("--pruners", nargs="+", choices=PRUNERS, default=list(PRUNERS))
    parser.add_argument("--trials", type=int, default=30, help="finished trials per study")
    args = parse_study_args(parser, QUICK)
    if "none" not in args.pruners:
        parser.error("--pruners must include none: every figure is relative to it")
    return args


def main() -> None:
    args = parse_args()
    prepare_process(args.threads)
    size = StudySize(trials=args.trials, folds=args.folds, epochs=args.epochs)
    with tempfile.TemporaryDirectory(prefix="foldtune-pruning-") as tmp:
        work = Workspace(Path(tmp), size, images=args.images)
        plans = [dict(sampler="tpe", pruner=p, seed=seed) for seed in args.seeds for p in args.pruners]
        runs = run_studies(work, plans, jobs=args.jobs, threads=args.threads)
        n_images = work.n_images
    summary = summarize(runs)
    rows = [
        [
            pruner,
            _pm(s["best_f1"]),
            _pm(s["f1_diff"], "+.3f") if pruner != "none" else "",
            _pm(s["epochs"], ".0f"),
            _pm(s["epochs_ratio"], ".2f") if pruner != "none" else "",
            _pm(s["wall_s"], ".0f"),
            _pm(s["wall_ratio"], ".2f") if pruner != "none" else "",
            f"{s['complete_trials']:.1f} / {s['pruned_trials']:.1f}",
            _pm(s["complete_epochs_share"], ".2f"),
            _pm(s["epochs_per_pruned_trial"], ".1f") if s["pruned_trials"] else "",
            ("yes" if s["goal_met"] else "no") if pruner != "none" else "",
        ]
        for pruner, s in summary.items()
    ]
    setup = (
        f"TPE, {size.trials} trials x {size.folds} folds x <= {size.epochs} epochs, "
        f"{n_images} sample images, {len(args.seeds)} seeds"
    )
    os.environ.setdefault("COLUMNS", "220")  # rich falls back to 80 columns when piped
    report(
        "pruning_quick" if args.quick else f"pruning_{size.folds}x{size.epochs}",
        f"Pruning vs none: {setup} (mean ± std over seeds)",
        [
            "pruner",
            "best F1",
            "F1 - none",
            "epochs",
            "epochs / none",
            "wall s",
            "wall / none",
            "complete / pruned trials",
            "epochs share of complete trials",
            "epochs per pruned trial",
            f"goal: F1 within {F1_GOAL}, <= 1/3 epochs",
        ],
        rows,
        {
            "args": vars(args),
            "setup": setup,
            "goal": {"f1_within": F1_GOAL, "epochs_ratio_at_most": EPOCHS_GOAL},
            "summary": summary,
            "runs": [r.to_json() for r in runs],
        },
    )


if __name__ == "__main__":
    main()
