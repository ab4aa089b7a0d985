"""Shared fixtures: the built-in sample dataset and a cut-down run config (tiny model, CPU, few epochs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.sample import materialize_sample

    return materialize_sample(tmp_path_factory.mktemp("data") / "sample")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_config(sample_csv: Path, cache_dir: Path):
    """test_resnet at 32 px on CPU, 2 epochs: seconds per fold."""
    from training.config import RunConfig

    return RunConfig.from_dict(
        {
            "data": {"source": str(sample_csv), "image_size": 32, "cache_dir": str(cache_dir)},
            "model": {"name": "test_resnet"},
            "augment": {"preset": "none", "hflip": False},
            "optim": {"name": "adamw", "lr": 3e-3},
            "budget": {"max_epochs": 2, "batch_size": 64, "device": "cpu", "patience": None},
        }
    )
