"""Workers: one process per device pulls trials of a study until its study-wide budget is met.

    >>> run_workers("mask", storage="postgresql://...", devices="0,1", n_trials=200)  # doctest: +SKIP

Each process runs :class:`Objective` (the pruned, group-aware k-fold objective) through a
:class:`BudgetedStudy`, whose ``ask`` enforces the budget across processes and machines.

The names load on first use: the pool process (``run_workers``) starts its trial processes without
importing torch, timm and albumentations itself; only the trial processes do.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # public name -> the private module that defines it
    "HEARTBEAT_SECONDS": "hpo.workers._budget",
    "BudgetReached": "hpo.workers._budget",
    "BudgetedStudy": "hpo.workers._budget",
    "Slot": "hpo.workers._devices",
    "gpu_count": "hpo.workers._devices",
    "parse_devices": "hpo.workers._devices",
    "Objective": "hpo.workers._objective",
    "root_trial_number": "hpo.workers._objective",
    "observers_for": "hpo.workers._observers",
    "STOP_GRACE_SECONDS": "hpo.workers._pool",
    "PoolResult": "hpo.workers._pool",
    "PullArgs": "hpo.workers._pool",
    "pull_trials": "hpo.workers._pool",
    "run_workers": "hpo.workers._pool",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hpo.workers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
