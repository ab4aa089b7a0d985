"""Peer (c): a plain Optuna script, as the competition seeds write one.

``StratifiedKFold`` over the images (no groups: a writer's or a person's images land on both sides),
the plain DataLoader loop of ``benchmarks.peer_loop`` decoding every image in every epoch, Optuna's
default TPE, no pruning. For two trials at a time the user starts this script twice on one SQLite
file, as Optuna's documentation says to parallelize (threads through ``n_jobs`` share one GIL-bound
process); each process trains with one torch thread and samples from its own seed. The study is
created beforehand with ``optuna create-study``. ``benchmarks.peers`` starts the processes, reads the
trials from the storage and stops the processes at the end of the budget.

    python -m benchmarks.peer_optuna --storage sqlite:///s.db --study s --search search.csv \\
        --seed 0 --process 0 --deadline 1767225600
"""

from __future__ import annotations

import argparse
import time

import optuna
import torch
from sklearn.model_selection import StratifiedKFold

from benchmarks.peer_loop import add_setup_arguments, cross_validate, read_manifest, setup_from, suggest_quick

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_setup_arguments(parser)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--process", type=int, default=0, help="which of the parallel copies this is")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores
    setup = setup_from(args)
    data = read_manifest(args.search)
    folds = list(
        StratifiedKFold(setup.folds, shuffle=True, random_state=args.seed).split(data.files, data.labels)
    )

    def objective(trial: optuna.Trial) -> float:
        return cross_validate(suggest_quick(trial), data, folds, setup)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=args.study,
        storage=args.storage,
        sampler=optuna.samplers.TPESampler(seed=args.seed * 100 + args.process),
    )
    study.optimize(objective, timeout=max(1.0, args.deadline - time.time()))


if __name__ == "__main__":
    main()
