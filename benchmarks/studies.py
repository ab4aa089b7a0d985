"""Seeded k-fold studies on the built-in sample data, run through the product path, epochs counted.

Shared by ``benchmarks.pruning`` and ``benchmarks.search_quality``. ``create_study`` makes each study
in one SQLite file from the shipped ``quick`` space (fixed values resized for the benchmark), then one
in-process worker runs ``BudgetedStudy.optimize(Objective)`` on the CPU: what ``hpo worker --devices
cpu`` runs in its child process, without the process start and the dashboard plots. The decoded-image
cache is built once and shared by every study of a workspace. An observer counts every epoch trained
(pruned trials included), so a run yields best F1, total epochs, wall time and best-so-far per trial.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import multiprocessing
import statistics
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from hpo.space import load_space
from hpo.study import create_study, open_study
from hpo.tracking import TrialObserver
from hpo.workers import BudgetedStudy, BudgetReached, Objective
from training.data import load_table
from training.sample import materialize_sample

__all__ = ["StudyRun", "StudySize", "Workspace", "mean_std", "prepare_process", "run_studies", "run_study"]


@dataclass(frozen=True)
class StudySize:
    trials: int  # finished (complete + pruned) trials per study
    folds: int
    epochs: int  # budget.max_epochs per fold; early stopping (patience 2 in `quick`) may end a fold sooner
    image_size: int = 32  # test_resnet's smallest input


@dataclass
class StudyRun:
    sampler: str
    pruner: str
    seed: int
    best_f1: float  # best complete trial's mean fold macro-F1 (NaN if none completed)
    epochs: int  # epochs trained over all trials, pruned ones included
    wall_s: float
    states: dict[str, int]
    # per finished trial, in order: (epochs spent so far, best F1 so far, its state)
    curve: list[tuple[int, float, str]] = field(default_factory=list)

    def best_within(self, epochs: int) -> float:
        """Best F1 of the trials that had finished when ``epochs`` epochs were spent."""
        within = [best for spent, best, _ in self.curve if spent <= epochs and not math.isnan(best)]
        return within[-1] if within else math.nan

    def trials_within(self, epochs: int) -> int:
        return sum(spent <= epochs for spent, _, _ in self.curve)

    def trial_epochs(self) -> list[tuple[int, str]]:
        """Per finished trial, in order: (epochs it trained, its state)."""
        spent = [0] + [epochs for epochs, _, _ in self.curve]
        return [(spent[i + 1] - spent[i], state) for i, (_, _, state) in enumerate(self.curve)]

    def line(self) -> str:
        states = " ".join(f"{state.lower()} {n}" for state, n in sorted(self.states.items()))
        return (
            f"{self.sampler:>6} {self.pruner:>9} seed {self.seed}: best F1 {self.best_f1:.4f}, "
            f"{self.epochs} epochs, {self.wall_s:.0f} s ({states})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "pruner": self.pruner,
            "seed": self.seed,
            "best_f1": _num(self.best_f1),
            "epochs": self.epochs,
            "wall_s": round(self.wall_s, 2),
            "states": self.states,
            "curve": [
                [spent, None if math.isnan(best) else round(best, 4), state]
                for spent, best, state in self.curve
            ],
        }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)  # JSON has no NaN


class _EpochLog(TrialObserver):
    """Counts epochs as the objective trains them; records best-so-far after each trial."""

    def __init__(self) -> None:
        self.epochs = 0
        self.best = math.nan
        self.curve: list[tuple[int, float, str]] = []

    def on_epoch(self, trial, fold, stats) -> None:
        self.epochs += 1

    def on_trial_end(self, trial, state, value, reason) -> None:
        if state == TrialState.COMPLETE and value is not None and not value <= self.best:
            self.best = value
        self.curve.append((self.epochs, self.best, state.name))


class Workspace:
    """One directory for a benchmark invocation: sample data, its decoded cache, the space, the studies.

    ``data``: ``sample`` (digits, where most configs reach the same F1) or ``sample-mask`` (18 classes,
    where the config matters). ``images`` keeps whole writer groups of the digits, drawn at random,
    until that many images are in (all 1797 when None): the CPU-sized runs train on a part of the
    sample to fit their time budget.
    """

    def __init__(
        self, root: Path, size: StudySize, *, images: int | None = None, data: str = "sample"
    ) -> None:
        self.root, self.size = root, size
        if data == "sample":
            self.csv: Path | str = materialize_sample(root / "sample")
            if images is not None:
                self.csv = _subset(self.csv, images)
        elif data == "sample-mask" and images is None:
            self.csv = data  # the built-in name: every study and worker shares one materialized copy
        else:
            raise SystemExit(
                f"--data {data}{f' with --images {images}' if images else ''}: use sample, "
                "or sample-mask without --images"
            )
        space = load_space("quick").to_dict()
        space["description"] = f"benchmark: quick at {size.folds} folds x {size.epochs} epochs"
        space["fixed"] |= {
            "data.image_size": size.image_size,
            "data.cache_dir": str(root / "cache"),
            "budget.max_epochs": size.epochs,
            "budget.device": "cpu",
        }
        self.space = root / "space.yaml"
        self.space.write_text(yaml.safe_dump(space, sort_keys=False))
        self.url = f"sqlite:///{root / 'studies.db'}"
        self.n_images = len(load_table(self.csv))


def prepare_process(threads: int) -> None:
    """Quiet Optuna, and pin torch's threads: two intra-op threads on a 2-core machine shared with
    other work spun against it and ran epochs ~10x slower than one."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # TPE's group=True


