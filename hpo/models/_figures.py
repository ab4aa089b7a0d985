"""Figures and tables logged with a retrained model: confusion matrix, training curves, Optuna plots."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

__all__ = ["OPTUNA_PLOTS", "optuna_plots", "report_text"]

log = logging.getLogger(__name__)

# file stem -> optuna.visualization.matplotlib function name (matplotlib: no plotly/kaleido needed)
OPTUNA_PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}


def optuna_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """Write the study's history, importances and parallel-coordinate plots as PNGs; returns the files.

    A plot Optuna cannot draw yet (importances need two finished trials with varied params) is
    skipped with a log line, never an error.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; no-op when a backend is already in use
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_mpl

    directory.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    written = []
    for stem, fn_name in OPTUNA_PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
                if not complete:
                    raise ValueError("no complete trials")
                axes = getattr(optuna_mpl, fn_name)(study)
            figure = np.ravel(axes)[0].figure if isinstance(axes, np.ndarray) else axes.figure
            path = directory / f"{stem}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
        except Exception as exc:  # a missing plot must not lose a retrained model
            log.warning("optuna %s plot skipped: %s", stem, exc)
    return written


def report_text(report: dict, *, title: str) -> str:
    """The per-class report as a fixed-width table (what sklearn's classification_report prints)."""
    names = [row.get("name", cls) for cls, row in report["per_class"].items()]
    width = max([len(name) for name in names] + [9])
    lines = [title, "", f"{'class':>{width}}  precision  recall  f1-score  support"]
    for name, row in zip(names, report["per_class"].values(), strict=True):
        lines.append(
            f"{name:>{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
            f"{row['f1']:8.3f}  {row['support']:7d}"
        )
    lines += [
        "",
        f"{'macro-F1':>{width}}  {report['macro_f1']:.4f}",
        f"{'accuracy':>{width}}  {report['accuracy']:.4f}",
    ]
    for attribute, f1 in report.get("attribute_f1", {}).items():
        lines.append(f"{attribute + ' F1':>{width}}  {f1:.4f}")
    return "\n".join(lines) + "\n"
