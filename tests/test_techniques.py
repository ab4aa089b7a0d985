"""Training techniques as searchable keys: batch mixing, weight EMA, stochastic depth, layer-wise LR
decay and warmup, each changing training, and all of them through `hpo worker` and `hpo retrain`."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import assert_one_line_error, invoke, trials_of
from training.batches import load_data
from training.checkpoint import load_checkpoint
from training.config import (
    AugmentConfig,
    ConfigError,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    apply_overrides,
)
from training.folds import make_folds
from training.loop import fit, predict_proba
from training.losses import LOSSES, build_loss
from training.models import build_model
from training.optim import SCHEDULERS, build_optimizer, build_scheduler
from training.transforms import build_mixup, mix_batch

COUNTS = np.array([40, 10, 5, 1])


@pytest.fixture
def subset(tiny_config):
    """192 training and 64 validation images of the sample's first fold: 6 steps an epoch at batch 32."""
    data = load_data(tiny_config.data)
    train_idx, val_idx = make_folds(data.table.labels, data.table.groups, 3, seed=0)[0]
    rng = np.random.default_rng(0)  # spread over the classes: the sample is stored class by class
    return np.sort(rng.choice(train_idx, 192, replace=False)), np.sort(rng.choice(val_idx, 64, replace=False))


# --- batch mixing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mixup", "cutmix"), [(1.0, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_makes_soft_targets_and_an_odd_batch_keeps_its_last_image(mixup, cutmix):
    mixer = build_mixup(AugmentConfig(mixup_alpha=mixup, cutmix_alpha=cutmix, mix_prob=1.0), n_classes=4)
    np.random.seed(0)
    x = torch.randn(7, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    before = x.clone()
    targets = mix_batch(mixer, x, y)
    assert targets.shape == (7, 4) and torch.allclose(targets.sum(dim=1), torch.ones(7))
    assert not torch.equal(x[:6], before[:6])  # mixed in place
    assert (targets[:6].max(dim=1).values < 1).all()  # each image carries part of its partner's class
    assert torch.equal(x[6], before[6]) and torch.equal(targets[6], F.one_hot(y[6], 4).float())


def test_mixing_is_off_without_an_alpha_or_a_chance():
    assert build_mixup(AugmentConfig(), n_classes=4) is None
    assert build_mixup(AugmentConfig(mixup_alpha=0.5, mix_prob=0.0), n_classes=4) is None


@pytest.mark.parametrize(("name", "weighted"), itertools.product(sorted(LOSSES), [False, True]))
def test_every_loss_takes_mixed_targets(name, weighted):
    loss_fn = build_loss(LossConfig(name=name, class_weights=weighted, gamma=2.0, smoothing=0.1), COUNTS)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 4, generator=gen, requires_grad=True)
    y = torch.randint(0, 4, (8,), generator=gen)
    # one-hot probabilities cost exactly what their class indices cost, class weights included
    assert loss_fn(logits, F.one_hot(y, 4).float()).item() == pytest.approx(
        loss_fn(logits, y).item(), rel=1e-5
    )
    mixed = 0.7 * F.one_hot(y, 4).float() + 0.3 * F.one_hot(y.flip(0), 4).float()
    loss = loss_fn(logits, mixed)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    if weighted and name != "soft_f1":  # soft_f1 weighs classes equally by itself
        plain = build_loss(LossConfig(name=name, gamma=2.0, smoothing=0.1), COUNTS)
        assert loss.item() != pytest.approx(plain(logits, mixed).item(), rel=1e-3)


def test_mixed_training_with_focal_class_weights_learns(tiny_config, subset):
    plain = apply_overrides(
        tiny_config,
        {"loss.name": "focal", "loss.class_weights": True, "budget.batch_size": 32, "budget.max_epochs": 3},
    )
    mixed = apply_overrides(plain, {"augment.mixup_alpha": 0.4, "augment.cutmix_alpha": 1.0})
    plain_run, mixed_run = fit(plain, *subset), fit(mixed, *subset)
    assert mixed_run.history[0].train_loss != pytest.approx(plain_run.history[0].train_loss)
    assert all(np.isfinite(h.train_loss) for h in mixed_run.history)
    assert mixed_run.history[-1].val_loss < mixed_run.history[0].val_loss  # it learns


# --- weight EMA ---------------------------------------------------------------------------------


def test_ema_weights_are_validated_saved_and_resumed(tiny_config, subset, tmp_path):
    config = apply_overrides(
        tiny_config, {"budget.batch_size": 32, "budget.ema_decay": 0.99, "augment.mixup_alpha": 0.4}
    )
    result = fit(config, *subset, checkpoint_dir=tmp_path / "whole")
    best, last = load_checkpoint(result.checkpoint), load_checkpoint(tmp_path / "whole" / "last.pt")
    assert best["epoch"] == result.best_epoch
    averaged, trained = last["model"], last["train_model"]
    moved = [k for k, v in trained.items() if v.is_floating_point() and not torch.allclose(v, averaged[k])]
    assert moved, "the average differs from the weights the optimizer moved"

    model = build_model(config.model, num_classes=len(best["classes"]))
    model.load_state_dict(best["model"])
    images = load_data(config.data).images[subset[1]]
    probs = predict_proba(model, images, mean=best["mean"], std=best["std"], device=torch.device("cpu"))
    assert np.allclose(probs, result.oof_probs, atol=1e-4)  # validation scored the saved (EMA) weights

    def crash_after_one(stats):
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, *subset, checkpoint_dir=tmp_path / "split", on_epoch=crash_after_one)
    resumed = fit(config, *subset, checkpoint_dir=tmp_path / "split")
    assert resumed.resumed_epochs == 1
    # the average, the raw weights and the mixing all continue where they stopped
    for a, b in zip(resumed.history, result.history, strict=True):
        assert (a.train_loss, a.val_loss, a.f1) == pytest.approx((b.train_loss, b.val_loss, b.f1), rel=1e-5)


