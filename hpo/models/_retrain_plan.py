"""``hpo retrain``'s first step: the options, checked, and the plan they make with the study.

The plan fixes, before any training, which trials retrain, with which configs, and where the run
goes in MLflow (under the study's run when the study tracks to the same URI); it fails fast when
MLflow is unreachable or a trial's data is not the study's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import UserError
from hpo.models._oof import BIAS_CHOICES
from hpo.records import trial_record
from hpo.study import StudySpec, is_feasible, open_study, storage_url
from hpo.tracking import client, experiment_id_for, resolve_tracking_uri, study_tracking
from storage import redact
from training.batches import load_data
from training.config import RunConfig, apply_overrides
from training.data import is_sample

__all__ = ["MODES", "RetrainOptions", "RetrainPlan", "Target", "plan", "select_trials"]

log = logging.getLogger(__name__)

MODES = ("folds", "full")


@dataclass(frozen=True, kw_only=True)
class RetrainOptions:
    """Everything ``hpo retrain`` takes besides the study's name (the CLI's flags, same defaults)."""

    storage: str | None = None  # the study's storage URL; None: $HPO_STORAGE, then the default
    top_k: int = 1  # candidates: the K best complete trials with distinct params
    trial: int | None = None  # retrain this trial number instead of the best
    mode: str = "folds"  # folds: the k fold models as an ensemble | full: one model on all images
    seeds: int = 1  # each trial trains with seeds budget.seed, +1, ...; a trial's seeds share its weight
    bias: str = "auto"  # the per-class bias: auto (kept when it beats the plain blend out of fold) | on | off
    registered_model: str | None = None  # None: the study's name
    tracking_uri: str | None = None  # None: the study's, then $MLFLOW_TRACKING_URI, then the local store
    force: bool = False  # move the champion alias even when the CV F1 is lower
    data: str | None = None  # where the study's data lives on this machine
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode: unknown '{self.mode}'; use one of: {', '.join(MODES)}")
        if self.seeds < 1:
            raise UserError(f"--seeds: {self.seeds} must be at least 1")
        if self.bias not in BIAS_CHOICES:
            raise UserError(f"--bias: unknown '{self.bias}'; use one of: {', '.join(BIAS_CHOICES)}")


@dataclass(frozen=True)
class Target:
    """Where the retrain run goes: under the study's run when the study tracks to this URI."""

    uri: str
    client: Any  # MlflowClient
    experiment_id: str
    parent_run_id: str | None


@dataclass(frozen=True)
class RetrainPlan:
    """What retrains, with which configs, and where it is logged and registered."""

    name: str  # the study's
    options: RetrainOptions
    storage: str  # the study's storage URL (secret: redact before showing it)
    study: optuna.Study
    spec: StudySpec
    trials: list[FrozenTrial]  # best first
    configs: list[RunConfig]  # each trial's stored config, on this machine's data and device
    twins: dict[int, int]  # skipped trial -> the better trial with its params
    target: Target

    @property
    def numbers(self) -> list[int]:
        return [t.number for t in self.trials]

    @property
    def cv_f1(self) -> float:
        """The version's CV macro-F1: the study's, of the best trial (what decides the champion)."""
        return float(self.trials[0].value or 0.0)

    @property
    def registered_model(self) -> str:
        return self.options.registered_model or self.name

    @property
    def label(self) -> str:
        return f"trial-{self.numbers[0]}" if len(self.trials) == 1 else f"top{len(self.trials)}"

    @property
    def title(self) -> str:
        """``mask trial-3 (folds)``, ``mask top2 (folds, 2 seeds)``: how its figures read."""
        seeds = f", {self.options.seeds} seeds" if self.options.seeds > 1 else ""
        return f"{self.name} {self.label} ({self.options.mode}{seeds})"

    def tags(self) -> dict[str, str]:
        """The run's ``foldtune.*`` tags, which the registered version carries too."""
        return {
            "foldtune.study": self.name,
            "foldtune.kind": "retrain",
            "foldtune.trials": ",".join(map(str, self.numbers)),
            "foldtune.mode": self.options.mode,
            "foldtune.seeds": str(self.options.seeds),
            "foldtune.storage": redact(self.storage),
        }


