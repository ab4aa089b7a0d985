"""Anytime curves: what each peer would hand its user at every moment of a run, and when it is good enough.

Pure functions over finished-trial records, shared by ``benchmarks.peers`` and its tests. A peer's
pick at time t is its best trial by its *own* CV value among the trials completed by t; the curve
follows the pick's *common* score (the judge's held-out macro-F1), so it can fall when a peer's
leaky or noisy CV value promotes a worse config. A peer reaches a target when its curve comes within
``tol`` of it and stays there to the end of the budget.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Pick",
    "TrialRecord",
    "censored_median",
    "config_key",
    "final_value",
    "picks",
    "scored_curve",
    "seed_verdict",
    "time_to",
]


@dataclass(frozen=True)
class TrialRecord:
    started_s: float  # seconds since the run began (process start of the peer's first command)
    completed_s: float | None  # None: pruned, stopped, failed or still running at the end of the budget
    cv_f1: float | None  # the peer's own value for the trial (its CV mean); None unless completed
    params: dict[str, Any]


@dataclass(frozen=True)
class Pick:
    t: float  # seconds since the run began
    cv_f1: float  # the peer's own value of the pick
    params: dict[str, Any]


def config_key(params: dict[str, Any]) -> str:
    """One string per config, so equal configs (twins, or across peers) are scored once."""
    return json.dumps(params, sort_keys=True)


def picks(trials: list[TrialRecord], budget_s: float) -> list[Pick]:
    """Each time the peer's best-so-far changes within the budget: (when, its CV value, its config)."""
    done = sorted(
        (
            t
            for t in trials
            if t.completed_s is not None and t.cv_f1 is not None and t.completed_s <= budget_s
        ),
        key=lambda t: t.completed_s,  # type: ignore[arg-type, return-value]
    )
    out: list[Pick] = []
    for trial in done:
        assert trial.completed_s is not None and trial.cv_f1 is not None
        if not out or trial.cv_f1 > out[-1].cv_f1:  # ties keep the earlier pick, as study.best_trial does
            out.append(Pick(trial.completed_s, trial.cv_f1, trial.params))
    return out


def scored_curve(
    run_picks: list[Pick], score: Callable[[dict[str, Any]], float]
) -> list[tuple[float, float]]:
    """(when, common score of the pick) for every pick: the anytime curve that is compared."""
    return [(p.t, score(p.params)) for p in run_picks]


def final_value(curve: list[tuple[float, float]]) -> float:
    """The score of the pick at the end of the budget; NaN when no trial completed."""
    return curve[-1][1] if curve else math.nan


def time_to(curve: list[tuple[float, float]], target: float, *, tol: float) -> float | None:
    """When the curve comes within ``tol`` of ``target`` (or above) to stay there until the end of the
    budget; None: it ends below. A pick that scores well and then gives way to a worse one (a leaky or
    noisy CV value) does not count: a user stopping after that moment would get the worse one."""
    since = None
    for t, value in reversed(curve):  # back from the end, as far as it stays there
        if value < target - tol:
            break
        since = t
    return since


def seed_verdict(
    curves: dict[str, list[tuple[float, float]]],
    *,
    ours: str,
    budget_s: float,
    tol: float,
    ratio_goal: float,
) -> dict[str, Any]:
    """One seed: the target (best final score among the peers), each peer's time to it, the ratio and goal.

    ``ratio`` is our time over the fastest other peer's. When no other peer reaches the target within
    the budget their time is only known to exceed it: then ``ratio`` is the bound ours / budget and
    ``ratio_is_bound`` is True (the true ratio is below it). The goal holds when the ratio (or its
    bound) is at most ``ratio_goal`` and our final score is within ``tol`` of the best other peer's
    (implied by reaching the target, which is the best final score: checked all the same).
    """
    finals = {peer: final_value(curve) for peer, curve in curves.items()}
    known = [v for v in finals.values() if not math.isnan(v)]
    target = max(known) if known else math.nan
    times = {peer: (time_to(curve, target, tol=tol) if known else None) for peer, curve in curves.items()}
    others = [t for peer, t in times.items() if peer != ours and t is not None]
    mine = times.get(ours)
    ratio: float | None
    if mine is None:
        ratio, bound = None, False  # ours never got there: no ratio, goal missed
    elif others:
        ratio, bound = mine / min(others), False
    else:
        ratio, bound = mine / budget_s, True
    best_other = max(
        (v for peer, v in finals.items() if peer != ours and not math.isnan(v)), default=math.nan
    )
    f1_ok = not math.isnan(finals.get(ours, math.nan)) and (
        math.isnan(best_other) or finals[ours] >= best_other - tol
    )
    return {
        "target": None if math.isnan(target) else target,
        "final": {peer: None if math.isnan(v) else v for peer, v in finals.items()},  # JSON has no NaN
        "time_to_target_s": times,
        "ratio": ratio,
        "ratio_is_bound": bound,
        "goal_met": ratio is not None and ratio <= ratio_goal and f1_ok,
    }


def censored_median(values: list[float | None]) -> float | None:
    """Median with None as "never" (later than any value); None when the median itself is never."""
    if not values:
        return None
    middle = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(middle) else middle
