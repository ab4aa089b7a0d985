"""A trial's serving cost, measured before its first epoch and held against the study's limits.

Parameters and FLOPs come from the architecture alone, so a config over such a limit is judged before
anything else is done with it: it is not timed and not trained. Otherwise the model is timed on the
worker's device; a latency over its limit does not stop the trial (the figure is the device's, and
the trial's F1 still teaches the sampler), it makes the trial infeasible.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna

from hpo.records import TrialRecord, write_trial
from hpo.study import BEFORE_TRAINING, constraint_values, over_limit
from training.config import RunConfig

__all__ = ["measure_trial"]


def measure_trial(
    trial: optuna.Trial, config: RunConfig, *, limits: Mapping[str, float], num_classes: int, device: str
) -> str | None:
    """Record the trial's cost (user attrs) and one Optuna constraint per study limit; returns why
    the config must not be trained, or None."""
    from training.cost import measure_cost, static_cost

    record: TrialRecord = {}
    reason = None
    if any(m in limits for m in BEFORE_TRAINING):  # judged on the meta device: nothing built for real
        static = static_cost(config.model, num_classes=num_classes, image_size=config.data.image_size)
        record = {"params_m": static.params_m, "gflops": static.gflops}
        if broken := over_limit(record, limits, metrics=BEFORE_TRAINING):
            reason = f"over the study's limit before training: {broken}"
    if reason is None:
        cost = measure_cost(config, num_classes=num_classes, device=device)
        record = {
            "params_m": cost.params_m,
            "gflops": cost.gflops,
            "latency_ms": cost.latency_ms,
            "throughput": cost.throughput,
            "cost_device": cost.device,
        }
    write_trial(trial, record)
    for metric, value in constraint_values(record, limits).items():
        trial.set_constraint(metric, value)
    return reason
