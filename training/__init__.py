"""Training core: data -> decoded cache -> folds -> timm model -> ``fit`` / ``cross_validate`` -> metrics.

Pure PyTorch/timm/albumentations/scikit-learn; knows nothing of Optuna, MLflow or SQL.

The names (listed in ``__init__.pyi``) load on first use, so importing one light module
(``training.config``) does not pay for torch: ``from training import fit`` imports ``training.loop`` then.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
