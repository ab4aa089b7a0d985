"""The study benchmarks: where a pruner's epochs went, and parallel runs giving the sequential numbers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from benchmarks.pruning import summarize
from benchmarks.studies import StudyRun, StudySize, Workspace, run_studies


def study_run(pruner: str, curve: list[tuple[int, float, str]], best_f1: float) -> StudyRun:
    states = dict(Counter(state for _, _, state in curve))
    return StudyRun("tpe", pruner, 0, best_f1, curve[-1][0], 10.0, states, curve)


def test_summary_says_where_a_pruners_epochs_went() -> None:
    none = study_run("none", [(8, 0.90, "COMPLETE"), (16, 0.95, "COMPLETE"), (24, 0.95, "COMPLETE")], 0.95)
    # one trial in full (8 epochs), then two pruned after 1 and 3 epochs: 12 of 24 epochs
    median = study_run("median", [(8, 0.90, "COMPLETE"), (9, 0.90, "PRUNED"), (12, 0.90, "PRUNED")], 0.90)
    # two pruned after 1 epoch each, one early-stopped after 6: 8 of 24 epochs, best F1 within 0.01
    sh = study_run(
        "sh", [(1, float("nan"), "PRUNED"), (2, float("nan"), "PRUNED"), (8, 0.945, "COMPLETE")], 0.945
    )

    summary = summarize([none, median, sh])

    assert summary["median"]["epochs_ratio"][0] == pytest.approx(0.5)
    assert summary["median"]["complete_epochs_share"][0] == pytest.approx(8 / 12)
    assert summary["median"]["epochs_per_pruned_trial"][0] == pytest.approx(2.0)
    assert summary["median"]["f1_diff"][0] == pytest.approx(-0.05)
    assert not summary["median"]["goal_met"]  # half the epochs, and F1 0.05 below
    assert summary["sh"]["epochs_ratio"][0] == pytest.approx(1 / 3)
    assert summary["sh"]["complete_epochs_share"][0] == pytest.approx(0.75)
    assert summary["sh"]["epochs_per_pruned_trial"][0] == pytest.approx(1.0)
    assert summary["sh"]["goal_met"]
    assert not summary["none"]["goal_met"]


def test_parallel_studies_give_the_sequential_epochs_and_f1(tmp_path: Path) -> None:
    size = StudySize(trials=3, folds=2, epochs=2)
    plans = [
        {"sampler": "tpe", "pruner": "median", "seed": 0},
        {"sampler": "random", "pruner": "none", "seed": 1},
    ]

    parallel = run_studies(Workspace(tmp_path / "parallel", size, images=500), plans, jobs=2, threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the parallel workers: the same float reductions
    try:
        sequential = run_studies(
            Workspace(tmp_path / "sequential", size, images=500), plans, jobs=1, threads=1
        )
    finally:
        torch.set_num_threads(threads)

    assert [(r.pruner, r.seed) for r in parallel] == [("median", 0), ("none", 1)]  # in plan order
    for p, s in zip(parallel, sequential, strict=True):
        assert sum(p.states.values()) == 3 and p.epochs > 0
        same = {key: value for key, value in p.to_json().items() if key != "wall_s"}  # NaN as None
        assert same == {key: value for key, value in s.to_json().items() if key != "wall_s"}
