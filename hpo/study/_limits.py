"""Limits on what a study's models may cost to serve, as Optuna constraints.

A study stores its limits (``--limit params_m=25``) in its spec. Each trial sets one Optuna constraint
per limit (``Trial.set_constraint``, named by the metric): the trial's figure minus the limit, so <= 0
is feasible. The constraint-aware samplers (TPE, GP, NSGA-II) learn from them, and "best" everywhere
in foldtune means the best *feasible* complete trial.

What the config alone decides (``params_m``, ``gflops``) is checked before any training;
``latency_ms`` depends on the device a trial runs on and is judged after it.

    >>> parse_limits(["params_m=25", "latency_ms=8"])
    {'params_m': 25.0, 'latency_ms': 8.0}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial

from hpo.errors import UserError
from hpo.space import SearchSpace
from training.config import RunConfig, apply_overrides

__all__ = [
    "BEFORE_TRAINING",
    "LIMIT_METRICS",
    "best_feasible",
    "check_reachable",
    "constraint_values",
    "cost_limits",
    "is_feasible",
    "over_limit",
    "parse_limits",
]

# metric -> what it is, for messages; the keys are TrialRecord keys (hpo.records)
LIMIT_METRICS = {
    "params_m": "parameters in millions",
    "gflops": "forward GFLOPs of one image",
    "latency_ms": "median batch-1 forward time in ms",
}
BEFORE_TRAINING = ("params_m", "gflops")  # decided by the config alone: checked before a trial trains
CONSTRAINED_SAMPLERS = ("tpe", "gp")  # foldtune's samplers that learn from trial constraints

log = logging.getLogger(__name__)


def parse_limits(texts: Sequence[str]) -> dict[str, float]:
    """``["params_m=25", ...]`` -> ``{"params_m": 25.0}``; every mistake is one UserError line."""
    limits: dict[str, float] = {}
    known = ", ".join(LIMIT_METRICS)
    for text in texts:
        metric, sep, raw = (part.strip() for part in text.partition("="))
        if not sep:
            raise UserError(
                f"--limit '{text}': write METRIC=VALUE, e.g. --limit params_m=25 (metrics: {known})"
            )
        if metric not in LIMIT_METRICS:
            raise UserError(f"--limit '{text}': unknown metric '{metric}'; use one of: {known}")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"--limit '{text}': '{raw}' is not a positive number; give {metric} a value > 0")
        if metric in limits:
            raise UserError(f"--limit '{text}': {metric} is limited twice; give each metric one --limit")
        limits[metric] = value
    return limits


def cost_limits(
    texts: Sequence[str], space: SearchSpace, base: RunConfig, *, sampler: str, classes: int, space_arg: str
) -> dict[str, float]:
    """``hpo study create``'s ``--limit`` values, parsed and checked against the space."""
    limits = parse_limits(texts)
    check_reachable(limits, space, base, num_classes=classes, space_arg=space_arg)
    if limits and sampler not in CONSTRAINED_SAMPLERS:
        log.warning(
            "--sampler %s takes no constraints: the limits prune and mark trials but do not steer the "
            "search; use %s for that",
            sampler,
            " or ".join(CONSTRAINED_SAMPLERS),
        )
    return limits


def check_reachable(
    limits: Mapping[str, float], space: SearchSpace, base: RunConfig, *, num_classes: int, space_arg: str
) -> None:
    """Refuse limits that no model of the space meets at the smallest image size it can pick (FLOPs
    grow with the size), from parameters and FLOPs counted on the meta device."""
    static = {m: v for m, v in limits.items() if m in BEFORE_TRAINING}
    if not static:
        return
    from training.cost import static_cost  # torch and timm: only for a study with such limits

    size = min(space.values_of("data.image_size", base))
    costs = {}
    for name in space.values_of("model.name", base):
        model = apply_overrides(base, {"model.name": name}, where=f"--space {space_arg}").model
        cost = static_cost(model, num_classes=num_classes, image_size=size).__dict__
        if over_limit(cost, static, metrics=static) is None:
            return
        costs[name] = cost
    smallest = ", ".join(f"{n}: " + " ".join(f"{m} {c[m]:g}" for m in static) for n, c in costs.items())
    wanted = " ".join(f"{m}={v:g}" for m, v in static.items())
    raise UserError(
        f"--limit {wanted}: no model of --space {space_arg} meets it at {size} px ({smallest}); "
        "raise the limit or add a smaller model to the space"
    )


def constraint_values(record: Mapping[str, Any], limits: Mapping[str, float]) -> dict[str, float]:
    """Figure minus limit, per limited metric that was measured (a trial pruned over its params limit
    is never timed)."""
    return {m: round(float(record[m]) - v, 6) for m, v in limits.items() if m in record}


def over_limit(
    record: Mapping[str, Any], limits: Mapping[str, float], *, metrics: Iterable[str]
) -> str | None:
    """Why the figures break one of ``metrics``' limits ("params_m 31.2 > limit 25"), or None."""
    broken = [
        f"{m} {float(record[m]):g} > limit {limits[m]:g}"
        for m in metrics
        if m in limits and m in record and float(record[m]) > limits[m]
    ]
    return "; ".join(broken) or None


def is_feasible(trial: FrozenTrial) -> bool:
    """Within every limit of its study (a trial of a study without limits has no constraints)."""
    return all(c <= 0 for c in trial.constraints.values())


def best_feasible(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The complete, feasible trial of the highest value (the earliest of equals), or None."""
    feasible = [t for t in trials if t.value is not None and is_feasible(t)]
    return max(feasible, key=lambda t: (t.value, -t.number), default=None)
