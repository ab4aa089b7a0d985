"""The peers benchmark's pure parts: picks and anytime curves, time to target, the verdict, the README row,
and the quick space as the peers write it (the same distributions as search_spaces/quick.yaml)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import optuna
import pytest
import yaml

from benchmarks.anytime import (
    TrialRecord,
    censored_median,
    config_key,
    picks,
    scored_curve,
    seed_verdict,
    time_to,
)
from benchmarks.common import result_stem
from benchmarks.peer_loop import suggest_quick
from benchmarks.peers import PeerRun, summarize
from benchmarks.readme import TIMES, table_rows

BUDGET = 300.0


def trial(started: float, completed: float | None, f1: float | None, lr: float) -> TrialRecord:
    return TrialRecord(started, completed, f1, {"optim.lr": lr})


def test_picks_follow_the_peers_own_best_in_completion_order_within_the_budget() -> None:
    trials = [
        trial(0, 50, 0.80, 1e-3),
        trial(0, 20, 0.70, 2e-3),  # completed first, though listed second
        trial(20, None, None, 3e-3),  # pruned: never a pick
        trial(50, 90, 0.80, 4e-3),  # a tie keeps the earlier pick
        trial(90, 140, 0.90, 5e-3),
        trial(140, 310, 0.99, 6e-3),  # completed after the budget: does not count
    ]

    got = picks(trials, BUDGET)

    assert [(p.t, p.cv_f1, p.params["optim.lr"]) for p in got] == [
        (20, 0.70, 2e-3),
        (50, 0.80, 1e-3),
        (140, 0.90, 5e-3),
    ]


def test_the_curve_is_the_judges_score_of_each_pick_and_may_fall() -> None:
    trials = [trial(0, 10, 0.70, 1e-3), trial(0, 30, 0.95, 2e-3)]  # a leaky CV value promotes a worse config
    judge = {config_key({"optim.lr": 1e-3}): 0.85, config_key({"optim.lr": 2e-3}): 0.80}

    curve = scored_curve(picks(trials, BUDGET), lambda params: judge[config_key(params)])

    assert curve == [(10, 0.85), (30, 0.80)]
    assert time_to(curve, 0.85, tol=0.005) is None  # it got there, then gave way to a worse pick
    assert time_to(curve, 0.80, tol=0.005) == 10


def test_time_to_target_is_when_the_curve_gets_there_to_stay() -> None:
    curve = [(10.0, 0.80), (20.0, 0.90), (40.0, 0.85), (60.0, 0.93)]

    assert time_to(curve, 0.93, tol=0.005) == 60
    assert time_to(curve, 0.85, tol=0.005) == 20
    assert time_to(curve, 0.853, tol=0.005) == 20  # within the tolerance
    assert time_to(curve, 0.90, tol=0.005) == 60  # the dip to 0.85 at 40 s starts the clock again
    assert time_to(curve, 0.94, tol=0.005) is None  # never within the budget
    assert time_to([], 0.5, tol=0.005) is None


def test_verdict_ratio_against_the_fastest_other_peer() -> None:
    curves = {
        "foldtune": [(30.0, 0.95), (80.0, 0.97)],
        "ray": [(60.0, 0.90), (240.0, 0.968)],  # within 0.005 of the target at 240 s
        "optuna": [(100.0, 0.96)],
    }

    v = seed_verdict(curves, ours="foldtune", budget_s=BUDGET, tol=0.005, ratio_goal=1 / 3)

    assert v["target"] == 0.97
    assert v["time_to_target_s"] == {"foldtune": 80.0, "ray": 240.0, "optuna": None}
    assert v["ratio"] == pytest.approx(80 / 240) and not v["ratio_is_bound"]
    assert v["goal_met"]


def test_verdict_needs_equal_f1_and_a_third_of_the_time() -> None:
    slow = {"foldtune": [(100.0, 0.97)], "ray": [(150.0, 0.97)]}
    worse = {"foldtune": [(10.0, 0.95)], "ray": [(200.0, 0.97)]}  # fast, but 0.02 below at the end

    assert not seed_verdict(slow, ours="foldtune", budget_s=BUDGET, tol=0.005, ratio_goal=1 / 3)["goal_met"]
    v = seed_verdict(worse, ours="foldtune", budget_s=BUDGET, tol=0.005, ratio_goal=1 / 3)
    assert v["time_to_target_s"]["foldtune"] is None and v["ratio"] is None and not v["goal_met"]


def test_verdict_when_no_other_peer_gets_there_is_a_bound_on_the_ratio() -> None:
    curves = {"foldtune": [(60.0, 0.97)], "ray": [], "optuna": [(280.0, 0.90)]}

    v = seed_verdict(curves, ours="foldtune", budget_s=BUDGET, tol=0.005, ratio_goal=1 / 3)

    assert v["ratio"] == pytest.approx(60 / BUDGET) and v["ratio_is_bound"]
    assert v["final"]["ray"] is None and v["goal_met"]  # no trial completed: no final F1


def test_censored_median_counts_never_as_later_than_anything() -> None:
    assert censored_median([40.0, None, 20.0]) == 40.0
    assert censored_median([40.0, None, None]) is None
    assert censored_median([]) is None


def run(peer: str, seed: int, curve: list[tuple[float, float]]) -> PeerRun:
    trials = [trial(0, t, 0.5 + i / 10, i) for i, (t, _) in enumerate(curve)]
    r = PeerRun(peer, seed, trials, {"COMPLETE": len(trials)}, BUDGET + 5)
    r.picks, r.curve = picks(trials, BUDGET), curve
    return r


def test_readme_row_from_a_peers_result_file(tmp_path: Path) -> None:
    runs = [
        run("foldtune", 0, [(20.0, 0.90), (40.0, 0.98)]),
        run("ray", 0, [(90.0, 0.97), (150.0, 0.98)]),
        run("foldtune", 1, [(30.0, 0.99)]),
        run("ray", 1, [(60.0, 0.96), (200.0, 0.99)]),
    ]
    summary = summarize(runs, budget_s=BUDGET, peers=["foldtune", "ray"])
    assert summary["seeds"]["0"]["ratio"] == pytest.approx(40 / 150)
    assert summary["seeds"]["1"]["ratio"] == pytest.approx(30 / 200)
    assert summary["seeds_goal_met"] == 2 and summary["goal_met"]
    assert summary["peers"]["ray"]["median_time_s"] == pytest.approx(175.0)
    payload = {
        "machine": {"cpu": "Xeon", "cores": 2, "device": "cpu", "date": "2026-12-01"},
        "args": {"peers": ["foldtune", "ray"]},
        "setup": "quick space, 300 s per run",
        "goal": {"ratio_at_most": 1 / 3, "f1_tol": 0.005},
        "datasets": {
            "sample": {"images": {"search": 1348, "holdout": 449}, "summary": summary, "runs": []},
            "sample-mask": {"skipped": "`hpo study create --data sample-mask` refused it: no such data"},
        },
    }
    results = tmp_path / "results"
    results.mkdir()
    (results / "peers_quick.json").write_text(json.dumps(payload))

    rows = table_rows(results)

    goal = f"≤ 0.33{TIMES} the fastest peer's time, F1 within 0.005 of the best peer's or above"
    assert rows == [
        (
            "foldtune vs Ray Tune",
            "2-core CPU, sample (1348 search / 449 held-out images), quick space, 300 s per run",
            f"time to the best final F1 (median): foldtune 35 s / Ray Tune 175 s, ratio 0.21{TIMES}; "
            "held-out F1 0.985 ± 0.007 / 0.985 ± 0.007; goal held in 2 of 2 seeds",
            goal,
            "yes",
        ),
        (
            "foldtune vs Ray Tune",
            "2-core CPU, sample-mask",
            "skipped: `hpo study create --data sample-mask` refused it: no such data",
            goal,
            "—",
        ),
    ]


def _expected(spec: dict) -> optuna.distributions.BaseDistribution:
    if spec["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(spec["choices"])
    if spec["type"] == "int":
        return optuna.distributions.IntDistribution(spec["low"], spec["high"], step=spec.get("step", 1))
    return optuna.distributions.FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False))


def test_the_peers_quick_space_is_search_spaces_quick_yaml() -> None:
    params = yaml.safe_load(resources.files("search_spaces").joinpath("quick.yaml").read_text())["params"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    branches = set()
    for _ in range(60):
        t = study.ask()
        suggested = suggest_quick(t)
        # what quick.yaml asks for, given the values suggested: a param only where its `when` holds
        wanted = {
            path: _expected(spec)
            for path, spec in params.items()
            if all(
                suggested.get(ref) in (v if isinstance(v, list) else [v])
                for ref, v in spec.get("when", {}).items()
            )
        }
        assert list(t.distributions) == list(wanted)  # same names, same order
        assert t.distributions == wanted
        assert suggested == t.params
        branches.add((suggested["optim.name"], suggested["loss.name"], suggested["augment.preset"]))
        study.tell(t, 0.0)
    assert {b[0] for b in branches} == {"sgd", "adam", "adamw"}  # every condition was exercised
    assert {b[1] for b in branches} == {"ce", "focal", "label_smoothing"}
    assert {b[2] for b in branches} == {"none", "light"}


def test_each_data_set_run_alone_keeps_its_own_results_file() -> None:
    assert result_stem("peers", data=["sample", "sample-mask"], quick=False) == "peers"
    assert result_stem("peers", data=["sample"], quick=False) == "peers"
    assert result_stem("peers", data=["sample-mask"], quick=False) == "peers_mask"
    assert result_stem("peers", data=["sample"], quick=True) == "peers_quick"
    assert result_stem("search_quality", data=["sample-mask"], quick=True) == "search_quality_mask_quick"
