"""Pretrained weights as timm users get them: downloaded through huggingface_hub from the endpoint in
HF_ENDPOINT (here a Hub the test serves on 127.0.0.1), once, into HF_HOME; then read offline.

The CLI runs as real processes: huggingface_hub reads its environment when it is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import save

from tests.helpers import HPO, SPACE, assert_one_line_error, free_port, invoke, trials_of
from tests.hub_server import Hub, hub_server
from training.config import ModelConfig
from training.models import build_model

RESNET, EFFNET = "timm/test_resnet.r160_in1k", "timm/test_efficientnet.r160_in1k"
PRETRAINED_SPACE = SPACE.format(epochs=1).replace(
    "  budget.max_epochs", "  model.pretrained: true\n  budget.max_epochs"
)


def _state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name), num_classes=10).state_dict()


@pytest.fixture(scope="module")
def served() -> dict[str, dict[str, torch.Tensor]]:
    """Random-init weights of two timm test models, as their Hub repos would hold them."""
    return {RESNET: _state("test_resnet", 1), EFFNET: _state("test_efficientnet", 2)}


@pytest.fixture
def hub(served) -> Hub:
    with hub_server({(repo, "model.safetensors"): save(state) for repo, state in served.items()}) as running:
        yield running


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf"


@pytest.fixture
def offline(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process offline with an empty cache in ``hf_home`` (read when called, not at import)."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_home


def _hpo(*args: str, cwd: Path, hf_home: Path, endpoint: str) -> subprocess.CompletedProcess:
    """``hpo ARGS`` online (unlike the rest of the tests) against ``endpoint``, caching in ``hf_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HPO_STORAGE"))}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint)
    return subprocess.run([HPO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _snapshot_file(hf_home: Path, repo: str) -> Path:
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots"
    (found,) = folder.glob("*/model.safetensors")
    return found


def test_fetch_downloads_once_then_build_model_loads_it_offline(
    tmp_path: Path, hub: Hub, offline: Path, served
) -> None:
    hf_home = offline  # for this process; the CLI processes are online
    first = _hpo("weights", "fetch", "test_resnet", cwd=tmp_path, hf_home=hf_home, endpoint=hub.url)
    assert first.returncode == 0, first.stderr
    assert f"test_resnet  {RESNET}  model.safetensors" in first.stdout and "downloaded" in first.stdout
    assert hub.downloads() == [f"/{RESNET}/resolve/main/model.safetensors"]
    assert _snapshot_file(hf_home, RESNET).is_file()

    seen = len(hub.requests)
    again = _hpo("weights", "fetch", "test_resnet", cwd=tmp_path, hf_home=hf_home, endpoint=hub.url)
    assert again.returncode == 0, again.stderr
    assert "cached" in again.stdout and "downloaded" not in again.stdout
    assert len(hub.requests) == seen  # the cache answered: not even a HEAD

    model = build_model(ModelConfig(name="test_resnet", pretrained=True), num_classes=3)
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):  # a new 3-class classifier; everything else is the Hub's
            assert torch.equal(value, served[RESNET][key]), key
    assert model.fc.out_features == 3
    assert len(hub.requests) == seen


def test_fetch_a_space_gets_every_model_it_can_pick(tmp_path: Path, hub: Hub, hf_home: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "fixed: {data.image_size: 32}\n"
        "params:\n"
        "  model.name: {type: categorical, choices: [test_resnet, test_efficientnet]}\n"
        "  model.pretrained: {type: categorical, choices: [true, false]}\n"
    )
    done = _hpo("weights", "fetch", "--space", str(space), cwd=tmp_path, hf_home=hf_home, endpoint=hub.url)
    assert done.returncode == 0, done.stderr
    assert len([line for line in done.stdout.splitlines() if line.endswith("downloaded")]) == 2
    assert sorted(hub.downloads()) == sorted(f"/{r}/resolve/main/model.safetensors" for r in (RESNET, EFFNET))
    assert _snapshot_file(hf_home, EFFNET).is_file()


# timm (and torch) first, so that the time measured is the command's, not the imports'
_TIMED_FETCH = """
import sys, time, timm
from typer.testing import CliRunner
from hpo.cli import app
start = time.monotonic()
result = CliRunner().invoke(app, ["weights", "fetch", "test_resnet"])
print(time.monotonic() - start, result.exit_code)
sys.stderr.write(result.stderr)
"""


def test_unreachable_hub_fails_fast_with_one_line(tmp_path: Path, hf_home: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=dead)
    done = subprocess.run(
        [sys.executable, "-c", _TIMED_FETCH],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took, code = done.stdout.split()
    assert code == "2", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), done.stderr
    for needle in ("'test_resnet'", "unreachable", dead, "`hpo weights fetch test_resnet`"):
        assert needle in lines[0], lines[0]
    assert float(took) < 5, took  # huggingface_hub alone retries a dead endpoint for ~25 s


def test_unknown_model_is_one_line(offline: Path) -> None:
    assert_one_line_error(
        invoke("weights", "fetch", "tset_resnet"),
        "unknown timm model 'tset_resnet'",
        "did you mean test_resnet",
    )


def test_offline_without_the_weights_names_the_fetch_command(offline: Path) -> None:
    assert_one_line_error(
        invoke("weights", "fetch", "test_resnet"), RESNET, "not in the cache", str(offline), "offline"
    )


def test_study_create_offline_without_the_weights_creates_nothing(
    workdir: Path, offline: Path, small_csv: Path
) -> None:
    (workdir / "space.yaml").write_text(PRETRAINED_SPACE)
    db = workdir / "s.db"
    result = invoke(
        "study",
        "create",
        "s",
        "--space",
        "space.yaml",
        "--data",
        str(small_csv),
        "--storage",
        f"sqlite:///{db}",
    )
    assert_one_line_error(
        result, "--space space.yaml:", "'test_resnet'", "offline", "`hpo weights fetch --space space.yaml`"
    )
    assert not db.exists()


@pytest.mark.slow
def test_study_create_fetches_and_a_worker_trains_from_the_cache_offline(
    tmp_path: Path, hub: Hub, hf_home: Path, small_csv: Path
) -> None:
    (tmp_path / "space.yaml").write_text(PRETRAINED_SPACE)
    url = f"sqlite:///{tmp_path / 's.db'}"
    create = ("study", "create", "s", "--space", "space.yaml", "--data", str(small_csv), "--storage", url)
    done = _hpo(*create, "--folds", "2", "--pruner", "none", cwd=tmp_path, hf_home=hf_home, endpoint=hub.url)
    assert done.returncode == 0, done.stderr
    assert hub.downloads() == [f"/{RESNET}/resolve/main/model.safetensors"]  # study create filled the cache

    seen = len(hub.requests)
    dead = f"http://127.0.0.1:{free_port()}"  # the worker's machine cannot reach any Hub
    work = ("worker", "s", "--storage", url, "--devices", "cpu", "--n-trials", "1")
    done = _hpo(*work, cwd=tmp_path, hf_home=hf_home, endpoint=dead)
    assert done.returncode == 0, done.stderr
    (trial,) = trials_of(url, "s")
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["config"]["model"]["pretrained"] is True
    assert len(hub.requests) == seen
