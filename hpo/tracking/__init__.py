"""Tracking: side channels that watch trials without steering them.

- MLflow: one parent run per study, one child run per trial (:class:`MlflowObserver`), the
  tracking URI rules and a client that fails fast (:func:`client`, :func:`check_reachable`);
- the study's run ends when its budget is met (:func:`finish_study_run`);
- trial figures: each trial's learning curves and confusion matrices, rendered once
  (:class:`TrialFigures`) for the dashboard's artifact store (:class:`ArtifactSink`) and the trial's
  MLflow run (:class:`MlflowObserver` is a sink too);
- the MLflow metric names, each defined once (``_metric_names``), and :class:`RunLog`, a run written
  through the client by its id;
- the observer hooks the objective calls (:class:`TrialObserver`), each failure isolated.

The names load on first use: `hpo study create` and the worker pool process, which need only the
MLflow helpers, do not pay for torch, timm and albumentations (the figures need the training data).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
