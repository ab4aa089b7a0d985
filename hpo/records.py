"""What foldtune keeps in Optuna's user attrs, with the key names defined once.

The objective and the worker write a trial's record while it runs; ``hpo status``, ``hpo retrain``,
tracking and the dashboard read it back. ``hpo study create`` and the workers write the study's.
Values are JSON (Optuna stores attrs as JSON), so any process on any machine reads them alike.

    >>> write_trial(trial, {"host": "gpu-3", "device": "cuda:0"})  # doctest: +SKIP
    >>> trial_record(frozen).get("fold_f1", [])                    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, TypedDict, cast

import optuna
from optuna.trial import FrozenTrial

__all__ = [
    "COST_KEYS",
    "ORIGIN_KINDS",
    "SAMPLED",
    "Progress",
    "StudyRecord",
    "TrialRecord",
    "copied_origin",
    "origin_kind",
    "start_origin",
    "study_record",
    "trial_record",
    "unbudgeted",
    "warm_origin",
    "write_study",
    "write_trial",
]

# Where a trial came from (its ``origin``): "start:<i>" (the space's i-th start, or the i-th start
# of the shipped space that lent its starts), "warm:<study>#<n>" (trial n of an earlier study, run
# again), "sampled" (the sampler's), "copied:<study>#<n>" (trial n of an earlier study on the same
# data, added with its result and never run here).
SAMPLED = "sampled"
ORIGIN_KINDS = ("warm", "start", "sampled", "copied")  # the order a study's trials come in


class Progress(TypedDict):
    """Where a running trial is: 1-based fold and epoch, and how many of each there are at most."""

    fold: int
    folds: int
    epoch: int
    epochs: int


class TrialRecord(TypedDict, total=False):
    """A trial's user attrs. Every key is optional: a trial holds what it got to before it ended."""

    config: dict[str, Any]  # the resolved RunConfig (RunConfig.to_dict()): the trial can be re-run exactly
    host: str  # machine (or pod) the trial ran on
    device: str  # device label of the worker process: "cpu#0", "cuda:1"
    worker: str  # the worker process, unique in the fleet: "host:pid/device"
    progress: Progress  # updated every epoch while the trial runs
    fold_f1: list[float]  # best-epoch macro-F1 of each finished fold, fold 1 first
    epochs: list[int]  # epochs trained per fold (a pruned fold counts its epochs so far)
    best_epochs: list[int]  # best epoch per finished fold: what `hpo retrain --mode full` trains for
    resumed_epochs: list[int]  # per finished fold, epochs taken from an interrupted run's checkpoint
    f1_std: float  # population std of fold_f1
    seconds: float  # training + validation time over all folds
    images_per_sec: float  # training throughput over all folds
    threads: int  # torch intra-op threads the trial ended with (CPU workers on a host share its cores)
    oof_f1: float  # macro-F1 of the out-of-fold predictions of all folds together
    # what the trial's model costs to serve (training.cost), measured before its first epoch
    params_m: float  # parameters, millions
    gflops: float  # forward FLOPs of one image at the study's image size, billions (multiply-add = 2)
    latency_ms: float  # median batch-1 forward time on cost_device
    throughput: float  # forward images/s at the trial's batch size on cost_device
    cost_device: str  # where latency_ms and throughput were measured: "cpu (2 threads)", "cuda:0 (...)"
    fail_reason: str  # why the trial FAILED (redacted)
    prune_reason: str  # why the trial was PRUNED
    paused: dict[str, int] | None  # --pruner asha: {"rung": 1-based rung, "step": step} where it paused
    continues: int  # the paused trial this one continues from its last checkpoint (--pruner asha)
    origin: str  # where the trial came from: start:<i>, warm:<study>#<n>, sampled, copied:<study>#<n>


# The TrialRecord keys of a model's cost, as `hpo study trials`, MLflow and the dashboard show them.
COST_KEYS = ("params_m", "gflops", "latency_ms", "throughput")


class StudyRecord(TypedDict, total=False):
    """A study's user attrs."""

    foldtune: dict[str, Any]  # the StudySpec (hpo.study.StudySpec.to_dict())
    artifact_store: str  # absolute directory of the trial plots (dashboard artifacts)
    mlflow: dict[str, Any]  # where the study's runs go (hpo.tracking.StudyTracking), URI redacted
    budget: int  # the study-wide number of finished trials the workers run to
    workers: int  # worker processes that joined the study: the next one is number `workers`
    weights: list[dict[str, Any]]  # pretrained weights trials can load (training.weights.Weights.to_dict())
    promoted: list[int]  # paused trials a continuation was queued for (--pruner asha)
    released: list[int]  # paused trials whose checkpoints were deleted: never promoted
    copied: int  # finished trials copied from earlier studies at creation: outside the budget


def start_origin(index: int) -> str:
    return f"start:{index}"


def warm_origin(study: str, number: int) -> str:
    return f"warm:{study}#{number}"


def copied_origin(study: str, number: int) -> str:
    return f"copied:{study}#{number}"


def origin_kind(origin: str) -> str:
    """``"warm"`` for ``"warm:old#3"``: what ``hpo status`` counts trials by."""
    return origin.split(":", 1)[0]


def unbudgeted(record: StudyRecord) -> int:
    """Finished trials the study's budget does not count: those copied from earlier studies (they ran
    there), and paused trials a continuation took over (a pause and its continuation count once)."""
    return record.get("copied", 0) + len(record.get("promoted", []))


def trial_record(trial: FrozenTrial | optuna.Trial) -> TrialRecord:
    return cast(TrialRecord, trial.user_attrs)


def study_record(study: optuna.Study | optuna.study.FrozenStudy) -> StudyRecord:
    return cast(StudyRecord, study.user_attrs)


def write_trial(trial: optuna.Trial, record: TrialRecord) -> None:
    for key, value in record.items():
        trial.set_user_attr(key, value)


def write_study(study: optuna.Study, record: StudyRecord) -> None:
    for key, value in record.items():
        study.set_user_attr(key, value)
