"""Trial figures: learning curves and confusion matrices (matplotlib's object API, Agg canvas)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from training.loop import EpochStats

__all__ = ["plot_confusion", "plot_curves"]

_MAX_ANNOTATED_CLASSES = 20  # above this, cell counts would be unreadable: colours only


def plot_curves(history: Mapping[int, Sequence[EpochStats]], *, title: str):
    """Loss (train solid, validation dashed) and validation macro-F1 by epoch, one colour per fold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    # Fixed margins: the layout never changes, and constrained layout would double the render time.
    loss_ax, f1_ax = fig.subplots(
        1, 2, gridspec_kw={"left": 0.06, "right": 0.98, "bottom": 0.13, "top": 0.83}
    )
    for i, (fold, epochs) in enumerate(history.items()):
        colour = f"C{i % 10}"
        x = [e.epoch for e in epochs]
        loss_ax.plot(
            x, [e.train_loss for e in epochs], "-o", color=colour, ms=3, label=f"fold {fold + 1} train"
        )
        loss_ax.plot(x, [e.val_loss for e in epochs], "--o", color=colour, ms=3, label=f"fold {fold + 1} val")
        f1_ax.plot(x, [e.f1 for e in epochs], "-o", color=colour, ms=3, label=f"fold {fold + 1}")
    loss_ax.set(title="loss", xlabel="epoch")
    f1_ax.set(title="validation macro-F1", xlabel="epoch", ylim=(0, 1))
    last = max((e.epoch for epochs in history.values() for e in epochs), default=1)
    for ax in (loss_ax, f1_ax):
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], *, title: str):
    """Counts of true (rows) vs predicted (columns) classes; cells annotated for up to 20 classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(classes)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    side = min(16.0, max(4.5, 0.45 * n + 2.5))
    fig = Figure(figsize=(side, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    names = [c if len(c) <= 26 else c[:25] + "…" for c in classes]  # mask: "10 incorrect/female/30-59"
    ax.set_xticks(range(n), names, rotation=90, fontsize="small")
    ax.set_yticks(range(n), names, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true")
    if n <= _MAX_ANNOTATED_CLASSES:
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                colour = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize="small")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}\naccuracy {accuracy:.3f} on {counts.sum()} images", fontsize="medium")
    return fig
