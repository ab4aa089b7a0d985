"""Losses, optimizers and learning-rate schedules by name."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.config import ConfigError, LossConfig, OptimConfig, SchedConfig
from training.losses import LOSSES, build_loss, inverse_frequency_weights
from training.optim import OPTIMIZERS, SCHEDULERS, LRSchedule, build_optimizer, build_scheduler

COUNTS = np.array([50, 10, 5, 1])


def _batch(seed: int = 0, n: int = 16, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=gen, requires_grad=True)
    targets = torch.randint(0, c, (n,), generator=gen)
    return logits, targets


# --- losses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "weighted"), itertools.product(sorted(LOSSES), [False, True]))
def test_every_loss_is_a_finite_differentiable_scalar(name, weighted):
    loss_fn = build_loss(LossConfig(name=name, class_weights=weighted), COUNTS)
    logits, targets = _batch()
    loss = loss_fn(logits, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_equals_cross_entropy(weighted):
    logits, targets = _batch(1)
    focal = build_loss(LossConfig(name="focal", gamma=0.0, class_weights=weighted), COUNTS)
    ce = build_loss(LossConfig(name="ce", class_weights=weighted), COUNTS)
    assert focal(logits, targets).item() == pytest.approx(ce(logits, targets).item(), rel=1e-6)


def test_focal_down_weights_easy_examples():
    logits, targets = _batch(2)
    ce = build_loss(LossConfig(name="ce"), COUNTS)(logits, targets)
    focal = build_loss(LossConfig(name="focal", gamma=2.0), COUNTS)(logits, targets)
    assert 0 < focal < ce


def test_focal_stays_finite_on_saturated_logits():
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    loss = build_loss(LossConfig(name="focal", gamma=0.5), np.array([1, 1]))(logits, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_label_smoothing_costs_more_than_ce_on_confident_correct_logits():
    targets = torch.tensor([0, 1, 2, 3])
    logits = F.one_hot(targets, 4).float() * 20
    ce = build_loss(LossConfig(name="ce"), COUNTS)(logits, targets)
    smooth = build_loss(LossConfig(name="label_smoothing", smoothing=0.1), COUNTS)(logits, targets)
    assert ce < 1e-6 < smooth


def test_soft_f1_is_in_unit_interval_and_tracks_correctness():
    loss_fn = build_loss(LossConfig(name="soft_f1"), COUNTS)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    right = F.one_hot(targets, 4).float() * 20
    wrong = F.one_hot((targets + 1) % 4, 4).float() * 20
    for seed in range(5):
        assert 0.0 <= loss_fn(*_batch(seed)).item() <= 1.0
    assert loss_fn(right, targets).item() == pytest.approx(0.0, abs=1e-4)
    assert loss_fn(wrong, targets).item() == pytest.approx(1.0, abs=1e-4)


def test_class_weights_change_the_loss():
    logits, targets = _batch(3)
    for name in ("ce", "focal", "label_smoothing"):
        plain = build_loss(LossConfig(name=name), COUNTS)(logits, targets)
        weighted = build_loss(LossConfig(name=name, class_weights=True), COUNTS)(logits, targets)
        assert plain.item() != pytest.approx(weighted.item()), name


def test_inverse_frequency_weights_have_mean_one_and_handle_empty_classes():
    weights = inverse_frequency_weights(np.array([40, 10, 0, 20]))
    seen = weights[[0, 1, 3]]
    assert seen.mean().item() == pytest.approx(1.0)
    assert weights[1] > weights[3] > weights[0]
    assert weights[2].item() == 1.0
    assert torch.isfinite(weights).all()


def test_loss_weights_move_with_the_module():
    loss_fn = build_loss(LossConfig(name="focal", class_weights=True), COUNTS)
    assert "weight" in dict(loss_fn.named_buffers())


def test_unknown_loss_is_config_error_listing_names():
    with pytest.raises(ConfigError, match=r"unknown loss 'dice'.*ce, focal, label_smoothing, soft_f1"):
        build_loss(LossConfig.model_construct(name="dice", class_weights=False), COUNTS)


# --- optimizers and schedules -------------------------------------------------------------------

EPOCHS, STEPS = 6, 4


def _train(opt_name: str, sched: SchedConfig, *, val_loss: float = 1.0):
    """Run EPOCHS x STEPS optimizer steps on a tiny model; return the LR used by each step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = build_optimizer(OptimConfig(name=opt_name, lr=0.1), model)
    schedule = build_scheduler(sched, optimizer, epochs=EPOCHS, steps_per_epoch=STEPS)
    before = [p.detach().clone() for p in model.parameters()]
    lrs = []
    for _ in range(EPOCHS):
        for _ in range(STEPS):
            lrs.append(schedule.lr)
            optimizer.zero_grad()
            F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(val_loss)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    return np.array(lrs), changed


def _per_epoch(lrs: np.ndarray) -> np.ndarray:
    by_epoch = lrs.reshape(EPOCHS, STEPS)
    assert (by_epoch == by_epoch[:, :1]).all(), "epoch schedules keep the LR within an epoch"
    return by_epoch[:, 0]