# --- stochastic depth ---------------------------------------------------------------------------


def test_drop_path_rate_reaches_the_model_or_is_refused_in_one_line():
    dropped = build_model(ModelConfig(name="test_resnet", drop_path_rate=0.2), num_classes=3)
    rates = [m.drop_prob for m in dropped.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) > 0
    plain = build_model(ModelConfig(name="test_resnet"), num_classes=3)
    assert not any(type(m).__name__ == "DropPath" for m in plain.modules())
    with pytest.raises(ConfigError, match=r"model\.drop_path_rate to 0") as info:
        build_model(ModelConfig(name="dla34", drop_path_rate=0.1), num_classes=3)
    assert "\n" not in str(info.value)


# --- layer-wise LR decay and warmup ---------------------------------------------------------------


def _model() -> nn.Module:
    return build_model(ModelConfig(name="test_resnet"), num_classes=3)


def test_layer_decay_gives_lower_layers_lower_rates_under_every_schedule():
    for name in sorted(SCHEDULERS):
        model = _model()
        optimizer = build_optimizer(OptimConfig(lr=0.01, layer_decay=0.5), model)
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert max(lrs) == pytest.approx(0.01) and min(lrs) < 0.01 / 8  # several layers, halving
        assert lrs == sorted(lrs)  # timm groups the stem first, the head last
        schedule = build_scheduler(
            SchedConfig(name=name, warmup_epochs=1), optimizer, epochs=3, steps_per_epoch=2
        )
        for _ in range(2):
            for _ in range(2):
                optimizer.step()
                schedule.step_batch()
            schedule.step_epoch(1.0)
            now = [g["lr"] for g in optimizer.param_groups]
            assert np.allclose(np.array(now) / max(now), np.array(lrs) / max(lrs)), name  # ratios kept
            assert schedule.lr == max(now)
    flat = build_optimizer(OptimConfig(lr=0.01), _model())
    assert {g["lr"] for g in flat.param_groups} == {0.01}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_warmup_starts_every_schedule_low(name):
    optimizer = build_optimizer(OptimConfig(lr=0.1), nn.Linear(2, 2))
    schedule = build_scheduler(
        SchedConfig(name=name, warmup_epochs=3), optimizer, epochs=8, steps_per_epoch=5
    )
    assert schedule.lr < 0.1 / 3
    cold = build_scheduler(
        SchedConfig(name=name),
        build_optimizer(OptimConfig(lr=0.1), nn.Linear(2, 2)),
        epochs=8,
        steps_per_epoch=5,
    )
    assert schedule.lr < cold.lr or (name == "onecycle" and schedule.lr == pytest.approx(cold.lr))
    seen = []
    for _ in range(4):
        for _ in range(5):
            seen.append(schedule.lr)
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(1.0)
    assert max(seen) == pytest.approx(0.1, rel=1e-3)
    assert seen.index(max(seen)) >= (14 if name == "onecycle" else 15)  # not before warmup ends


# --- end to end -----------------------------------------------------------------------------------

SPACE = """
fixed:
  model.name: test_resnet
  model.drop_path_rate: 0.1
  data.image_size: 32
  augment.preset: none
  augment.mixup_alpha: 0.4
  augment.cutmix_alpha: 1.0
  augment.mix_prob: 0.8
  loss.name: label_smoothing
  loss.smoothing: 0.1
  optim.layer_decay: 0.7
  sched.name: plateau
  sched.warmup_epochs: 1
  budget.ema_decay: 0.99
  budget.max_epochs: 2
  budget.batch_size: 16
  budget.patience: null
params:
  optim.lr: {type: float, low: 3.0e-3, high: 1.0e-2, log: true}
starts: []
"""


@pytest.mark.slow
def test_every_technique_trains_through_worker_and_retrain(workdir: Path, small_csv: Path) -> None:
    (workdir / "space.yaml").write_text(SPACE)
    url = f"sqlite:///{workdir / 'study.db'}"
    common = ("--storage", url)
    created = invoke(
        "study", "create", "tech", "--space", "space.yaml", "--data", str(small_csv), "--folds", "2",
        "--pruner", "none", *common,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    worked = invoke("worker", "tech", "--devices", "cpu", "--n-trials", "1", *common)
    assert worked.exit_code == 0, worked.output
    (trial,) = trials_of(url, "tech")
    assert trial.state.name == "COMPLETE", trial.user_attrs
    config = trial.user_attrs["config"]
    assert (config["budget"]["ema_decay"], config["optim"]["layer_decay"]) == (0.99, 0.7)
    assert (config["augment"]["cutmix_alpha"], config["model"]["drop_path_rate"]) == (1.0, 0.1)
    retrained = invoke("retrain", "tech", "--device", "cpu", *common)
    assert retrained.exit_code == 0, retrained.output
    assert f"retrained trial(s) {trial.number} (folds, 2 member(s))" in retrained.stdout


def test_study_create_refuses_a_model_that_takes_no_drop_path(workdir: Path, small_csv: Path) -> None:
    (workdir / "space.yaml").write_text(
        "fixed:\n  model.name: dla34\nparams:\n  model.drop_path_rate: {type: float, low: 0.0, high: 0.2}\n"
    )
    result = invoke("study", "create", "dp", "--space", "space.yaml", "--data", str(small_csv))
    assert_one_line_error(result, "--space space.yaml", "dla34", "model.drop_path_rate to 0")
