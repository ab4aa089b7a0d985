"""Workers: one process per device pulls trials of a study until its study-wide budget is met.

    >>> run_workers("mask", storage="postgresql://...", devices="0,1", n_trials=200)  # doctest: +SKIP

Each process runs :class:`Objective` (the pruned, group-aware k-fold objective) through a
:class:`BudgetedStudy`, whose ``ask`` enforces the budget across processes and machines.
"""

from hpo.workers._budget import HEARTBEAT_SECONDS, BudgetedStudy, BudgetReached
from hpo.workers._devices import Slot, gpu_count, parse_devices
from hpo.workers._objective import Objective, root_trial_number
from hpo.workers._observers import observers_for
from hpo.workers._pool import STOP_GRACE_SECONDS, PoolResult, PullArgs, pull_trials, run_workers

__all__ = [
    "HEARTBEAT_SECONDS",
    "STOP_GRACE_SECONDS",
    "BudgetReached",
    "BudgetedStudy",
    "Objective",
    "PoolResult",
    "PullArgs",
    "Slot",
    "gpu_count",
    "observers_for",
    "parse_devices",
    "pull_trials",
    "root_trial_number",
    "run_workers",
]
