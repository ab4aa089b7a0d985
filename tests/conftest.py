"""Shared fixtures: a working directory, small datasets and a cut-down run config (tiny model, CPU, few
epochs). Shared helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpo.testing import ServerUnavailable
from tests.datasets import make_csv_dataset

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


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own directory as CWD (``.hpo/``: cache, checkpoints, default storage land there),
    with no study storage or MLflow server inherited from the environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("HPO_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def small_csv(workdir: Path) -> Path:
    """4 classes x 12 images of 32 px in ``workdir/data``, with groups."""
    return make_csv_dataset(workdir / "data", classes=("a", "b", "c", "d"), per_class=12, size=(32, 32))


# A database server that is not there skips the test with the reason; CI
# (FOLDTUNE_TEST_REQUIRE_SERVERS=1), where the servers must be there, fails it instead.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    try:
        return (yield)
    except ServerUnavailable as exc:
        _skip_or_fail(exc)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        return (yield)
    except ServerUnavailable as exc:
        _skip_or_fail(exc)


def _skip_or_fail(exc: ServerUnavailable) -> None:
    if os.environ.get("FOLDTUNE_TEST_REQUIRE_SERVERS") == "1":
        pytest.fail(str(exc))
    pytest.skip(str(exc))
