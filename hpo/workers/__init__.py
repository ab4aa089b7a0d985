"""Workers: one process per device pulls trials of a study until its study-wide budget is met.

    >>> run_workers("mask", storage="postgresql://...", devices="0,1", n_trials=200)  # doctest: +SKIP

Each process runs :class:`Objective` (the pruned, group-aware k-fold objective) through a
:class:`BudgetedStudy`, whose ``ask`` enforces the budget across processes and machines.

The names load on first use: the pool process (``run_workers``) starts its trial processes without
importing torch, timm and albumentations itself; only the trial processes do.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
