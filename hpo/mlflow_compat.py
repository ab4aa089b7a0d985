"""The MLflow internals foldtune relies on, in one place: an MLflow upgrade that moves one touches here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["LOGGED_MODEL_VERSIONS_TAG", "mlflow_uris"]

# The logged model's tag listing its registered versions, ``[{"name": ..., "version": ...}]``: what
# MLflow 3's UI shows on the model's page. A tracking server writes it when a version is created with
# a model id; a local store (and MlflowClient.create_model_version) does not.
LOGGED_MODEL_VERSIONS_TAG = "mlflow.modelVersions"


@contextlib.contextmanager
def mlflow_uris(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``log_model``, ``register_model``) at ``uri`` for a block.

    ``mlflow.set_tracking_uri`` sets module globals and also writes ``MLFLOW_TRACKING_URI`` (and the
    registry its variable) into the environment. MLflow has no public way to read the globals back,
    so they are saved from its private modules and restored, with the environment, afterwards.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
