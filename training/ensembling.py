"""Ensembles picked on out-of-fold predictions: greedy forward selection and a per-class bias.

Both work on OOF probabilities (every image predicted by a model that never trained on it), as
competition teams pick their blends outside the search loop:

- :func:`select_ensemble`: greedy forward selection with replacement (Caruana et al., 2004, "Ensemble
  selection from libraries of models"). Start from the best candidate, then repeatedly add the one
  (already chosen ones included) whose addition most raises the macro-F1 of the averaged
  probabilities; stop when no addition helps. The weights are the counts, so the ensemble's OOF
  macro-F1 is never below the best candidate's.
- :func:`fit_class_bias`: per-class offsets on log-probabilities, by coordinate ascent on macro-F1.
  Argmax favours frequent classes; macro-F1 weighs every class alike, so shifting a rare class's
  threshold pays off on imbalanced data (the mask competition's ages >= 60).

    >>> weights = select_ensemble([oof_a, oof_b, oof_c], y)           # doctest: +SKIP
    >>> blend = blend_probs([oof_a, oof_b, oof_c], weights)            # doctest: +SKIP
    >>> bias = fit_class_bias(blend, y)                                # doctest: +SKIP
    >>> answers = apply_bias(blend, bias).argmax(axis=1)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.metrics import macro_f1

__all__ = ["apply_bias", "blend_probs", "fit_class_bias", "heldout_bias_f1", "select_ensemble"]

_MAX_PICKS = 50  # selection rounds at most: weights in steps of 1/50 at the finest
_BIAS_GRID = np.linspace(-2.0, 2.0, 21)  # offsets tried per class, in log-probability (nats)
_BIAS_ROUNDS = 3  # passes over the classes
_EPS = 1e-7  # floor before the log: a zero probability stays finite


def blend_probs(probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of (N, C) probability arrays (weights need not sum to 1)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probs),) or w.min() < 0 or w.sum() <= 0:
        raise ValueError(f"weights must be {len(probs)} non-negative numbers, not all zero; got {weights}")
    return np.tensordot(w / w.sum(), np.stack(probs).astype(np.float64), axes=1)


def select_ensemble(probs: Sequence[np.ndarray], y: np.ndarray, *, max_picks: int = _MAX_PICKS) -> np.ndarray:
    """Weights (summing to 1) over the candidates' (N, C) OOF probabilities by greedy forward
    selection with replacement; a candidate never picked gets 0. Ties keep the earlier candidate."""
    if not probs:
        raise ValueError("select_ensemble needs at least one candidate")
    n_classes = probs[0].shape[1]
    stacked = np.stack(probs).astype(np.float64)
    scores = [macro_f1(y, p.argmax(axis=1), n_classes) for p in stacked]
    counts = np.zeros(len(probs), dtype=np.int64)
    counts[int(np.argmax(scores))] = 1
    total, best = stacked[int(np.argmax(scores))].copy(), max(scores)
    for _ in range(max_picks - 1):
        n = counts.sum() + 1
        trial = [macro_f1(y, ((total + p) / n).argmax(axis=1), n_classes) for p in stacked]
        pick = int(np.argmax(trial))
        if trial[pick] <= best:  # no strict gain: adding more would only fit noise
            break
        counts[pick] += 1
        total += stacked[pick]
        best = trial[pick]
    return counts / counts.sum()


def apply_bias(probs: np.ndarray, bias: Sequence[float] | np.ndarray) -> np.ndarray:
    """``softmax(log(probs) + bias)``: probabilities again, whose argmax is the biased answer."""
    logits = np.log(np.clip(probs, _EPS, None)) + np.asarray(bias, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit_class_bias(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-class log-probability offsets that maximize macro-F1 of ``probs`` on labels ``y``.

    Coordinate ascent: for each class in turn, the grid offset with the best macro-F1 (ties keep the
    current one, so an offset moves only for a strict gain), a few passes. Starts at zero, so the
    biased macro-F1 on ``probs`` is never below the unbiased one. Fitted and scored on the same
    images, the gain is optimistic; ``hpo retrain`` also reports it on held-out folds.
    """
    n_classes = probs.shape[1]
    logp = np.log(np.clip(probs, _EPS, None))
    bias = np.zeros(n_classes)
    best = macro_f1(y, logp.argmax(axis=1), n_classes)
    for _ in range(_BIAS_ROUNDS):
        improved = False
        for c in range(n_classes):
            current = bias[c]
            for value in _BIAS_GRID:
                if value == current:
                    continue
                bias[c] = value
                score = macro_f1(y, (logp + bias).argmax(axis=1), n_classes)
                if score > best:
                    best, current, improved = score, value, True
            bias[c] = current
        if not improved:
            break
    return bias


def heldout_bias_f1(probs: np.ndarray, y: np.ndarray, folds: Sequence[np.ndarray]) -> float:
    """Macro-F1 of the class bias on images it was not fitted on: for each fold (its indices), the
    bias is fitted on the other folds' probabilities and applied to this fold's."""
    answers = probs.argmax(axis=1)
    for val in folds:
        rest = np.setdiff1d(np.arange(len(y)), val)
        bias = fit_class_bias(probs[rest], y[rest])
        answers[val] = (np.log(np.clip(probs[val], _EPS, None)) + bias).argmax(axis=1)
    return macro_f1(y, answers, probs.shape[1])
