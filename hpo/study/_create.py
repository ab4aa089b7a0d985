"""Create or reuse a study; its attrs hold everything a worker on any machine needs to run trials."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import optuna

from hpo.errors import UserError
from hpo.records import StudyRecord, study_record, write_study
from hpo.space import SearchSpace, load_space
from hpo.study._limits import cost_limits
from hpo.study._samplers import FOLD_LEVEL_PRUNERS, PRUNERS, SAMPLERS, WILCOXON_MIN_FOLDS
from hpo.study._spec import StudySpec, spec_differences
from storage import artifact_dir, file_path, normalize_url, open_storage, redact, storage_lock
from training.config import ConfigError, DataConfig, RunConfig, apply_overrides
from training.data import ImageTable, is_sample, load_table

__all__ = [
    "METRIC_NAME",
    "artifact_location",
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
    pruner: str = "median",
    seed: int = 0,
    artifacts: str | Path | None = None,
    plots: bool = True,
    limits: Sequence[str] = (),
) -> tuple[optuna.Study, bool]:
    """Create study ``name`` or reuse it when it was made from the same inputs; returns (study, created).

    ``folds``: k of the k-fold objective; None keeps the space's fixed ``cv.folds``, else the run
    config's default (3). A value given replaces the space's fixed one, in the stored space too.
    ``artifacts`` (default ``.hpo/artifacts``) is the directory for trial plots; its absolute path is
    kept in the study so that every worker and the dashboard use the same one. ``plots=False`` keeps
    no directory: workers render no plots for the dashboard (a tracked study's MLflow runs get them).
    ``limits``: ``METRIC=VALUE`` caps on what a trial's model may cost (``--limit``, hpo.study._limits).
    """
    if not plots and artifacts is not None:
        raise UserError("--artifacts is where trial plots go; leave it out with --no-plots")
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: unknown '{sampler}'; use one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UserError(f"--pruner: unknown '{pruner}'; use one of: {', '.join(PRUNERS)}")
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
    _check_trials_can_run(loaded_space, base, table, space_arg=str(space), data_arg=data)
    cost = cost_limits(
        limits, loaded_space, base, sampler=sampler, classes=len(table.classes), space_arg=str(space)
    )
    weights = _fetch_weights(loaded_space, base, space_arg=str(space))
    spec = StudySpec(loaded_space, base, table.fingerprint(), sampler, pruner, seed, limits=cost)
    url = storage_url(storage)
    backend = open_storage(url)
    # Two `study create` racing on one name: the lock makes the loser see the winner's study.
    with study_lock(url, f"create:{name}"):
        try:
            study = optuna.load_study(study_name=name, storage=backend)
        except KeyError:
            study = optuna.create_study(study_name=name, storage=backend, direction="maximize")
            _name_the_objective(study)
            record: StudyRecord = {"foldtune": spec.to_dict(), "weights": weights}
            if plots:
                record["artifact_store"] = str(artifact_dir(artifacts or DEFAULT_ARTIFACTS))
            write_study(study, record)
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


def _check_trials_can_run(
    space: SearchSpace, base: RunConfig, table: ImageTable, *, space_arg: str, data_arg: str
) -> None:
    """Refuse inputs on which every trial would fail (workers would fail trial after trial, never
    reaching the budget): an unknown model or one that takes no dropout the space sets, images
    smaller than it needs, too few images or groups per class for the folds."""
    import torch

    from training.folds import make_folds
    from training.models import build_model, check_image_size

    smallest = min(space.values_of("data.image_size", base))
    # the highest dropout rates a trial can draw: a model without dropout (or drop path) rejects any
    drop = {key: max(space.values_of(key, base)) for key in ("model.drop_rate", "model.drop_path_rate")}
    for name in space.values_of("model.name", base):
        overrides = {"model.name": name, "model.pretrained": False, **drop}
        cfg = apply_overrides(base, overrides, where=f"--space {space_arg}")
        try:
            with torch.device("meta"):  # the architecture only: no memory, no weights
                model = build_model(cfg.model, len(table.classes))
            check_image_size(model, name, smallest)
        except ConfigError as exc:
            raise ConfigError(f"--space {space_arg}: {exc}") from None
    for folds in space.values_of("cv.folds", base):
        try:
            make_folds(table.labels, table.groups, folds, base.cv.seed, classes=table.classes)
        except ConfigError as exc:
            raise ConfigError(f"--data {data_arg} with {folds} folds: {exc}") from None


def _fetch_weights(space: SearchSpace, base: RunConfig, *, space_arg: str) -> list[dict]:
    """The pretrained weights trials can load, put in the cache now (downloaded here, once, when
    they are not there) so that a worker finds them all and runs its trials offline."""
    from training.weights import fetch, weights_for

    found = []
    for name in space.pretrained_models(base):
        try:
            fetched = fetch(weights_for(name), fix=f"hpo weights fetch --space {space_arg}")
        except ConfigError as exc:
            raise ConfigError(f"--space {space_arg}: {exc}") from None
        if fetched.downloaded:
            log.info("downloaded the pretrained weights of %s to %s", name, fetched.path)
        found.append(fetched.weights.to_dict())
    return found


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
