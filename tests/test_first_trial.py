"""What keeps the first trial near: `hpo study create` checks its inputs without the training stack
(folds by numpy, model needs from shipped or cached facts, used only for the timm and torch they were
learned with), and `hpo worker` starts its trial processes before its own checks.

Every bad input the checks refuse is in tests/test_bad_inputs.py; here: that the cheap paths agree
with what they replace, and when a remembered fact is used and when not. The time itself is measured
by benchmarks/first_trial.py.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from hpo.errors import UserError
from hpo.study import create_study
from hpo.study._model_facts import MIN_SIZES, TIMM, TORCH
from hpo.study._preflight import ModelFacts, fact_key, installed_versions, shipped_min_sizes
from hpo.workers import run_workers
from tests.datasets import make_csv_dataset
from training.config import ConfigError
from training.folds import check_folds, group_fold_sizes, make_folds

NO_DROP = {"model.drop_rate": 0.0, "model.drop_path_rate": 0.0}
PLAIN = fact_key("test_resnet", NO_DROP)


def _space(tmp: Path, image_size: int, *, drop_rate: float = 0.0) -> Path:
    path = tmp / f"space-{image_size}-{drop_rate}.yaml"
    path.write_text(
        f"fixed: {{model.name: test_resnet, data.image_size: {image_size}, model.drop_rate: {drop_rate}}}\n"
        "params:\n  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
    )
    return path


@pytest.fixture
def user_cache(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty per-user cache for this test only."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "xdg"))
    return workdir / "xdg" / "foldtune"


def _plant(cache: Path, versions: tuple[str, str], facts: dict[str, int]) -> None:
    path = ModelFacts(versions, cache).cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts))


# ------------------------------------------------------------------------------------------ folds


def test_group_fold_sizes_replay_sklearn() -> None:
    """The numpy replay fills the same folds as StratifiedGroupKFold, float ties included: single-class
    groups of equal size tie on every fold the group's class has not reached yet."""
    rng = np.random.default_rng(0)
    compared = 0
    for case in range(400):
        n_groups, k, n_classes = int(rng.integers(2, 12)), int(rng.integers(2, 6)), int(rng.integers(1, 5))
        if k > n_groups:
            continue
        sizes = rng.integers(1, 4, size=n_groups)
        groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes).astype(object)
        per_group = rng.integers(0, n_classes, size=n_groups)
        labels = np.repeat(per_group, sizes) if case % 2 else rng.integers(0, n_classes, size=len(groups))
        seed = int(rng.integers(0, 100))
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the least populated class has only ... members"
            try:
                expected = [len(va) for _, va in splitter.split(np.zeros(len(labels)), labels, groups)]
            except ValueError:  # more folds than members of every class: check_folds refuses it first
                continue
        assert group_fold_sizes(labels, groups, k, seed).tolist() == expected, (case, labels, groups, k)
        compared += 1
    assert compared > 300


@pytest.mark.parametrize(
    ("n_groups", "per_group", "folds"),
    [(2, 6, 3), (8, 1, 3), (8, 6, 3), (4, 3, 5)],
)
def test_check_folds_refuses_what_make_folds_refuses(n_groups: int, per_group: int, folds: int) -> None:
    labels = np.tile(np.arange(3), n_groups * per_group)[: n_groups * per_group]
    groups = np.repeat([f"p{g}" for g in range(n_groups)], per_group).astype(object)
    for grouping in (groups, None):
        try:
            make_folds(labels, grouping, folds, 0, classes=("a", "b", "c"))
        except ConfigError as exc:
            with pytest.raises(ConfigError) as refused:
                check_folds(labels, grouping, folds, 0, classes=("a", "b", "c"))
            assert str(refused.value) == str(exc)
        else:
            check_folds(labels, grouping, folds, 0, classes=("a", "b", "c"))


# ------------------------------------------------------------------------------------------ models


def test_shipped_facts_are_what_timm_builds() -> None:
    """The shipped table is for the installed timm and torch, and each entry is what the build shows;
    regenerate it with hpo.study._preflight.write_shipped_facts() when either changes."""
    assert installed_versions() == (TIMM, TORCH)
    assert shipped_min_sizes() == MIN_SIZES


