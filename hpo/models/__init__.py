"""Models: retrain the best trials, package them as a bundle, register them, and predict with them.

- the bundle format (:class:`Bundle`, :func:`save_bundle`, :func:`load_bundle`): member weights as
  safetensors plus a JSON description; it imports neither MLflow nor pandas;
- :class:`Ensemble`, :func:`predict` and :func:`evaluate`: fold/top-k soft or hard vote with TTA;
- :func:`retrain` (:class:`RetrainOptions`): plan -> train -> pick -> package -> register: best
  trials -> members -> the picked ensemble -> a bundle -> a logged, registered version;
- the registry (:func:`register_version`, :func:`download_model`): the ``champion`` alias moves only
  for a better CV macro-F1.

The MLflow pyfunc wrapper (``hpo.models._pyfunc``) is imported only where a model is logged or
loaded through MLflow.
"""

from hpo.models._bundle import (
    BUNDLE_FILE,
    BUNDLE_FORMAT,
    TTA_MODES,
    VOTES,
    Bundle,
    Member,
    build_member_model,
    default_tta,
    find_bundle,
    load_bundle,
    save_bundle,
)
from hpo.models._ensemble import Ensemble, combine, tta_view
from hpo.models._predict import PredictResult, atomic_output, evaluate, predict
from hpo.models._registry import CHAMPION, Registered, download_model, parse_model_uri, register_version
from hpo.models._retrain import RetrainResult, retrain
from hpo.models._retrain_plan import MODES, RetrainOptions, select_trials

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_FORMAT",
    "CHAMPION",
    "MODES",
    "TTA_MODES",
    "VOTES",
    "Bundle",
    "Ensemble",
    "Member",
    "PredictResult",
    "Registered",
    "RetrainOptions",
    "RetrainResult",
    "atomic_output",
    "build_member_model",
    "combine",
    "default_tta",
    "download_model",
    "evaluate",
    "find_bundle",
    "load_bundle",
    "parse_model_uri",
    "predict",
    "register_version",
    "retrain",
    "save_bundle",
    "select_trials",
    "tta_view",
]
