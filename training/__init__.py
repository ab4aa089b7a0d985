"""Training core: data -> decoded cache -> folds -> timm model -> ``fit`` / ``cross_validate`` -> metrics.

Pure PyTorch/timm/albumentations/scikit-learn; knows nothing of Optuna, MLflow or SQL.

The names below load on first use, so importing one light module (``training.config``) does not
pay for torch: ``from training import fit`` imports ``training.loop`` then.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # public name -> the module that defines it
    "LoadedData": "training.batches",
    "load_data": "training.batches",
    "load_checkpoint": "training.checkpoint",
    "save_checkpoint": "training.checkpoint",
    "ConfigError": "training.config",
    "RunConfig": "training.config",
    "apply_overrides": "training.config",
    "Fold": "training.cv",
    "FoldResult": "training.cv",
    "cross_validate": "training.cv",
    "out_of_fold": "training.cv",
    "ImageTable": "training.data",
    "apply_bias": "training.ensembling",
    "blend_probs": "training.ensembling",
    "fit_class_bias": "training.ensembling",
    "select_ensemble": "training.ensembling",
    "UnlabeledTable": "training.data",
    "load_table": "training.data",
    "load_unlabeled": "training.data",
    "make_folds": "training.folds",
    "oversample": "training.folds",
    "DivergedError": "training.loop",
    "EpochStats": "training.loop",
    "FitResult": "training.loop",
    "fit": "training.loop",
    "predict_proba": "training.loop",
    "classification_report": "training.metrics",
    "macro_f1": "training.metrics",
    "Weights": "training.weights",
    "weights_for": "training.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
