"""Asynchronous successive halving with promotion (Li et al., MLSys 2020): the rungs and who goes on.

Steps are the objective's fold-aware steps, ``fold.index * max_epochs + epoch``. The rungs sit at
epochs 1, eta, eta**2, ... of the first fold (below its last epoch), then at the end of every fold but
the last, so a trial is judged early while it is cheap and again each time a fold's F1 is in. At a
rung a trial goes on when its credited F1 ranks in the top 1/eta of every trial that reached that
rung; otherwise it is paused, and promoted later if it comes to rank there as more trials arrive.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ETA", "in_top", "rung_steps"]

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
