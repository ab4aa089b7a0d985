"""Training core: data -> decoded cache -> folds -> timm model -> ``fit`` -> metrics.

Pure PyTorch/timm/albumentations/scikit-learn; knows nothing of Optuna, MLflow or SQL.
"""

from training.batches import LoadedData, load_data
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ConfigError, RunConfig, apply_overrides
from training.data import ImageTable, UnlabeledTable, load_table, load_unlabeled
from training.folds import make_folds, oversample
from training.loop import DivergedError, EpochStats, FitResult, fit, predict_proba
from training.metrics import classification_report, macro_f1

__all__ = [
    "ConfigError",
    "DivergedError",
    "EpochStats",
    "FitResult",
    "ImageTable",
    "LoadedData",
    "RunConfig",
    "UnlabeledTable",
    "apply_overrides",
    "classification_report",
    "fit",
    "load_checkpoint",
    "load_data",
    "load_table",
    "load_unlabeled",
    "macro_f1",
    "make_folds",
    "oversample",
    "predict_proba",
    "save_checkpoint",
]
