# The public face's names, for editors and type checkers; __init__.py loads each on first use.

from ._artifacts import (
    ArtifactSink as ArtifactSink,
    PngSink as PngSink,
    TrialFigures as TrialFigures,
    upload_png as upload_png,
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
