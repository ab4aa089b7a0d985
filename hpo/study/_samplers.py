"""Samplers and pruners by name; a study stores the names, every worker rebuilds the same objects."""

from __future__ import annotations

import warnings

import numpy as np
import optuna

from hpo.errors import UserError
from hpo.space import SearchSpace
from hpo.study._asha import AshaPruner

__all__ = [
    "DEFAULT_PRUNER",
    "FOLD_LEVEL_PRUNERS",
    "PRUNERS",
    "SAMPLERS",
    "WILCOXON_MIN_FOLDS",
    "build_pruner",
    "build_sampler",
]

SAMPLERS = ("tpe", "cmaes", "gp", "random", "grid")
PRUNERS = ("asha", "median", "hyperband", "sh", "wilcoxon", "none")
# Chosen by measurement (benchmarks/pruner_replay.py: 48 configs x 6 datasets x 5 seeds, and the same
# rule leaving each dataset out): asha reached the best F1 within 0.005 in 27 of 30 studies, at 0.39 of
# unpruned time, final F1 -0.001 of unpruned; median, the earlier default, in 7 of 30 (final -0.019).
DEFAULT_PRUNER = "asha"
# Pruners fed one value per finished fold (step = fold) instead of one per epoch.
FOLD_LEVEL_PRUNERS = frozenset({"wilcoxon"})
_WILCOXON_P = 0.1
# A signed-rank test over n folds cannot reach a p-value below 2**-n, so the pruner first stops a trial
# after the smallest such n (4 at p = 0.1); that saves training only when folds remain after it.
WILCOXON_MIN_FOLDS = next(n for n in range(1, 64) if 2.0**-n <= _WILCOXON_P) + 1


def build_sampler(name: str, *, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # group=True models conditional params per branch; constant_liar keeps parallel workers apart.
        # Both are "experimental" in Optuna; without the filter every worker process prints the warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5
            )
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(space), seed=seed)
    raise UserError(f"unknown sampler '{name}'; use one of: {', '.join(SAMPLERS)}")


def build_pruner(name: str, *, folds: int, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "asha":
        return AshaPruner(folds=folds, max_epochs=max_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=folds * max_epochs)
    if name == "sh":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=_WILCOXON_P, n_startup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner '{name}'; use one of: {', '.join(PRUNERS)}")


def _grid(space: SearchSpace) -> dict[str, list]:
    """Every param as a finite list of values; grid search cannot take continuous ranges or conditions."""
    grid = {}
    for path, param in space.params.items():
        if getattr(param, "when", None):
            raise UserError(f"sampler grid: param '{path}' is conditional; use tpe or random for this space")
        choices = getattr(param, "choices", None)
        if choices is not None:
            grid[path] = list(choices)
        elif getattr(param, "step", None) is not None and not getattr(param, "log", False):
            values = np.arange(param.low, param.high + param.step / 2, param.step)
            grid[path] = [v.item() for v in values]
        else:
            raise UserError(
                f"sampler grid: param '{path}' is a continuous range; give it a step or choices, or use tpe"
            )
    if not grid:
        raise UserError("sampler grid: the space searches nothing; add params or use another sampler")
    return grid
