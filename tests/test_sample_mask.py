"""The built-in ``sample-mask``: the mask competition's layout, 18 classes, few ages >= 60, usable by
name wherever a dataset is (load_table, load_unlabeled, hpo data check)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import invoke
from training.data import detect_format, load_table, load_unlabeled, sample_dir
from training.layouts import mask_attributes
from training.sample import materialize_mask_sample


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A samples folder: ``sample-mask`` is written beside ``$HPO_SAMPLE_DIR``'s digits."""
    root = tmp_path_factory.mktemp("samples")
    materialize_mask_sample(root / "sample-mask")
    return root


@pytest.fixture
def env(samples: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HPO_SAMPLE_DIR", str(samples / "sample"))
    return samples


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def test_sample_mask_is_the_mask_layout_with_the_real_sets_imbalance(env: Path) -> None:
    assert sample_dir("sample-mask") == env / "sample-mask"
    assert detect_format("sample-mask") == "mask"
    table = load_table("sample-mask")
    assert table.layout == "mask" and table.root == (env / "sample-mask" / "train" / "images").resolve()
    assert len(table) == 270 * 7 and table.classes == tuple(str(c) for c in range(18))
    assert set(table.labels.tolist()) == set(range(18))  # every class has images
    people, per_person = np.unique(table.groups, return_counts=True)
    assert len(people) == 270 and set(per_person.tolist()) == {7}
    parts = mask_attributes(table.labels)
    assert np.bincount(parts["mask"]).tolist() == [270 * 5, 270, 270]  # 5 masked photos a person
    old = np.mean(parts["age"] == 2)
    assert 0.03 < old < 0.12  # few people >= 60, as in the competition's set
    assert 0.5 < np.mean(parts["gender"] == 1) < 0.7
    eval_split = load_unlabeled("sample-mask")
    assert eval_split.layout == "mask" and len(eval_split) == 60 * 7
    assert not set(eval_split.paths) & set(table.paths)


def test_sample_mask_is_the_same_bytes_every_time(env: Path, tmp_path: Path) -> None:
    again = materialize_mask_sample(tmp_path / "again")
    assert digest(again) == digest(env / "sample-mask")
    assert materialize_mask_sample(again) == again  # present: nothing rewritten


def test_data_check_passes_on_sample_mask(env: Path) -> None:
    result = invoke("data", "check", "sample-mask")
    assert result.exit_code == 0, result.output
    assert "1890 images, 18 classes, 270 groups (mask): 0 error(s), 0 warning(s): ok" in result.stdout