@pytest.mark.parametrize(
    ("opt_name", "sched_name"), itertools.product(sorted(OPTIMIZERS), sorted(SCHEDULERS))
)
def test_every_optimizer_and_schedule_trains_and_follows_its_lr(opt_name, sched_name):
    cfg = SchedConfig(name=sched_name, warmup_epochs=2, step_size=2, gamma=0.1, factor=0.5, patience=1)
    lrs, changed = _train(opt_name, cfg)
    assert changed
    assert lrs.max() <= 0.1 + 1e-9
    ramp = [0.1 / 3, 0.2 / 3]  # two warmup epochs: lr / (warmup + 1), then 2 lr / (warmup + 1)
    if sched_name == "none":
        assert np.allclose(_per_epoch(lrs), [*ramp, 0.1, 0.1, 0.1, 0.1])
    elif sched_name == "step":  # StepLR counts its epochs from the end of warmup
        assert np.allclose(_per_epoch(lrs), [*ramp, 0.1, 0.1, 0.01, 0.01])
    elif sched_name == "cosine":
        epoch_lrs = _per_epoch(lrs)
        assert np.allclose(epoch_lrs[:3], [*ramp, 0.1])
        assert (np.diff(epoch_lrs[2:]) < 0).all() and epoch_lrs[-1] > 0  # cosine decay
    elif sched_name == "plateau":
        # flat loss after warmup: epoch 2 sets the best, 3-4 do not improve, patience 1 -> halve after 4
        assert np.allclose(_per_epoch(lrs), [*ramp, 0.1, 0.1, 0.1, 0.05])
    elif sched_name == "onecycle":  # its rise lasts the two warmup epochs: a third of the steps
        peak = int(lrs.argmax())
        assert peak == 2 * STEPS - 1
        assert lrs.max() == pytest.approx(0.1, rel=1e-2)
        assert lrs[0] < 0.1 / 10 and lrs[-1] < lrs[0]
        assert (np.diff(lrs[: peak + 1]) > 0).all() and (np.diff(lrs[peak:]) < 0).all()


def test_plateau_keeps_lr_while_loss_improves():
    cfg = SchedConfig(name="plateau", factor=0.5, patience=0)
    optimizer = build_optimizer(OptimConfig(lr=0.1), torch.nn.Linear(2, 2))
    schedule = build_scheduler(cfg, optimizer, epochs=5, steps_per_epoch=1)
    for loss in (1.0, 0.8, 0.6):
        optimizer.step()
        schedule.step_epoch(loss)
    assert schedule.lr == pytest.approx(0.1)
    schedule.step_epoch(0.9)
    assert schedule.lr == pytest.approx(0.05)


def test_onecycle_ignores_steps_past_its_end():
    optimizer = build_optimizer(OptimConfig(lr=0.1), torch.nn.Linear(2, 2))
    schedule = build_scheduler(SchedConfig(name="onecycle"), optimizer, epochs=2, steps_per_epoch=3)
    for _ in range(10):
        optimizer.step()
        schedule.step_batch()
    assert schedule.lr < 0.1 / 100


def test_warmup_longer_than_training_is_shortened():
    optimizer = build_optimizer(OptimConfig(lr=0.1), torch.nn.Linear(2, 2))
    schedule = build_scheduler(
        SchedConfig(name="cosine", warmup_epochs=10), optimizer, epochs=3, steps_per_epoch=1
    )
    seen = []
    for _ in range(3):
        seen.append(schedule.lr)
        optimizer.step()
        schedule.step_epoch(1.0)
    assert seen[0] < seen[1] < seen[2] == pytest.approx(0.1)


@pytest.mark.parametrize("sched_name", sorted(SCHEDULERS))
def test_schedule_state_round_trips_through_weights_only_load(sched_name):
    cfg = SchedConfig(name=sched_name, warmup_epochs=1, step_size=1, patience=0)

    def make() -> tuple[torch.optim.Optimizer, LRSchedule]:
        optimizer = build_optimizer(OptimConfig(name="sgd", lr=0.1), torch.nn.Linear(2, 2))
        return optimizer, build_scheduler(cfg, optimizer, epochs=4, steps_per_epoch=3)

    def run(optimizer, schedule, epochs):
        for _ in range(epochs):
            for _ in range(3):
                optimizer.step()
                schedule.step_batch()
            schedule.step_epoch(1.0)

    optimizer, schedule = make()
    run(optimizer, schedule, 2)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed_opt, resumed = make()
    resumed_opt.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["schedule"])
    assert resumed.lr == pytest.approx(schedule.lr)
    run(optimizer, schedule, 2)
    run(resumed_opt, resumed, 2)
    assert resumed.lr == pytest.approx(schedule.lr)


def test_model_params_skip_frozen_and_decay_only_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    model[0].weight.requires_grad_(False)
    optimizer = build_optimizer(OptimConfig(name="adamw", weight_decay=0.05), model)
    decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert decay[0.05] == {id(model[2].weight)}
    assert decay[0.0] == {id(p) for p in (model[0].bias, model[1].weight, model[1].bias, model[2].bias)}


def test_sgd_options_reach_the_optimizer():
    cfg = OptimConfig(name="sgd", lr=0.01, momentum=0.8, nesterov=True, weight_decay=0.0)
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2).parameters())
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.01, 0.8, True)


def test_bad_optimizer_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"momentum"):
        build_optimizer(OptimConfig(name="sgd", momentum=0.0, nesterov=True), torch.nn.Linear(2, 2))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match=r"no trainable parameters"):
        build_optimizer(OptimConfig(), frozen)
    with pytest.raises(ConfigError, match=r"unknown optimizer 'lion'.*adam, adamw, sgd"):
        build_optimizer(OptimConfig.model_construct(name="lion", lr=0.1), torch.nn.Linear(2, 2))
