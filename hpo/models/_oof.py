"""``hpo retrain``'s post-hoc ensemble: the retrained trials' out-of-fold predictions pick the blend.

Each trial's candidate is the OOF probabilities of its fold models (averaged over its seeds with
``--seeds``: a seed is another draw of the same config, not another config, so seeds share one
weight). Greedy forward selection with replacement (``training.ensembling.select_ensemble``) weighs
the candidates; trials it leaves out leave the bundle. A per-class bias fitted on the blend's OOF
probabilities for macro-F1 goes into the bundle too: with ``bias="auto"`` only when a bias fitted on
the other folds scores above the plain blend on each fold, since a bias fitted and scored on the same
predictions always looks like a gain. Metrics, all on out-of-fold predictions:

- ``trial<n>/oof_f1``: each candidate's macro-F1 (and ``trial<n>/seed<s>/oof_f1`` per seed);
  ``trial<n>/weight``: its share in the blend;
- ``ensemble_oof_f1``: the blend's, never below the best candidate's (selection starts there);
- ``biased_oof_f1``: with the bias, fitted on the same predictions (optimistic);
  ``biased_heldout_oof_f1``: with a bias fitted on the other folds only, scored on each fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpo.tracking import (
    BIASED_HELDOUT_OOF_F1,
    BIASED_OOF_F1,
    ENSEMBLE_OOF_F1,
    OOF_F1,
    WEIGHT,
    RunLog,
    key,
    trial_key,
)
from training.ensembling import apply_bias, blend_probs, fit_class_bias, heldout_bias_f1, select_ensemble
from training.metrics import macro_f1

__all__ = ["BIAS_CHOICES", "OofEnsemble", "log_oof_ensemble", "pick_ensemble"]

BIAS_CHOICES = ("auto", "on", "off")  # auto: keep the bias when it beats the plain blend out of sample


@dataclass(frozen=True)
class OofEnsemble:
    member_f1: dict[int, float]  # trial -> OOF macro-F1 of its candidate
    weights: dict[int, float]  # trial -> share in the blend (0: left out), summing to 1
    ensemble_f1: float
    biased_f1: float
    heldout_biased_f1: float
    bias: tuple[float, ...]  # all zero when it is not kept
    bias_kept: bool
    probs: np.ndarray  # (N, C) the blend's OOF probabilities, without the bias

    def to_dict(self) -> dict:
        """What the bundle's info and the CLI keep (trial numbers as JSON keys)."""
        return {
            "member_oof_f1": {str(t): f for t, f in self.member_f1.items()},
            "weights": {str(t): w for t, w in self.weights.items()},
            "ensemble_oof_f1": self.ensemble_f1,
            "biased_oof_f1": self.biased_f1,
            "biased_heldout_oof_f1": self.heldout_biased_f1,
            "bias_kept": self.bias_kept,
        }


def pick_ensemble(
    oofs: list[np.ndarray],
    y: np.ndarray,
    *,
    trials: list[int],
    folds: list[np.ndarray],
    bias: str = "auto",
) -> OofEnsemble:
    """Weights over the trials' OOF probabilities, and the blend's class bias; ``folds``: each fold's
    validation indices (the held-out bias score fits on the others); ``bias``: one of BIAS_CHOICES."""
    n_classes = oofs[0].shape[1]
    weights = select_ensemble(oofs, y)
    blend = blend_probs(oofs, weights)
    ensemble_f1 = macro_f1(y, blend.argmax(axis=1), n_classes)
    fitted = fit_class_bias(blend, y)
    heldout = heldout_bias_f1(blend, y, folds)
    kept = bias == "on" or (bias == "auto" and heldout > ensemble_f1)
    return OofEnsemble(
        member_f1={t: macro_f1(y, p.argmax(axis=1), n_classes) for t, p in zip(trials, oofs, strict=True)},
        weights={t: float(w) for t, w in zip(trials, weights, strict=True)},
        ensemble_f1=ensemble_f1,
        biased_f1=macro_f1(y, apply_bias(blend, fitted).argmax(axis=1), n_classes),
        heldout_biased_f1=heldout,
        bias=tuple(float(b) if kept else 0.0 for b in fitted),
        bias_kept=kept and bool(fitted.any()),
        probs=blend,
    )


def log_oof_ensemble(run: RunLog, picked: OofEnsemble) -> None:
    metrics = {key(trial_key(t), OOF_F1): f for t, f in picked.member_f1.items()}
    metrics |= {key(trial_key(t), WEIGHT): w for t, w in picked.weights.items()}
    metrics |= {
        ENSEMBLE_OOF_F1: picked.ensemble_f1,
        BIASED_OOF_F1: picked.biased_f1,
        BIASED_HELDOUT_OOF_F1: picked.heldout_biased_f1,
    }
    run.log_metrics(metrics)
    run.log_dict({**picked.to_dict(), "bias": list(picked.bias)}, "ensemble.json")