def plan(name: str, options: RetrainOptions) -> RetrainPlan:
    """Check ``options``, open study ``name``, choose its trials and the MLflow target; no training."""
    options.check()
    url = storage_url(options.storage)
    study, spec = open_study(name, url)
    twins: dict[int, int] = {}
    trials = select_trials(study, top_k=options.top_k, trial=options.trial, twins=twins)
    for skipped, better in twins.items():
        log.info("trial %d skipped: its params repeat trial %d's", skipped, better)
    target = _target(study, options.tracking_uri)  # fails fast, before any training, when MLflow is down
    configs = [_trial_config(t, spec, data=options.data, device=options.device) for t in trials]
    return RetrainPlan(name, options, url, study, spec, trials, configs, twins, target)


def select_trials(
    study: optuna.Study, *, top_k: int = 1, trial: int | None = None, twins: dict[int, int] | None = None
) -> list[FrozenTrial]:
    """The ``top_k`` best complete trials with distinct params, or trial number ``trial``.

    A trial whose params repeat a better one's would only add a copy to the ensemble: it is skipped,
    and noted in ``twins`` (skipped trial -> the better one). Under a study's cost limits (``--limit``)
    only feasible trials are chosen; a trial named by number is taken as asked, with a warning.
    """
    if trial is not None:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not found:
            raise UserError(
                f"--trial: study '{study.study_name}' has no trial {trial}; "
                f"see `hpo status {study.study_name}`"
            )
        if found[0].state != TrialState.COMPLETE:
            raise UserError(
                f"--trial: trial {trial} of '{study.study_name}' is {found[0].state.name.lower()}, not "
                "complete, so it has no CV F1; pick a complete trial (see `hpo status`)"
            )
        chosen = found
        if not is_feasible(found[0]):
            log.warning("trial %d is over the study's cost limits; retraining it as asked", trial)
    else:
        if top_k < 1:
            raise UserError(f"--top-k: {top_k} must be at least 1")
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise UserError(
                f"study '{study.study_name}' has no completed trials yet; run "
                f"`hpo worker {study.study_name}` until one completes, then retrain"
            )
        complete = [t for t in complete if is_feasible(t)]
        if not complete:
            raise UserError(
                f"study '{study.study_name}': no completed trial is within its cost limits (see "
                f"`hpo status {study.study_name}`); run more trials, or pick one with --trial N"
            )
        chosen, seen = [], {}
        for t in sorted(complete, key=lambda t: (-(t.value or 0.0), t.number)):
            key = repr(sorted(t.params.items()))
            if key in seen:
                if twins is not None and len(chosen) < top_k:
                    twins[t.number] = seen[key]
                continue
            seen[key] = t.number
            if len(chosen) < top_k:
                chosen.append(t)
    for t in chosen:
        if "config" not in trial_record(t):
            raise UserError(
                f"trial {t.number} of '{study.study_name}' has no stored config; retrain another trial"
            )
    return chosen


def _target(study: optuna.Study, flag: str | None) -> Target:
    """``--tracking-uri``, then the study's, then ``MLFLOW_TRACKING_URI``, then the local store."""
    tracking = study_tracking(study)
    uri = flag or (tracking.uri() if tracking else None) or resolve_tracking_uri()
    mlflow_client = client(uri)
    if tracking is not None and tracking.tracking_uri == redact(uri):
        return Target(uri, mlflow_client, tracking.experiment_id, tracking.parent_run_id)
    return Target(uri, mlflow_client, experiment_id_for(mlflow_client, study.study_name, uri), None)


def _trial_config(t: FrozenTrial, spec: StudySpec, *, data: str | None, device: str) -> RunConfig:
    config = RunConfig.from_dict(trial_record(t)["config"], where=f"trial {t.number}")
    overrides: dict[str, Any] = {"budget.device": device}
    if data:
        overrides["data.source"] = data if is_sample(data) else str(Path(data).resolve())
    config = apply_overrides(config, overrides, where="hpo retrain")
    spec.check_data(load_data(config.data).table, config.data.source)
    return config
