"""fit(): history, OOF probabilities, checkpoints, early stopping, callbacks, divergence and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.batches import load_data
from training.checkpoint import load_checkpoint
from training.config import apply_overrides
from training.folds import make_folds
from training.loop import DivergedError, fit, predict_proba
from training.models import build_model


@pytest.fixture
def fold(tiny_config):
    data = load_data(tiny_config.data)
    return make_folds(data.table.labels, data.table.groups, 3, seed=0)[0]


def test_fit_history_oof_and_checkpoint_round_trip(tiny_config, fold, tmp_path) -> None:
    train_idx, val_idx = fold
    result = fit(tiny_config, train_idx, val_idx, checkpoint_dir=tmp_path)
    assert [h.epoch for h in result.history] == [1, 2]
    assert all(h.images_per_sec > 0 and h.seconds > 0 for h in result.history)
    assert result.oof_probs.shape == (len(val_idx), 10)
    assert np.allclose(result.oof_probs.sum(axis=1), 1.0, atol=1e-4)
    assert result.best_f1 == max(h.f1 for h in result.history)

    state = load_checkpoint(result.checkpoint)
    model = build_model(tiny_config.model, num_classes=len(state["classes"]))
    model.load_state_dict(state["model"])
    images = load_data(tiny_config.data).images[val_idx]
    probs = predict_proba(model, images, mean=state["mean"], std=state["std"], device=torch.device("cpu"))
    assert np.allclose(probs, result.oof_probs, atol=1e-4)
    assert state["epoch"] == result.best_epoch


def test_three_fold_sample_reaches_090_macro_f1(tiny_config) -> None:
    config = apply_overrides(tiny_config, {"budget.max_epochs": 6, "sched.name": "onecycle"})
    data = load_data(config.data)
    scores = [
        fit(config, tr, va).best_f1 for tr, va in make_folds(data.table.labels, data.table.groups, 3, 0)
    ]
    assert np.mean(scores) >= 0.90, scores


def test_augmented_training_repeats_exactly(tiny_config, fold) -> None:
    # A trial must train the same way when it runs again (or in another study), augmentation included.
    config = apply_overrides(tiny_config, {"augment.preset": "light", "budget.max_epochs": 1})
    first, second = (fit(config, *fold).history[0] for _ in range(2))
    assert (first.train_loss, first.f1) == (second.train_loss, second.f1)


def test_on_epoch_can_stop_and_raise(tiny_config, fold) -> None:
    seen = []
    result = fit(tiny_config, *fold, on_epoch=lambda stats: seen.append(stats.epoch) or True)
    assert seen == [1] and result.stop_reason == "stopped_by_callback"

    def boom(stats):
        raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        fit(tiny_config, *fold, on_epoch=boom)


def test_early_stopping_on_a_plateau(tiny_config, fold) -> None:
    # A vanishing learning rate: F1 only moves with batch-norm statistics, then stalls.
    config = apply_overrides(tiny_config, {"optim.lr": 1e-12, "budget.max_epochs": 8, "budget.patience": 1})
    result = fit(config, *fold)
    assert result.stop_reason == "early_stopping"
    assert len(result.history) < 8
    assert result.history[-1].epoch - result.best_epoch == 1


def test_diverging_loss_stops_with_a_reason(tiny_config, fold) -> None:
    config = apply_overrides(tiny_config, {"optim.name": "sgd", "optim.lr": 1e12, "sched.name": "none"})
    with pytest.raises(DivergedError, match=r"lower optim\.lr"):
        fit(config, *fold)


def test_resume_runs_only_the_missing_epochs(tiny_config, fold, tmp_path) -> None:
    config = apply_overrides(tiny_config, {"budget.max_epochs": 4})

    def crash_after_two(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, *fold, checkpoint_dir=tmp_path, on_epoch=crash_after_two)
    trained = []
    result = fit(config, *fold, checkpoint_dir=tmp_path, on_epoch=lambda s: trained.append(s.epoch))
    assert result.resumed_epochs == 2
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert trained == [1, 2, 3, 4]  # restored epochs are replayed to the callback, then 3 and 4 train


def test_every_knob_together_trains(tiny_config, fold) -> None:
    config = apply_overrides(
        tiny_config,
        {
            "budget.max_epochs": 1,
            "budget.accum_steps": 2,
            "budget.grad_clip": 1.0,
            "budget.num_workers": 1,
            "sched.name": "onecycle",
            "loss.name": "focal",
            "loss.class_weights": True,
            "augment.preset": "heavy",
            "cv.oversample": True,
        },
    )
    result = fit(config, *fold)
    assert np.isfinite(result.history[0].train_loss)


def test_frozen_backbone_keeps_its_weights(tiny_config, fold, tmp_path) -> None:
    config = apply_overrides(tiny_config, {"model.freeze": "head", "budget.max_epochs": 1})
    torch.manual_seed(config.budget.seed)
    before = build_model(config.model, 10).state_dict()
    result = fit(config, *fold, checkpoint_dir=tmp_path)
    after = load_checkpoint(result.checkpoint)["model"]
    assert torch.equal(before["conv1.0.weight"], after["conv1.0.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