def _subset(csv_path: Path, images: int) -> Path:
    """A manifest next to ``csv_path`` with whole groups drawn (seeded) until ``images`` rows are in."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_group: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    groups = sorted(by_group)
    kept: list[dict[str, str]] = []
    for i in np.random.default_rng(0).permutation(len(groups)):
        if len(kept) >= images:
            break
        kept += by_group[groups[i]]
    out = csv_path.with_name(f"subset-{images}.csv")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "group"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(kept, key=lambda row: row["path"]))
    return out


def run_study(
    work: Workspace, *, sampler: str, pruner: str, seed: int, epoch_budget: int | None = None
) -> StudyRun:
    """One fresh study of ``work.size.trials`` finished trials, or until ``epoch_budget`` epochs are spent."""
    size = work.size
    name = f"{sampler}-{pruner}-seed{seed}"
    create_study(
        name,
        space=work.space,
        data=str(work.csv),
        storage=work.url,
        folds=size.folds,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        artifacts=work.root / "artifacts",
        starts=False,  # what is compared is the sampler and the pruner, from the same first trials
    )
    _, spec = open_study(name, work.url)
    study = BudgetedStudy(
        name,
        work.url,
        spec,
        n_trials=None if epoch_budget else size.trials,
        deadline=None,
        seed=seed,  # the worker adds rank and host to this; one reproducible worker here
    )
    log = _EpochLog()
    objective = Objective(spec, device="cpu", checkpoint_root=work.root / "checkpoints", observer=log)

    def stop_at_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if epoch_budget is not None and log.epochs >= epoch_budget:
            study.stop()

    start = time.perf_counter()
    with contextlib.suppress(BudgetReached):  # how a budgeted worker ends
        study.optimize(objective, callbacks=[stop_at_budget])
    wall = time.perf_counter() - start
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return StudyRun(sampler, pruner, seed, log.best, log.epochs, wall, dict(states), log.curve)


def run_studies(work: Workspace, plans: list[dict[str, Any]], *, jobs: int, threads: int) -> list[StudyRun]:
    """``run_study(work, **plan)`` for each plan, ``jobs`` at a time; a line is printed as each run ends.

    Parallel runs go to spawned processes that share the workspace's SQLite file and image cache, as
    parallel ``hpo worker``s do. Epochs and F1 do not depend on it; wall times then share the cores.
    """
    if jobs <= 1:
        runs = []
        for plan in plans:
            runs.append(run_study(work, **plan))
            print(runs[-1].line(), flush=True)
        return runs
    spawn = multiprocessing.get_context("spawn")  # no forked copy of the parent's torch threads
    pool = ProcessPoolExecutor(jobs, mp_context=spawn, initializer=prepare_process, initargs=(threads,))
    with pool:
        futures = [pool.submit(run_study, work, **plan) for plan in plans]
        for future in as_completed(futures):
            print(future.result().line(), flush=True)
    return [future.result() for future in futures]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value); NaN values are left out."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def study_arguments(description: str | None, quick: dict[str, int]) -> argparse.ArgumentParser:
    """The options every study benchmark shares; ``--quick`` is applied by ``parse_study_args``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="budget.max_epochs per fold")
    parser.add_argument("--images", type=int, default=None, help="train on this many sample images")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per study")
    parser.add_argument("--jobs", type=int, default=1, help="studies run at once, one process each")
    parser.add_argument(
        "--quick", action="store_true", help=f"CPU-sized: {', '.join(f'{k}={v}' for k, v in quick.items())}"
    )
    return parser


def parse_study_args(parser: argparse.ArgumentParser, quick: dict[str, int]) -> argparse.Namespace:
    args = parser.parse_args()
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    return args
