# The public face's names, for editors and type checkers; __init__.py loads each on first use.

from .batches import (
    LoadedData as LoadedData,
    load_data as load_data,
)
from .checkpoint import (
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from .config import (
    ConfigError as ConfigError,
    RunConfig as RunConfig,
    apply_overrides as apply_overrides,
)
from .cv import (
    Fold as Fold,
    FoldResult as FoldResult,
    cross_validate as cross_validate,
    out_of_fold as out_of_fold,
)
from .data import (
    ImageTable as ImageTable,
    UnlabeledTable as UnlabeledTable,
    load_table as load_table,
    load_unlabeled as load_unlabeled,
)
from .ensembling import (
    apply_bias as apply_bias,
    blend_probs as blend_probs,
    fit_class_bias as fit_class_bias,
    select_ensemble as select_ensemble,
)
from .folds import (
    make_folds as make_folds,
    oversample as oversample,
)
from .loop import (
    DivergedError as DivergedError,
    EpochStats as EpochStats,
    FitResult as FitResult,
    fit as fit,
    predict_proba as predict_proba,
)
from .metrics import (
    classification_report as classification_report,
    macro_f1 as macro_f1,
)
from .weights import (
    Weights as Weights,
    weights_for as weights_for,
)
