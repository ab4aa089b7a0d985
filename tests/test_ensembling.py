"""Ensemble selection and the class bias on crafted out-of-fold probabilities (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from training.ensembling import apply_bias, blend_probs, fit_class_bias, heldout_bias_f1, select_ensemble
from training.metrics import macro_f1


def one_hot(answers: np.ndarray, n_classes: int, confidence: float) -> np.ndarray:
    """Probabilities that put ``confidence`` on each answer and spread the rest evenly."""
    probs = np.full((len(answers), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(answers)), answers] = confidence
    return probs


def f1(y: np.ndarray, probs: np.ndarray) -> float:
    return macro_f1(y, probs.argmax(axis=1), probs.shape[1])


def test_selection_picks_the_two_that_complement_and_drops_the_copy() -> None:
    # a is right and sure on the first half, wrong and unsure on the second; b the other way round;
    # the copy of a adds nothing; noise is always wrong
    y = np.tile([0, 1, 2], 40)
    half = np.arange(len(y)) < len(y) // 2
    wrong = (y + 1) % 3
    a = np.where(half[:, None], one_hot(y, 3, 0.9), one_hot(wrong, 3, 0.4))
    b = np.where(half[:, None], one_hot(wrong, 3, 0.4), one_hot(y, 3, 0.9))
    noise = one_hot(wrong, 3, 0.99)
    weights = select_ensemble([a, a.copy(), noise, b], y)
    assert weights[2] == 0  # never helps
    assert weights[0] > 0 and weights[3] > 0 and weights[1] == 0  # the copy ties a, a comes first
    assert weights.sum() == pytest.approx(1.0)
    blend = blend_probs([a, a.copy(), noise, b], weights)
    assert f1(y, blend) == pytest.approx(1.0)
    assert f1(y, blend) > max(f1(y, p) for p in (a, b, noise))


@pytest.mark.parametrize("seed", range(5))
def test_selection_is_never_below_the_best_member(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 200)
    candidates = [rng.dirichlet(np.ones(5), 200) + 0.3 * np.eye(5)[y] * rng.random() for _ in range(6)]
    candidates = [c / c.sum(axis=1, keepdims=True) for c in candidates]
    weights = select_ensemble(candidates, y)
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
    assert f1(y, blend_probs(candidates, weights)) >= max(f1(y, c) for c in candidates)


def test_one_candidate_gets_all_the_weight() -> None:
    y = np.array([0, 1, 1, 0])
    assert select_ensemble([one_hot(y, 2, 0.8)], y).tolist() == [1.0]


def test_blend_refuses_bad_weights() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        blend_probs([np.ones((2, 2)) / 2], [0.0])


def test_bias_lifts_a_rare_class_the_argmax_never_predicts() -> None:
    # class 2 is rare and the model is shy about it: right, but under the majority's probability
    rng = np.random.default_rng(0)
    y = np.array([0] * 120 + [1] * 120 + [2] * 12)
    probs = one_hot(y, 3, 0.8)
    probs[y == 2] = [0.45, 0.15, 0.40]  # argmax says 0 for every rare image
    probs += rng.uniform(0, 0.02, probs.shape)
    probs /= probs.sum(axis=1, keepdims=True)
    bias = fit_class_bias(probs, y)
    before, after = f1(y, probs), f1(y, apply_bias(probs, bias))
    assert before < 0.7 and after == pytest.approx(1.0)
    assert bias[2] > bias[0]
    assert apply_bias(probs, bias).sum(axis=1) == pytest.approx(np.ones(len(y)))
    folds = [np.arange(len(y))[k::3] for k in range(3)]
    assert heldout_bias_f1(probs, y, folds) == pytest.approx(1.0)  # it generalizes across folds here


def test_bias_stays_zero_when_argmax_is_already_best() -> None:
    y = np.tile([0, 1, 2], 20)
    probs = one_hot(y, 3, 0.7)
    assert fit_class_bias(probs, y).tolist() == [0.0, 0.0, 0.0]


def shy_rare_class() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0] * 120 + [1] * 120 + [2] * 12)
    probs = one_hot(y, 3, 0.8)
    probs[y == 2] = [0.45, 0.15, 0.40]
    return probs, y


def test_retrain_keeps_the_bias_only_where_it_helps_out_of_fold() -> None:
    from hpo.models._oof import pick_ensemble

    probs, y = shy_rare_class()
    folds = [np.arange(len(y))[k::3] for k in range(3)]
    kept = pick_ensemble([probs], y, trials=[0], folds=folds)
    assert kept.bias_kept and kept.bias[2] > kept.bias[0]
    assert kept.heldout_biased_f1 > kept.ensemble_f1
    # the same shy probabilities mean a rare image in one fold and a class-0 image in another: a bias
    # fitted on both gains in-sample, but the one fitted without the class-0 fold turns it wrong
    shy = [0.45, 0.15, 0.40]
    bulk_y = np.array([0] * 120 + [1] * 120)
    y = np.concatenate([bulk_y, [2] * 6, [0] * 6])
    probs = np.concatenate([one_hot(bulk_y, 3, 0.8), np.tile(shy, (12, 1))])
    bulk = np.arange(240)
    folds = [
        np.concatenate([bulk[0::3], 240 + np.arange(6)]),
        np.concatenate([bulk[1::3], 246 + np.arange(6)]),
    ]
    folds.append(bulk[2::3])
    dropped = pick_ensemble([probs], y, trials=[0], folds=folds)
    assert dropped.biased_f1 > dropped.ensemble_f1 > dropped.heldout_biased_f1
    assert not dropped.bias_kept and not any(dropped.bias)
    forced = pick_ensemble([probs], y, trials=[0], folds=folds, bias="on")
    assert forced.bias_kept and any(forced.bias)
    assert not any(pick_ensemble([probs], y, trials=[0], folds=folds, bias="off").bias)
