"""Asynchronous successive halving with promotion (Li et al., MLSys 2020): the rungs and who goes on.

Steps are the objective's fold-aware steps, ``fold.index * max_epochs + epoch``. The rungs sit at
epochs 1, eta, eta**2, ... of the first fold (below its last epoch), then at the end of every fold but
the last, so a trial is judged early while it is cheap and again each time a fold's F1 is in. At a
rung a trial goes on when its credited F1 ranks in the top 1/eta of every trial that reached that
rung; otherwise it is paused, and promoted later if it comes to rank there as more trials arrive.

:class:`AshaPruner` applies the rule inside a study (``--pruner asha``). The objective turns its
"prune" into a pause that keeps the trial's checkpoints, and ``hpo.workers`` promotes paused trials
(``hpo.workers._promotion``). Rungs are named by their 1-based index in :func:`rung_steps`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["ETA", "AshaPruner", "in_top", "rung_steps", "rung_values"]

ETA = 3  # keep the top third at each rung: the reduction factor of Hyperband and ASHA's papers


def rung_steps(*, folds: int, max_epochs: int, eta: int = ETA) -> list[int]:
    """The steps at which a trial is judged, ascending."""
    if folds < 1 or max_epochs < 1 or eta < 2:
        raise ValueError(f"need folds >= 1, max_epochs >= 1, eta >= 2; got {folds}, {max_epochs}, {eta}")
    steps = set()
    epoch = 1
    while epoch < max_epochs:
        steps.add(epoch)
        epoch *= eta
    steps.update((fold + 1) * max_epochs for fold in range(folds - 1))
    return sorted(steps)


def in_top(value: float, rung_values: Sequence[float], *, eta: int = ETA) -> bool:
    """Whether ``value`` ranks in the top 1/eta of ``rung_values`` (which include it); at least the best
    trial at a rung always goes on, and ties go on together."""
    keep = max(1, len(rung_values) // eta)
    return sum(other > value for other in rung_values) < keep


# A failed trial's values come back with its retry, which replays every restored epoch: count them once.
_PEERS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def rung_values(trials: Iterable[FrozenTrial], step: int) -> list[float]:
    """The credited F1 at ``step`` of every trial that reached it (complete, pruned or running)."""
    return [
        t.intermediate_values[step] for t in trials if t.state in _PEERS and step in t.intermediate_values
    ]


class AshaPruner(optuna.pruners.BasePruner):
    """Stops a trial at a rung step when it is not in the top 1/eta of the trials that reached it.

    Between rungs it never stops a trial. Which stop is a pause (checkpoints kept, promotable) is the
    objective's business: this class only says "not now".
    """

    def __init__(self, *, folds: int, max_epochs: int, eta: int = ETA) -> None:
        self.eta = eta
        self.rungs = rung_steps(folds=folds, max_epochs=max_epochs, eta=eta)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        peers = study.get_trials(deepcopy=False, states=_PEERS)
        return not in_top(trial.intermediate_values[step], rung_values(peers, step), eta=self.eta)
