"""The bundle's MLflow pyfunc face: ``mlflow.pyfunc.load_model(uri).predict(df, params={"tta": "hflip"})``;
params ``tta``, ``vote`` and ``bias`` (false: skip the class bias) default to the bundle's own.

:class:`BundleModel` loads a bundle from the model's artifacts; it is logged as *models from code*
(``_pyfunc_entry.py``), so the MLflow model holds no pickle.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from hpo.errors import UserError
from hpo.models._bundle import Bundle, load_bundle
from hpo.models._ensemble import Ensemble
from training.cache import decode_image

if TYPE_CHECKING:  # a served model loads this module: it needs nothing of tracking
    from hpo.tracking import RunLog

__all__ = ["BundleModel", "log_bundle_model", "model_signature"]

_ENTRY = Path(__file__).with_name("_pyfunc_entry.py")  # the models-from-code script


def model_signature(bundle: Bundle):
    """Input: a DataFrame with an ``image`` column (encoded image bytes) or a ``path`` column;
    output: ``label`` plus ``prob_<class>``; params: ``tta``, ``vote`` and ``bias``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)]
        ),
        outputs=Schema(
            [ColSpec("string", "label"), *(ColSpec("double", f"prob_{c}") for c in bundle.classes)]
        ),
        params=ParamSchema(
            [
                ParamSpec("tta", "string", bundle.tta),
                ParamSpec("vote", "string", bundle.vote),
                ParamSpec("bias", "boolean", True),  # a bundle without a bias ignores it
            ]
        ),
    )


class BundleModel(PythonModel):
    """``mlflow.pyfunc`` wrapper: ``load_model(uri).predict(df, params={"tta": "hflip"})``.

    ``df`` has an ``image`` column of encoded image bytes (PNG, JPEG, ...) or a ``path`` column of
    image files; images are decoded and resized like the training cache does.
    """

    def load_context(self, context) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])
        self.ensemble = Ensemble(self.bundle, device=os.environ.get("HPO_PREDICT_DEVICE", "auto"))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        params = params or {}
        if "image" in model_input.columns and model_input["image"].notna().all():
            sources = [io.BytesIO(_as_bytes(b)) for b in model_input["image"]]
        elif "path" in model_input.columns:
            sources = [Path(p) for p in model_input["path"]]
        else:
            raise UserError("model input needs an 'image' column (encoded image bytes) or a 'path' column")

        def images_at(size: int) -> np.ndarray:
            return np.stack([decode_image(s, size) for s in _rewound(sources)]).astype(np.uint8)

        probs = self.ensemble.predict(
            images_at,
            tta=params.get("tta", self.bundle.tta),
            vote=params.get("vote", self.bundle.vote),
            bias=bool(params.get("bias", True)),
        )
        out = pd.DataFrame({"label": [self.bundle.classes[i] for i in probs.argmax(axis=1)]})
        for j, name in enumerate(self.bundle.classes):
            out[f"prob_{name}"] = probs[:, j].astype(np.float64)
        return out


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):  # JSON transport: base64 text
        import base64

        return base64.b64decode(value)
    raise UserError(f"model input 'image' holds {type(value).__name__}; give encoded image bytes")


def _rewound(sources: list) -> list:
    for s in sources:
        if isinstance(s, io.BytesIO):
            s.seek(0)
    return sources


def log_bundle_model(
    bundle: Bundle, bundle_dir: Path, *, example_image: bytes, run: RunLog, tracking_uri: str
):
    """Log the saved bundle ``bundle_dir`` as the pyfunc model ``model`` of ``run``; returns MLflow's
    ModelInfo. MLflow logs a model only into its "active run", so the run is made active for this
    one call (leaving it marks the run FINISHED; the caller sets its final status)."""
    import mlflow

    from hpo.tracking import mlflow_uris

    with mlflow_uris(tracking_uri), mlflow.start_run(run_id=run.run_id):
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(_ENTRY),
            artifacts={"bundle": str(bundle_dir)},
            signature=model_signature(bundle),
            input_example=pd.DataFrame({"image": [example_image]}),
            pip_requirements=_requirements(),
            metadata={"foldtune": {k: v for k, v in bundle.describe().items() if k != "members"}},
        )


def _requirements() -> list[str]:
    """The installed versions of what loading the model needs (foldtune itself must be installed)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in (
        "mlflow",
        "torch",
        "timm",
        "safetensors",
        "pillow",
        "numpy",
        "pandas",
        "pydantic",
        "scikit-learn",
        "albumentations",
    ):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins
