"""Studies: create or reuse one from a space and a dataset, open it anywhere, read its status.

A study's user attrs hold everything a worker on any machine needs (the :class:`StudySpec`), so
``hpo worker NAME`` needs only the study name and the storage URL.
"""

from hpo.study._asha import ETA, AshaPruner, in_top, rung_steps, rung_values
from hpo.study._create import (
    DEFAULT_ARTIFACTS,
    artifact_location,
    budget_lock,
    create_study,
    delete_study,
    load_spec,
    open_study,
    storage_url,
    study_lock,
)
from hpo.study._limits import (
    BEFORE_TRAINING,
    LIMIT_METRICS,
    best_feasible,
    constraint_values,
    is_feasible,
    over_limit,
    parse_limits,
)
from hpo.study._samplers import (
    DEFAULT_PRUNER,
    FOLD_LEVEL_PRUNERS,
    PRUNERS,
    SAMPLERS,
    WILCOXON_MIN_FOLDS,
    build_pruner,
    build_sampler,
)
from hpo.study._spec import KEEP_PAUSED, StudySpec
from hpo.study._status import (
    FailureGroup,
    RunningTrial,
    StudyStatus,
    StudySummary,
    study_status,
    study_summaries,
    trial_rows,
)

__all__ = [
    "BEFORE_TRAINING",
    "DEFAULT_ARTIFACTS",
    "DEFAULT_PRUNER",
    "ETA",
    "FOLD_LEVEL_PRUNERS",
    "KEEP_PAUSED",
    "LIMIT_METRICS",
    "PRUNERS",
    "SAMPLERS",
    "WILCOXON_MIN_FOLDS",
    "AshaPruner",
    "FailureGroup",
    "RunningTrial",
    "StudySpec",
    "StudyStatus",
    "StudySummary",
    "artifact_location",
    "best_feasible",
    "budget_lock",
    "build_pruner",
    "build_sampler",
    "constraint_values",
    "create_study",
    "delete_study",
    "in_top",
    "is_feasible",
    "load_spec",
    "open_study",
    "over_limit",
    "parse_limits",
    "rung_steps",
    "rung_values",
    "storage_url",
    "study_lock",
    "study_status",
    "study_summaries",
    "trial_rows",
]