def test_create_of_a_shipped_space_imports_no_training_stack(workdir: Path, small_csv: Path) -> None:
    """The point of the cheap checks: `hpo study create` leaves torch, timm, scikit-learn and
    albumentations to the trial processes (seconds each on a small machine)."""
    code = (
        "import sys\n"
        "from hpo.study import create_study\n"
        f"create_study('s', space='quick', data={str(small_csv)!r}, storage='sqlite:///s.db')\n"
        "print(sorted({'torch', 'timm', 'sklearn', 'albumentations'} & set(sys.modules)))\n"
    )
    env = {"XDG_CACHE_HOME": str(workdir / "xdg"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_learned_fact_is_cached_for_these_versions_only(workdir: Path, user_cache: Path) -> None:
    versions = installed_versions()
    facts = ModelFacts.load(cache_dir=user_cache)
    key = fact_key("resnet18", NO_DROP)
    assert key not in facts.min_sizes  # not a shipped space's model
    facts.remember({key: 32})
    assert ModelFacts.load(cache_dir=user_cache).fits("resnet18", NO_DROP, 32)
    other = ModelFacts.load(versions=(versions[0] + ".post1", versions[1]), cache_dir=user_cache)
    assert not other.fits("resnet18", NO_DROP, 32)  # another timm: learn again
    assert not other.fits("test_resnet", NO_DROP, 32)  # ... and the shipped table is not for it either
    other = ModelFacts.load(versions=(versions[0], versions[1] + "+cu128"), cache_dir=user_cache)
    assert not other.fits("resnet18", NO_DROP, 32)  # another torch


def test_a_fact_is_keyed_by_dropout_use_and_image_size(user_cache: Path) -> None:
    facts = ModelFacts((TIMM, TORCH), user_cache, {PLAIN: 32})
    assert facts.fits("test_resnet", NO_DROP, 32)
    assert not facts.fits("test_resnet", NO_DROP, 16)  # smaller than it takes: built again, which refuses
    assert not facts.fits("test_resnet", {**NO_DROP, "model.drop_rate": 0.2}, 32)  # dropout: another fact
    assert not facts.fits("resnet18", NO_DROP, 32)


def test_create_trusts_a_cached_fact_of_these_versions(
    workdir: Path, user_cache: Path, small_csv: Path
) -> None:
    """A cached fact is used: one that says test_resnet takes 16 px lets the space through (the build
    says 32), under the installed versions only."""
    space = _space(workdir, 16)
    _plant(user_cache, ("0.0.1", "0.0.1"), {PLAIN: 16})
    with pytest.raises(ConfigError, match="16 px is too small for test_resnet; use at least 32"):
        create_study("s", space=space, data=str(small_csv), storage="sqlite:///s.db")
    _plant(user_cache, installed_versions(), {PLAIN: 16})
    create_study("s", space=space, data=str(small_csv), storage="sqlite:///s.db")


def test_a_fact_that_refuses_is_checked_by_building(workdir: Path, user_cache: Path, small_csv: Path) -> None:
    """A cached fact never refuses on its own: the model is built again, and the cache corrected."""
    _plant(user_cache, installed_versions(), {PLAIN: 64})
    create_study("s", space=_space(workdir, 32), data=str(small_csv), storage="sqlite:///s.db")
    assert ModelFacts.load(cache_dir=user_cache).min_sizes[PLAIN] == 32
    cached = json.loads(ModelFacts(installed_versions(), user_cache).cache_file().read_text())
    assert cached == {PLAIN: 32}


def test_folds_are_checked_on_every_data(workdir: Path, user_cache: Path, small_csv: Path) -> None:
    """Nothing learned on one dataset lets another through: its folds are counted each time."""
    space = _space(workdir, 32)
    create_study("ok", space=space, data=str(small_csv), storage="sqlite:///s.db")
    few = make_csv_dataset(workdir / "few", per_class=4, size=(32, 32))  # 2 groups per class
    with pytest.raises(ConfigError, match=r"with 3 folds: cv\.folds=3 but the data has only 2 groups"):
        create_study("few", space=space, data=str(few), storage="sqlite:///s.db")


# ------------------------------------------------------------------------------------------ workers


def test_gpu_count_without_torch_where_there_is_no_gpu() -> None:
    code = (
        "import sys\n"
        "from hpo.workers import gpu_count\n"
        "count, before = gpu_count(), 'torch' in sys.modules\n"
        "import torch\n"
        "print(count == torch.cuda.device_count(), before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    no_nodes = not any(Path("/dev").glob("nvidia*")) and not Path("/dev/kfd").exists()
    assert out.stdout.split() == ["True", str(not no_nodes)]


def test_a_refused_worker_leaves_no_trial_process(workdir: Path) -> None:
    """The trial processes start before the pool's checks; a refusal ends them before any trial."""
    create_study(
        "s",
        space=_space(workdir, 32),
        data=str(make_csv_dataset(workdir / "d")),
        storage="sqlite:///s.db",
        starts=False,
    )
    (workdir / "taken").write_text("a file where the checkpoint directory should be")
    with pytest.raises(UserError, match="--checkpoint-dir"):
        run_workers("s", storage="sqlite:///s.db", devices="cpu:2", checkpoint_dir=str(workdir / "taken"))
    assert mp.active_children() == []
    assert optuna.load_study(study_name="s", storage="sqlite:///s.db").trials == []
