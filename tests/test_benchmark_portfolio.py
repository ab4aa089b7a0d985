"""The portfolio and pruner replay benchmarks' pure parts: no training, a hand-made table."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml

from benchmarks.portfolio import greedy_portfolio, normalise, starts_yaml
from benchmarks.pruner_replay import Curve, replay_asha, replay_optuna
from hpo.space import load_space


def test_greedy_portfolio_covers_the_datasets_the_first_pick_misses() -> None:
    # rows: datasets, columns: configs. Config 0 is best on average; config 2 alone rescues dataset 2,
    # config 1 is a near-copy of config 0 and adds nothing.
    scores = np.array(
        [
            [0.9, 0.9, 0.0, 0.5],
            [0.8, 0.8, 0.0, 0.5],
            [0.1, 0.1, 1.0, 0.5],
        ]
    )
    assert greedy_portfolio(scores, k=2) == [0, 2]
    assert greedy_portfolio(scores, k=4)[:2] == [0, 2]
    assert sorted(greedy_portfolio(scores, k=9)) == [0, 1, 2, 3]  # never more than the table holds


def test_normalise_maps_each_dataset_from_worst_to_best() -> None:
    out = normalise(np.array([[0.2, 0.6, 0.4], [0.9, 0.9, 0.9]]))
    assert out[0].tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert out[1].tolist() == [0.0, 0.0, 0.0]  # all equal: no config is better there


def test_starts_yaml_rounds_inside_the_space_and_loads_back() -> None:
    space = load_space("quick")
    start = {
        "optim.name": "sgd",
        "optim.lr": 2.99999e-2,
        "optim.weight_decay": 1.000004e-6,
        "optim.momentum": 0.9,
        "optim.nesterov": True,
        "loss.name": "ce",
        "augment.preset": "none",
        "sched.name": "cosine",
        "budget.batch_size": 64,
    }
    text = starts_yaml(space, [start])
    loaded = yaml.safe_load(text)["starts"][0]
    assert loaded["optim.lr"] == 0.03 and loaded["optim.weight_decay"] == 1e-6  # floats, inside the ranges
    assert loaded["optim.nesterov"] is True and loaded["budget.batch_size"] == 64
    with pytest.raises(ValueError, match="condition"):
        starts_yaml(space, [{**start, "optim.name": "adam"}])  # momentum without sgd


def curve(row: int, f1: list[list[float]], *, peak: int = 1) -> Curve:
    return Curve(row, tuple(map(tuple, f1)), tuple(tuple(1.0 for _ in f) for f in f1), 2, 3, peak)


GOOD = [[0.5, 0.7, 0.8], [0.6, 0.8, 0.9]]  # 2 folds x 3 epochs: value 0.85
POOR = [[0.1, 0.2, 0.2], [0.1, 0.2, 0.3]]  # value 0.25


def test_median_replay_prunes_the_poor_trial_at_its_first_judged_step() -> None:
    # n_startup_trials=1: the good trial completes; the poor one is judged first at step 1 (past
    # n_warmup_steps=1), where its credited F1 0.1 / 2 is below the good trial's 0.5 / 2
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
    trace = replay_optuna([curve(0, GOOD), curve(1, POOR)], pruner)
    assert [state for _, state, _ in trace.events] == ["COMPLETE", "PRUNED"]
    assert trace.best == pytest.approx(0.85)
    assert trace.epochs == 6 + 1 and trace.seconds == 7.0
    assert trace.time_to(0.85) == 6.0 and trace.time_to(0.9) is None


def test_the_schedule_rule_holds_judgement_until_the_peak_epoch() -> None:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
    trace = replay_optuna([curve(0, GOOD), curve(1, POOR, peak=3)], pruner, schedule_rule=True)
    assert trace.epochs == 6 + 3  # judged first at epoch 3 of fold 1, pruned there


def test_asha_pauses_then_promotes_a_trial_that_later_ranks_in_the_top_third() -> None:
    # The first trial sets rung 1; the second is worse at epoch 1 and is paused (1 of 2 goes on).
    # Four worse trials then reach rung 1, so the second ranks 2nd of 6 (top third): it is promoted
    # and trains only its remaining epochs.
    second = [[0.4, 0.8, 0.9], [0.7, 0.9, 0.95]]
    worse = [[0.05, 0.1, 0.1], [0.1, 0.1, 0.1]]
    curves = [curve(0, GOOD), curve(1, second)] + [curve(2 + i, worse) for i in range(4)]
    trace = replay_asha(curves, eta=3)
    assert trace.started == 6 and trace.promoted == 1
    assert trace.best == pytest.approx((0.9 + 0.95) / 2)
    # 6 (first) + 1 (second, paused) + 4 x 1 (worse, paused) + 5 (the continuation: no epoch twice)
    assert trace.epochs == 16
    assert [s for _, s, _ in trace.events] == ["COMPLETE"] + ["PRUNED"] * 5 + ["COMPLETE"]
