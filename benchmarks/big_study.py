"""A study with a long history, written fast: finished trials as foldtune's workers leave them.

``hpo study create`` makes the study (so its attrs are the real ones); then N trials are added,
each looking like one a worker finished: params drawn from the
study's own space, the resolved config and foldtune's trial record in its user attrs (host,
device, per-fold F1, epochs, seconds, images/s), its pruner steps as intermediate values, and
start/end times 30 s apart. About 55 % end pruned, 40 % complete, 5 % failed, as in a pruned study.

They are written in one transaction of multi-row INSERTs into Optuna's own tables: Optuna's
``study.add_trials`` takes one ORM round trip per param, attr and step, 30-70 ms a trial here, which
is 5-10 minutes for 10,000. The rows are the ones ``add_trials`` writes (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_compat import bulk_add_trials
from hpo.records import study_record
from hpo.study import StudySpec

__all__ = ["fill_study", "insert_trials", "make_trials"]

_STATES = (TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL)
_SHARES = (0.55, 0.40, 0.05)


class _Draw:
    """Just enough of a trial for ``SearchSpace.sample``: uniform draws, distributions kept."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.distributions: dict[str, BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.distributions[name] = CategoricalDistribution(choices)
        return choices[int(self.rng.integers(len(choices)))]

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None, log: bool) -> float:
        dist = FloatDistribution(low, high, step=step, log=log)
        self.distributions[name] = dist
        if log:
            return float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        if step:
            return float(low + step * self.rng.integers(round((high - low) / step) + 1))
        return float(self.rng.uniform(low, high))

    def suggest_int(self, name: str, low: int, high: int, *, step: int, log: bool) -> int:
        self.distributions[name] = IntDistribution(low, high, step=step, log=log)
        if log:
            return round(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        return int(low + step * self.rng.integers((high - low) // step + 1))


def make_trials(
    spec: StudySpec, n: int, *, seed: int = 0, start: dt.datetime | None = None
) -> list[FrozenTrial]:
    """``n`` finished trials of ``spec``'s space, numbered from 0, ending 30 s apart."""
    rng = np.random.default_rng(seed)
    start = start or dt.datetime.now() - dt.timedelta(seconds=30 * n)
    trials = []
    for number in range(n):
        draw = _Draw(rng)
        params = spec.space.sample(draw)
        config = spec.space.resolve(spec.base, params).to_dict()
        folds, max_epochs = config["cv"]["folds"], config["budget"]["max_epochs"]
        state = _STATES[int(rng.choice(3, p=_SHARES))]
        done = folds if state == TrialState.COMPLETE else int(rng.integers(1, folds + 1))
        fold_f1 = [round(float(rng.uniform(0.4, 0.99)), 4) for _ in range(done)]
        epochs = [int(rng.integers(1, max_epochs + 1)) for _ in range(done)]
        steps = {
            fold * max_epochs + epoch: round(sum(fold_f1[: fold + 1]) / folds * (epoch + 1) / epochs[fold], 4)
            for fold in range(done)
            for epoch in range(epochs[fold])
        }
        seconds = round(float(sum(epochs) * rng.uniform(1.5, 3.0)), 2)
        record: dict[str, Any] = {
            "config": config,
            "host": "bench-host",
            "device": f"cpu#{number % 2}",
            "fold_f1": fold_f1,
            "epochs": epochs,
            "best_epochs": [int(rng.integers(1, e + 1)) for e in epochs],
            "resumed_epochs": [0] * done,
            "f1_std": round(statistics.pstdev(fold_f1), 4),
            "seconds": seconds,
            "images_per_sec": round(float(rng.uniform(400, 900)), 1),
            "progress": {"fold": done, "folds": folds, "epoch": epochs[-1], "epochs": max_epochs},
        }
        value: float | None = None
        if state == TrialState.COMPLETE:
            value = statistics.fmean(fold_f1)
            record["oof_f1"] = round(value - 0.01, 4)
        elif state == TrialState.PRUNED:
            value = steps[max(steps)]
            record["prune_reason"] = f"pruned at step {max(steps)}: F1 {value:.4f} is below its peers"
        else:
            record["fail_reason"] = "RuntimeError: out of memory (benchmark filler)"
        end = start + dt.timedelta(seconds=30 * number)
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=value,
                datetime_start=end - dt.timedelta(seconds=seconds + 2),
                datetime_complete=end,
                params=params,
                distributions=draw.distributions,
                user_attrs=record,
                system_attrs={},
                intermediate_values=steps if state != TrialState.FAIL else {},
                trial_id=number,
            )
        )
    return trials


def insert_trials(url: str, name: str, trials: list[FrozenTrial]) -> None:
    """Write ``trials`` (numbered from 0) into the empty study ``name`` at the RDB ``url``."""
    storage = optuna.storages.RDBStorage(url)
    try:
        bulk_add_trials(storage, storage.get_study_id_from_name(name), trials)
    finally:
        storage.engine.dispose()


def fill_study(url: str, name: str, n: int, *, seed: int = 0) -> float:
    """Add ``n`` trials to the empty foldtune study ``name`` at ``url``; the seconds it took."""
    begin = time.perf_counter()
    study = optuna.load_study(study_name=name, storage=url)
    spec = StudySpec.from_dict(study_record(study)["foldtune"], where=f"study {name}")
    insert_trials(url, name, make_trials(spec, n, seed=seed))
    return time.perf_counter() - begin
