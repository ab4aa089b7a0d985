"""Create or reuse a study; its attrs hold everything a worker on any machine needs to run trials."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import optuna

from hpo.errors import UserError
from hpo.records import StudyRecord, study_record, write_study
from hpo.space import SearchSpace, load_space
from hpo.study._limits import cost_limits
from hpo.study._preflight import preflight
from hpo.study._samplers import DEFAULT_PRUNER, FOLD_LEVEL_PRUNERS, PRUNERS, SAMPLERS, WILCOXON_MIN_FOLDS
from hpo.study._spec import KEEP_PAUSED, StudySpec, spec_differences
from hpo.study._warm import add_seeds, plan_seeds
from storage import artifact_dir, file_path, normalize_url, open_storage, redact, storage_lock
from training.config import DataConfig, RunConfig, apply_overrides
from training.data import is_sample, load_table

__all__ = [
    "METRIC_NAME",
    "artifact_location",
    "budget_lock",
    "create_study",
    "delete_study",
    "load_spec",
    "open_study",
    "storage_url",
    "study_lock",
]

log = logging.getLogger(__name__)

METRIC_NAME = "macro_f1"  # what a trial's value is: the mean over folds of the best-epoch macro-F1
DEFAULT_STORAGE = "sqlite:///.hpo/foldtune.db"
DEFAULT_ARTIFACTS = ".hpo/artifacts"


def study_lock(url: str, name: str) -> AbstractContextManager:
    """A storage-wide mutex; a gRPC proxy offers none, so there budgets and creation are best effort."""
    return nullcontext() if normalize_url(url).startswith("grpc://") else storage_lock(url, name=name)


def budget_lock(url: str, name: str) -> AbstractContextManager:
    """The lock under which workers start, pause and promote the trials of study ``name``: one holder
    at a time reads the counts and changes them."""
    return study_lock(url, f"budget:{name}")


def storage_url(storage: str | None) -> str:
    """Flag, then HPO_STORAGE, then the embedded SQLite file."""
    return storage or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE


def create_study(
    name: str,
    *,
    space: str | Path,
    data: str,
    storage: str | None = None,
    folds: int | None = None,
    sampler: str = "tpe",
    pruner: str = DEFAULT_PRUNER,
    seed: int = 0,
    artifacts: str | Path | None = None,
    plots: bool = True,
    keep_paused: int | None = None,
    starts: bool = True,
    warm_start: Sequence[str] = (),
    warm_storage: str | None = None,
    on_note: Callable[[str], None] = log.info,
    limits: Sequence[str] = (),
) -> tuple[optuna.Study, bool]:
    """Create study ``name`` or reuse it when it was made from the same inputs; returns (study, created).

    ``folds``: k of the k-fold objective; None keeps the space's fixed ``cv.folds``, else the run
    config's default (3). A value given replaces the space's fixed one, in the stored space too.
    ``artifacts`` (default ``.hpo/artifacts``) is the directory for trial plots; its absolute path is
    kept in the study so that every worker and the dashboard use the same one. ``plots=False`` keeps
    no directory: workers render no plots for the dashboard (a tracked study's MLflow runs get them).
    ``keep_paused``: with ``pruner="asha"``, how many paused trials keep their checkpoints at most
    (None: :data:`KEEP_PAUSED`).
    A new study's first trials are the 4 best configs of each earlier study in ``warm_start`` (in
    ``warm_storage``, else the same storage), then the space's starts (``starts=False``: none), then
    the sampler's; finished trials of an earlier study on the same data are added with their results
    (see :mod:`hpo.study._warm`). ``on_note`` gets one line for each thing worth saying about them.
    ``limits``: ``METRIC=VALUE`` caps on what a trial's model may cost (``--limit``, hpo.study._limits).
    """
    if not plots and artifacts is not None:
        raise UserError("--artifacts is where trial plots go; leave it out with --no-plots")
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: unknown '{sampler}'; use one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UserError(f"--pruner: unknown '{pruner}'; use one of: {', '.join(PRUNERS)}")
    keep_paused = KEEP_PAUSED if keep_paused is None else keep_paused
    if keep_paused < 0:
        raise UserError(f"--keep-paused: {keep_paused} must be 0 (keep none, never promote) or more")
    if folds is not None and folds < 2:
        raise UserError(f"--folds: {folds} is too few for k-fold cross-validation; use 2 or more")
    loaded_space = _with_folds(load_space(space), folds, space_arg=str(space))
    source = data if is_sample(data) else str(Path(data).resolve())
    table = load_table(source)
    base = loaded_space.resolve(RunConfig(data=DataConfig(source=source)), {})
    base = apply_overrides(base, {"cv.seed": seed}, where="hpo study create")
    if pruner in FOLD_LEVEL_PRUNERS and base.cv.folds < WILCOXON_MIN_FOLDS:
        log.warning(
            "--pruner %s with %d folds never prunes: it compares whole folds and stops a trial early "
            "only with %d or more; use more --folds or an epoch-level pruner (median, hyperband)",
            pruner,
            base.cv.folds,
            WILCOXON_MIN_FOLDS,
        )
    weights = preflight(loaded_space, base, table, space_arg=str(space), data_arg=data)
    cost = cost_limits(
        limits, loaded_space, base, sampler=sampler, classes=len(table.classes), space_arg=str(space)
    )
    spec = StudySpec(loaded_space, base, table.fingerprint(), sampler, pruner, seed, keep_paused, limits=cost)
    url = storage_url(storage)
    seeds = plan_seeds(  # read before anything is created: a bad earlier study leaves nothing behind
        spec,
        storage=url,
        starts=starts,
        warm_start=warm_start,
        warm_storage=warm_storage,
    )
    backend = open_storage(url)
    # Two `study create` racing on one name: the lock makes the loser see the winner's study, and
    # only the winner seeds it: starts and warm starts are enqueued once.
    with study_lock(url, f"create:{name}"):
        try:
            study = optuna.load_study(study_name=name, storage=backend)
        except KeyError:
            study = optuna.create_study(study_name=name, storage=backend, direction="maximize")
            _name_the_objective(study)
            add_seeds(study, seeds)  # before the spec: no worker runs a sampled trial ahead of them
            record: StudyRecord = {"foldtune": spec.to_dict(), "weights": weights}
            if plots:
                record["artifact_store"] = str(artifact_dir(artifacts or DEFAULT_ARTIFACTS))
            if seeds.copies:
                record["copied"] = len(seeds.copies)
            write_study(study, record)
            for note in seeds.notes:
                on_note(note)
            return study, True
    existing = load_spec(study)
    _check_same(name, existing, spec)
    if study.metric_names is None:  # made before foldtune named it
        _name_the_objective(study)
    stored = artifact_location(study)
    if not plots and stored is not None:
        raise UserError(f"study '{name}' already keeps trial plots in {stored}; leave out --no-plots")
    if artifacts is not None and stored is not None and str(artifact_dir(artifacts)) != stored:
        raise UserError(
            f"study '{name}' already keeps its artifacts in {stored}; leave out --artifacts "
            "or pass that directory"
        )
    if warm_start:
        on_note(f"study '{name}' exists: it was seeded when it was created; nothing is added now")
    return study, False


def artifact_location(study: optuna.Study | optuna.study.FrozenStudy) -> str | None:
    """The study's artifact directory; None for studies made before foldtune kept one."""
    return study_record(study).get("artifact_store")


