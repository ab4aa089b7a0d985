"""MLflow *models from code* entry point: ``log_model(python_model=<this file>)`` copies it into the
model and runs it at load time, so the logged model holds code, not a pickle."""

import mlflow

from hpo.models._pyfunc import BundleModel

mlflow.models.set_model(BundleModel())
