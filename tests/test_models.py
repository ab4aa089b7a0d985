"""Model building, weights from local files and the offline cache, freezing, input requirements."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import FrozenBatchNormAct2d
from torchvision.ops.misc import FrozenBatchNorm2d

from training.config import ConfigError, ModelConfig
from training.models import apply_freeze, build_model, min_input_size, normalization, stage_count

TINY = ["test_resnet", "test_efficientnet", "test_convnext"]


def _model(name: str = "test_resnet", num_classes: int = 3, **kwargs) -> torch.nn.Module:
    return build_model(ModelConfig(name=name, **kwargs), num_classes)


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _frozen(model: torch.nn.Module) -> set[str]:
    """Frozen parameter names, counting BatchNorm affine tensors turned into frozen buffers."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d | FrozenBatchNormAct2d):
            frozen |= {f"{name}.weight", f"{name}.bias"}
    return frozen


# --- building -----------------------------------------------------------------------------------


def test_builds_with_requested_classes_and_forwards():
    model = _model("test_efficientnet", num_classes=7, drop_rate=0.2)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)


def test_unknown_model_is_config_error_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet_18'.*did you mean.*resnet18"):
        _model("resnet_18")


def test_normalization_returns_mean_and_std_triples():
    mean, std = normalization(_model("test_efficientnet"))
    assert len(mean) == 3 and len(std) == 3
    assert all(isinstance(v, float) for v in (*mean, *std))
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    assert normalization(_model("test_resnet")) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize("name", TINY)
def test_min_input_size_is_total_stride_and_forwards(name):
    model = _model(name).eval()
    side = min_input_size(model)
    assert side == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, side, side)).shape == (1, 3)


# --- freezing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_freeze_none_leaves_everything_trainable(name):
    model = _model(name)
    apply_freeze(model, "none")
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_convnext"])
def test_freeze_head_trains_only_the_classifier(name):
    model = _model(name)
    classifier = {id(p) for p in model.get_classifier().parameters()}
    apply_freeze(model, "head")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {id(p) for p in trainable} == classifier


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_freeze_stages_grows_with_n_and_keeps_the_classifier(name):
    frozen = []
    for n in range(stage_count(_model(name)) + 1):
        model = _model(name)
        apply_freeze(model, f"stages:{n}")
        frozen.append(_frozen(model))
        assert all(p.requires_grad for p in model.get_classifier().parameters())
    assert frozen[0], "stages:0 freezes the stem"
    for fewer, more in itertools.pairwise(frozen):
        assert fewer < more


def test_freeze_stages_matches_resnet_layers():
    model = _model("test_resnet")
    apply_freeze(model, "stages:2")
    frozen = _frozen(model)
    assert "conv1.0.weight" in frozen and "layer2.0.conv1.weight" in frozen
    assert "layer3.0.conv1.weight" not in frozen and "fc.weight" not in frozen
    assert model.layer3[0].conv1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("test_resnet", 4),
        ("test_efficientnet", 5),
        ("test_convnext", 4),
        ("resnet18", 4),
        ("efficientnet_b0", 7),
    ],
)
def test_stage_count_and_too_many_stages_is_config_error(name, stages):
    model = _model(name)
    assert stage_count(model) == stages
    apply_freeze(model, f"stages:{stages}")
    with pytest.raises(ConfigError, match=rf"stages:{stages + 1}.*stages:0 to stages:{stages}"):
        apply_freeze(model, f"stages:{stages + 1}")


def test_frozen_batchnorm_keeps_running_stats_in_train_mode():
    model = _model("test_resnet")
    apply_freeze(model, "stages:1")
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer2[0].bn1, torch.nn.BatchNorm2d)
    frozen_before = model.layer1[0].bn1.running_mean.clone()
    live_before = model.layer2[0].bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 32, 32) * 3 + 1).sum().backward()
    assert torch.equal(model.layer1[0].bn1.running_mean, frozen_before)
    assert not torch.equal(model.layer2[0].bn1.running_mean, live_before)
    assert model.conv1[0].weight.grad is None and model.fc.weight.grad is not None


def test_frozen_model_state_loads_into_an_unfrozen_one():
    frozen = _model("test_efficientnet")
    apply_freeze(frozen, "stages:3")
    fresh = _model("test_efficientnet")
    fresh.load_state_dict(frozen.state_dict(), strict=True)
    assert torch.equal(fresh.conv_stem.weight, frozen.conv_stem.weight)


# --- pretrained weights -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return _model("test_resnet", num_classes=10)


def _assert_backbone_loaded(model: torch.nn.Module, source: torch.nn.Module) -> None:
    saved = source.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, saved[key]), key
    assert model.fc.weight.shape == (3, source.fc.in_features)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_local_file_with_new_classifier(tmp_path, source_model, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(source_model.state_dict(), str(path))
    else:
        torch.save(source_model.state_dict(), path)
    model = _model("test_resnet", num_classes=3, pretrained=str(path))
    _assert_backbone_loaded(model, source_model)


def test_pretrained_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"weights file .* not found"):
        _model(pretrained=str(tmp_path / "missing.safetensors"))


def test_pretrained_file_of_another_architecture_is_config_error(tmp_path, source_model):
    path = tmp_path / "resnet.safetensors"
    save_file(source_model.state_dict(), str(path))
    with pytest.raises(ConfigError, match=r"do not fit 'test_convnext'"):
        _model("test_convnext", pretrained=str(path))


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when build_model runs; restored after the test
    return tmp_path


def test_pretrained_true_with_empty_cache_fails_fast(hf_home):
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"timm/test_resnet\.r160_in1k.*not in the cache.*HF_HOME"):
        _model(pretrained=True)
    assert time.monotonic() - start < 10


def test_pretrained_true_loads_from_offline_cache(hf_home, source_model):
    repo = hf_home / "hub" / "models--timm--test_resnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    save_file(source_model.state_dict(), str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    start = time.monotonic()
    model = _model(pretrained=True)
    assert time.monotonic() - start < 10
    _assert_backbone_loaded(model, source_model)
