"""MLflow tracking of a study: one parent run per study, one child run per trial.

The parent run is created once, when the study is created (under the study's create lock), and its
id is kept in the study's user attrs; every worker on every machine starts its child runs under it
(``mlflow.parentRunId``), so workers never race to create parents.

Tracking URI: ``--tracking-uri``, then ``MLFLOW_TRACKING_URI``, then the embedded local store
``sqlite:///<cwd>/.hpo/mlflow.db`` with artifacts in ``.hpo/mlartifacts`` (MLflow's file store is
deprecated). The study attrs keep the URI with any password masked; a worker then takes the real
one from its own ``MLFLOW_TRACKING_URI``.

Tracking watches, it never steers: an MLflow failure is logged, the trial goes on.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna

from hpo.errors import UserError, short_error
from hpo.mlflow_compat import mlflow_uris
from hpo.optuna_compat import study_storage
from hpo.records import study_record, write_study
from hpo.study import study_lock
from storage import redact
from training.config import RunConfig

__all__ = [
    "DEFAULT_TRACKING_DB",
    "StudyTracking",
    "check_reachable",
    "client",
    "enable_tracking",
    "experiment_id_for",
    "flat_params",
    "mlflow_uris",
    "requested_tracking_uri",
    "resolve_tracking_uri",
    "server_problem",
    "study_tracking",
]

log = logging.getLogger(__name__)

DEFAULT_TRACKING_DB = ".hpo/mlflow.db"


@dataclass(frozen=True)
class StudyTracking:
    """Where a study's runs go; stored in the study's user attrs (the URI with passwords masked)."""

    tracking_uri: str  # redacted: safe to show and to store where the dashboard displays it
    experiment_id: str
    experiment: str
    parent_run_id: str
    storage: str  # the study storage URL, redacted, for tags

    def uri(self) -> str:
        """The real URI: the stored one, or $MLFLOW_TRACKING_URI when the stored one had a password."""
        if "***" not in self.tracking_uri:
            return self.tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI", "")
        if env and redact(env) == self.tracking_uri:
            return env
        raise UserError(
            f"the study tracks to {self.tracking_uri}, whose password is not stored; "
            "set MLFLOW_TRACKING_URI to the full URI on this machine"
        )


def resolve_tracking_uri(flag: str | None = None) -> str:
    """``--tracking-uri``, then ``MLFLOW_TRACKING_URI``, then the local store under ``./.hpo/``."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(DEFAULT_TRACKING_DB).resolve()}"


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def _local_artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside it (``mlartifacts/``); a server decides its own."""
    db = _sqlite_file(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


def server_problem(uri: str, *, timeout: float = 5.0) -> str | None:
    """Why the MLflow server at an http(s) ``uri`` does not answer ``/health``; None when it does.

    Credentials in the URI are sent as basic auth, as MLflow's own client sends them.
    """
    try:
        with urllib.request.urlopen(_health_request(uri), timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return redact(str(getattr(exc, "reason", exc)))


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast with one line instead of MLflow retrying for minutes against a dead server."""
    if uri.startswith(("http://", "https://")):
        if (reason := server_problem(uri, timeout=timeout)) is None:
            return
        raise UserError(
            f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it "
            "(`mlflow server`), or pass --tracking-uri / set MLFLOW_TRACKING_URI to a reachable one"
        )
    db = _sqlite_file(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"MLflow store {redact(uri)}: cannot create {db.parent} ({exc.strerror}); "
                "pass --tracking-uri with a writable location"
            ) from None


def _health_request(uri: str) -> urllib.request.Request:
    """GET <uri>/health; credentials in the URL (as requests, which MLflow uses, accepts) go in a header."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    request = urllib.request.Request(url)
    if parts.username:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    return request


def client(uri: str, *, existing: bool = False):
    """An ``MlflowClient`` for tracking and registry at ``uri``; store errors become UserError.

    ``existing``: only read, so a local store that is not there is an error, not a new empty one.
    """
    from mlflow import MlflowClient

    db = _sqlite_file(uri)
    if existing and db is not None and not db.is_file():
        raise UserError(
            f"MLflow store {redact(uri)} does not exist; pass --tracking-uri (or set "
            "MLFLOW_TRACKING_URI) to the store the model was registered in"
        )
    check_reachable(uri)
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:
        raise UserError(
            f"cannot open MLflow store {redact(uri)} ({short_error(exc)}); "
            "check --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


def experiment_id_for(mlflow_client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created when missing (a concurrent creator wins quietly)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=_local_artifact_root(uri))
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def study_tracking(study: optuna.Study) -> StudyTracking | None:
    raw = study_record(study).get("mlflow")
    return StudyTracking(**raw) if raw else None


def enable_tracking(study: optuna.Study, *, storage_url: str, tracking_uri: str) -> StudyTracking:
    """Give ``study`` its parent run (once): reuse the stored one, or create it under the create lock.

    Raises:
        UserError: the study already tracks to another URI, or MLflow is unreachable.
    """
    wanted = redact(tracking_uri)
    existing = study_tracking(study)
    if existing is None:
        mlflow_client = client(tracking_uri)  # reachability is checked before taking the lock
        with study_lock(storage_url, f"create:{study.study_name}"):
            existing = study_tracking(_reloaded(study))
            if existing is None:
                existing = _create_parent(study, mlflow_client, storage_url, tracking_uri)
    if existing.tracking_uri != wanted:
        raise UserError(
            f"study '{study.study_name}' already tracks to {existing.tracking_uri}; pass that "
            "--tracking-uri (or MLFLOW_TRACKING_URI), or use a new study name"
        )
    return existing


def _reloaded(study: optuna.Study) -> optuna.Study:
    return optuna.load_study(study_name=study.study_name, storage=study_storage(study))


def _create_parent(study: optuna.Study, mlflow_client, storage_url: str, uri: str) -> StudyTracking:
    experiment_id = experiment_id_for(mlflow_client, study.study_name, uri)
    run = mlflow_client.create_run(
        experiment_id,
        run_name=f"study {study.study_name}",
        tags={
            "foldtune.study": study.study_name,
            "foldtune.storage": redact(storage_url),
            "foldtune.kind": "study",
        },
    )
    tracking = StudyTracking(
        tracking_uri=redact(uri),
        experiment_id=experiment_id,
        experiment=study.study_name,
        parent_run_id=run.info.run_id,
        storage=redact(storage_url),
    )
    spec = study_record(study).get("foldtune")
    if spec is not None:
        mlflow_client.log_dict(run.info.run_id, spec, "study_spec.json")
    write_study(study, {"mlflow": asdict(tracking)})
    log.info("study %s tracks to %s (parent run %s)", study.study_name, redact(uri), run.info.run_id)
    return tracking


def flat_params(config: RunConfig) -> dict[str, str]:
    """Every config leaf as an MLflow param: ``optim.lr`` -> ``"0.003"``."""
    return {
        f"{section}.{key}": json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }


def requested_tracking_uri(enabled: bool | None, flag: str | None) -> str | None:
    """``--mlflow/--no-mlflow`` and ``--tracking-uri`` -> the URI to track to, or None for no tracking.

    Unset ``--mlflow`` means on exactly when a URI is given, by flag or ``MLFLOW_TRACKING_URI``.
    """
    if enabled is False:
        return None
    if enabled or flag or os.environ.get("MLFLOW_TRACKING_URI"):
        return resolve_tracking_uri(flag)
    return None
