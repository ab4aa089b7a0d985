"""Trial observers: side channels (MLflow runs, dashboard artifacts) that watch trials without steering them.

The objective calls every observer at trial start, each epoch, each finished fold and trial end. An
observer failing is logged and ignored: tracking must never fail or prune a trial.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from training.config import RunConfig

if TYPE_CHECKING:  # torch and timm: only trial processes load them, and they have by now
    from training.cv import Fold, FoldResult
    from training.loop import EpochStats

__all__ = ["ObserverGroup", "TrialObserver"]

log = logging.getLogger(__name__)


class TrialObserver:
    """Override what you need; every hook defaults to doing nothing."""

    def on_trial_start(self, trial: optuna.Trial, config: RunConfig) -> None: ...

    def on_epoch(self, trial: optuna.Trial, fold: Fold, stats: EpochStats) -> None: ...

    def on_fold(self, trial: optuna.Trial, result: FoldResult) -> None: ...

    def on_trial_end(
        self, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None
    ) -> None: ...


class ObserverGroup(TrialObserver):
    """Fans each hook out to several observers, isolating their failures."""

    def __init__(self, observers: Sequence[TrialObserver] = ()) -> None:
        self.observers = list(observers)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args)
            except Exception as exc:
                log.warning("%s.%s failed (ignored): %s", type(observer).__name__, hook, exc)

    def on_trial_start(self, trial, config) -> None:
        self._each("on_trial_start", trial, config)

    def on_epoch(self, trial, fold, stats) -> None:
        self._each("on_epoch", trial, fold, stats)

    def on_fold(self, trial, result) -> None:
        self._each("on_fold", trial, result)

    def on_trial_end(self, trial, state, value, reason) -> None:
        self._each("on_trial_end", trial, state, value, reason)
