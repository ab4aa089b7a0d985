"""The MLflow model registry: register a version, move the ``champion`` alias, fetch a model.

The alias moves only when the new version's CV macro-F1 beats the current champion's (or when
forced); the compare-and-move runs under a storage-wide lock of the study's storage, so two
retrains finishing together cannot both believe they won.
"""

from __future__ import annotations

import json
import logging
import math
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import UserError, short_error
from hpo.mlflow_compat import LOGGED_MODEL_VERSIONS_TAG
from hpo.models._bundle import find_bundle
from hpo.tracking import CV_F1, client, mlflow_uris, resolve_tracking_uri
from storage import redact

__all__ = ["CHAMPION", "Registered", "download_model", "parse_model_uri", "register_version"]

log = logging.getLogger(__name__)

CHAMPION = "champion"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    cv_f1: float
    champion: bool  # whether the alias now points at this version
    previous_version: str | None  # the champion before this registration
    previous_cv_f1: float | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias, version)."""
    match = _MODELS_URI.match(ref)
    if match is None:
        raise UserError(
            f"--model: '{ref}' is not models:/NAME@ALIAS or models:/NAME/VERSION "
            "(e.g. models:/mask@champion); or give a local model directory"
        )
    return match["name"], match["alias"], match["version"]


def register_version(
    model_uri: str,
    name: str,
    *,
    run_id: str,
    model_id: str | None,
    cv_f1: float,
    tags: dict[str, str],
    tracking_uri: str,
    force: bool = False,
    lock: AbstractContextManager | None = None,
) -> Registered:
    """Register ``model_uri`` as a new version of ``name``; make it champion if it beats the current one."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.create_registered_model(name, tags={"foldtune": "true"})
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise UserError(f"cannot create registered model '{name}': {short_error(exc)}") from None
    # MLflow resolves a ``models:/<model id>`` source through its global tracking URI, not the client's
    with mlflow_uris(tracking_uri):
        version = mlflow_client.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags={**tags, CV_F1: repr(float(cv_f1))},  # the version's tag, named as the runs' metric
            model_id=model_id,
        ).version
    if model_id is not None:
        _link_logged_model(mlflow_client, model_id, name, str(version))
    with lock or nullcontext():
        current = _champion(mlflow_client, name)
        previous_f1 = _cv_f1(current) if current is not None else None
        wins = current is None or previous_f1 is None or cv_f1 > previous_f1
        if force or wins:
            mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
        decision = "first" if current is None else "better" if wins else "forced" if force else "kept"
        mlflow_client.set_model_version_tag(name, str(version), "champion_decision", decision)
    champion = force or wins
    log.info(
        "registered %s version %s (cv_f1 %.4f); champion: %s",
        name,
        version,
        cv_f1,
        f"moved from {current.version}" if champion and current else "moved" if champion else "kept",
    )
    return Registered(
        name=name,
        version=str(version),
        cv_f1=float(cv_f1),
        champion=champion,
        previous_version=current.version if current is not None else None,
        previous_cv_f1=previous_f1,
    )


def _link_logged_model(mlflow_client, model_id: str, name: str, version: str) -> None:
    """List the version on its logged model, as MLflow's UI reads it (the version already names the
    model by its source and model id, and its run); a lost link is a warning, not a lost version."""
    try:
        tags = mlflow_client.get_logged_model(model_id).tags
        listed = json.loads(tags.get(LOGGED_MODEL_VERSIONS_TAG) or "[]")
        if not any(e.get("name") == name and str(e.get("version")) == version for e in listed):
            value = json.dumps([*listed, {"name": name, "version": version}])
            mlflow_client.set_logged_model_tags(model_id, {LOGGED_MODEL_VERSIONS_TAG: value})
    except Exception as exc:
        reason = short_error(exc)
        log.warning("logged model %s does not list %s version %s: %s", model_id, name, version, reason)


def _champion(mlflow_client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _cv_f1(version) -> float | None:
    try:
        value = float(version.tags.get(CV_F1, "nan"))
    except ValueError:
        return None
    return None if math.isnan(value) else value


def download_model(ref: str, dest: Path, *, tracking_uri: str | None = None) -> Path:
    """Download the MLflow model ``ref`` into ``dest``; returns its bundle directory."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    parsed = parse_model_uri(ref) if ref.startswith("models:/") else None  # before touching MLflow
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri, existing=True)
    source = ref
    if parsed is not None:
        name, alias, version = parsed
        try:
            found = (
                mlflow_client.get_model_version_by_alias(name, alias)
                if alias
                else mlflow_client.get_model_version(name, str(version))
            )
            source = mlflow_client.get_model_version_download_uri(name, found.version)
        except MlflowException as exc:
            raise UserError(
                f"--model: {ref} not found in {redact(uri)} ({short_error(exc)}); register it with "
                f"`hpo retrain STUDY --registered-model {name}`, or pass the --tracking-uri it lives in"
            ) from None
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=uri)
    except MlflowException as exc:
        raise UserError(f"--model: cannot download {ref} from {redact(uri)} ({short_error(exc)})") from None
    return find_bundle(Path(local))
