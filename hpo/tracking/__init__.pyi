# The public face's names, for editors and type checkers; __init__.py loads each on first use.

from ._artifacts import (
    ArtifactSink as ArtifactSink,
    PngSink as PngSink,
    TrialFigures as TrialFigures,
    upload_png as upload_png,
)
from ._metric_names import (
    BEST_CV_F1 as BEST_CV_F1,
    BEST_EPOCH as BEST_EPOCH,
    BEST_F1 as BEST_F1,
    BIASED_HELDOUT_OOF_F1 as BIASED_HELDOUT_OOF_F1,
    BIASED_OOF_F1 as BIASED_OOF_F1,
    CV_F1 as CV_F1,
    ENSEMBLE_OOF_F1 as ENSEMBLE_OOF_F1,
    F1_STD as F1_STD,
    FINISHED_TRIALS as FINISHED_TRIALS,
    OOF as OOF,
    OOF_F1 as OOF_F1,
    TRAIN as TRAIN,
    WEIGHT as WEIGHT,
    epoch_metrics as epoch_metrics,
    fold_key as fold_key,
    key as key,
    report_metrics as report_metrics,
    seed_key as seed_key,
    trial_key as trial_key,
)
from ._mlflow import (
    DEFAULT_TRACKING_DB as DEFAULT_TRACKING_DB,
    StudyTracking as StudyTracking,
    check_reachable as check_reachable,
    client as client,
    enable_tracking as enable_tracking,
    experiment_id_for as experiment_id_for,
    flat_params as flat_params,
    mlflow_uris as mlflow_uris,
    requested_tracking_uri as requested_tracking_uri,
    resolve_tracking_uri as resolve_tracking_uri,
    server_problem as server_problem,
    study_tracking as study_tracking,
)
from ._mlflow_observer import (
    BUDGET_MET as BUDGET_MET,
    MlflowObserver as MlflowObserver,
    finish_study_run as finish_study_run,
    tracking_observer as tracking_observer,
)
from ._observers import (
    ObserverGroup as ObserverGroup,
    TrialObserver as TrialObserver,
)
from ._plots import (
    plot_confusion as plot_confusion,
    plot_curves as plot_curves,
)
from ._run_log import RunLog as RunLog