def open_study(name: str, storage: str | None = None) -> tuple[optuna.Study, StudySpec]:
    study = _load(name, storage_url(storage))
    return study, load_spec(study)


def delete_study(name: str, storage: str | None = None) -> None:
    """Delete study ``name`` and its trials from the storage (its MLflow runs and files stay)."""
    url = storage_url(storage)
    _load(name, url)  # the same one-line error as everywhere for a name that is not there
    optuna.delete_study(study_name=name, storage=open_storage(url))
    log.info("deleted study %s from %s", name, redact(url))


def _load(name: str, url: str) -> optuna.Study:
    path = file_path(normalize_url(url))
    if path is not None and not Path(path).exists():  # opening would leave an empty database behind
        raise UserError(
            f"study '{name}' not found: {redact(url)} does not exist; create it with "
            f"`hpo study create {name} ...` or pass the right --storage"
        )
    backend = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        raise UserError(
            f"study '{name}' not found in {redact(url)} ({_known(backend)}); create it with "
            f"`hpo study create {name} ...` or pass the right --storage"
        ) from None


def _known(backend) -> str:
    names = sorted(s.study_name for s in backend.get_all_studies())
    if not names:
        return "it holds no study"
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    return f"studies there: {shown}"


def load_spec(study: optuna.Study) -> StudySpec:
    raw = study_record(study).get("foldtune")
    if raw is None:
        raise UserError(
            f"study '{study.study_name}' was not created by `hpo study create` "
            "(no foldtune spec in its attrs); create a new study with hpo"
        )
    return StudySpec.from_dict(raw, where=f"study '{study.study_name}'")


def _name_the_objective(study: optuna.Study) -> None:
    """The dashboard, trials_dataframe and Optuna's plots call the value ``macro_f1``, not "Objective 0"."""
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAME])


def _with_folds(space: SearchSpace, folds: int | None, *, space_arg: str) -> SearchSpace:
    """The space with ``--folds`` as its fixed ``cv.folds``, so the study stores what its trials use."""
    if folds is None:
        return space
    if "cv.folds" in space.params:
        raise UserError(
            f"--folds {folds}: the space {space_arg} searches cv.folds; leave out --folds, or fix "
            "cv.folds in the space"
        )
    return space.model_copy(update={"fixed": {**space.fixed, "cv.folds": folds}})


def _check_same(name: str, existing: StudySpec, wanted: StudySpec) -> None:
    """Refuse a study of the same name made from other inputs, naming each input that differs."""
    if differences := spec_differences(existing.to_dict(), wanted.to_dict()):
        raise UserError(
            f"study '{name}' already exists with {'; '.join(differences)}; use a new study name, or "
            "the inputs it was created with"
        )
