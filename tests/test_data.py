from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.datasets import (
    make_csv_dataset,
    make_imagefolder,
    make_mask_tree,
    mask_label,
    write_image,
)
from tests.racing import race
from training.config import ConfigError
from training.data import ImageTable, detect_format, load_table, load_unlabeled
from training.sample import materialize_sample


def _write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one_line_error(excinfo: pytest.ExceptionInfo[ConfigError], *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ---------------------------------------------------------------------------------------------
# CSV manifests
# ---------------------------------------------------------------------------------------------


def test_csv_loads_labels_groups_and_files(tmp_path: Path) -> None:
    csv_path = make_csv_dataset(tmp_path, classes=("cat", "ant", "bee"), per_class=4)
    table = load_table(csv_path)
    assert detect_format(csv_path) == "csv"
    assert table.root == tmp_path.resolve()
    assert table.classes == ("ant", "bee", "cat")  # sorted strings
    assert len(table) == 12
    assert table.labels.dtype == np.int64
    assert table.paths[0] == "imgs/cat_00.png"
    assert table.labels[0] == table.classes.index("cat")
    assert table.groups is not None and list(table.groups[:4]) == ["g0", "g0", "g1", "g1"]
    assert all(table.file(i).is_file() for i in range(len(table)))
    assert table.class_counts().tolist() == [4, 4, 4]


def test_csv_without_groups(tmp_path: Path) -> None:
    table = load_table(make_csv_dataset(tmp_path, groups=False))
    assert table.groups is None


def test_csv_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        write_image(tmp_path / f"{name}.png")
    csv_path = _write_csv(tmp_path / "m.csv", "path,label\na.png,10\nb.png,2\nc.png,1\nd.png,02\n")
    table = load_table(csv_path)
    assert table.classes == ("1", "2", "10")
    assert table.labels.tolist() == [2, 1, 0, 1]


def test_csv_normalizes_paths_inside_its_folder(tmp_path: Path) -> None:
    a = write_image(tmp_path / "sub" / "a.png")
    write_image(tmp_path / "b.png")
    csv_path = tmp_path / "m.csv"
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(tmp_path)
    via_link = tmp_path.parent / f"{tmp_path.name}-link" / "b.png"
    write_image(tmp_path / "c.png")
    csv_path.write_text(
        f"path,label\n{a},x\n./sub/../b.png,y\nsub\\..\\c.png,y\n{via_link},z\n", encoding="utf-8-sig"
    )
    with pytest.raises(ConfigError, match="already listed on row 3"):  # b.png twice, once via the link
        load_table(csv_path)
    csv_path.write_text(f"path,label\n{a},x\n./sub/../b.png,y\nsub\\..\\c.png,y\n", encoding="utf-8-sig")
    table = load_table(csv_path)
    assert table.paths == ("sub/a.png", "b.png", "c.png")


def test_csv_paths_may_point_outside_its_folder(tmp_path: Path) -> None:
    """As users' CSVs list them: relative to the CSV with ``../``, or absolute anywhere."""
    data, elsewhere = tmp_path / "data", tmp_path / "photos"
    write_image(data / "a.png")
    b = write_image(elsewhere / "b.png")
    write_image(elsewhere / "c.png")
    csv_path = _write_csv(data / "m.csv", f"path,label\na.png,x\n{b},y\n../photos/c.png,y\n")
    table = load_table(csv_path)
    assert table.root == data.resolve()
    assert table.paths == ("a.png", "../photos/b.png", "../photos/c.png")
    assert all(table.file(i).is_file() for i in range(len(table)))
    copy = tmp_path / "copy"  # the same layout elsewhere: same relative paths, same fingerprint
    shutil.copytree(data, copy / "data")
    shutil.copytree(elsewhere, copy / "photos")
    moved = _write_csv(
        copy / "data" / "m2.csv", "path,label\na.png,x\n../photos/b.png,y\n../photos/c.png,y\n"
    )
    assert load_table(moved).fingerprint() == table.fingerprint()


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("file,label\na.png,x\n", ["missing column 'path'", "path,label[,group]"]),
        ("path,class\na.png,x\n", ["missing column 'label'", "found: path, class"]),
        ("path,label\n", ["lists no images", "one line per image"]),
        ("", ["lists no images"]),
        ("path,label\na.png,x\n../nowhere.png,y\n", ["row 3", "'../nowhere.png' not found", "fix the path"]),
        ("path,label\na.png,x\nmissing.png,y\n", ["row 3", "'missing.png' not found", "fix the path"]),
        ("path,label\na.png,x\nb.png,x\n", ["every row has label 'x'", "two classes"]),
        ("path,label\na.png,x\na.png,y\n", ["row 3", "already listed on row 2"]),
        ("path,label,group\na.png,x,g1\nb.png,y,\n", ["row 3", "empty group"]),
        ("path,label\na.png,x\nb.png,\n", ["row 3", "empty label"]),
    ],
)
def test_csv_errors_are_one_helpful_line(tmp_path: Path, content: str, needles: list[str]) -> None:
    data = tmp_path / "data"
    write_image(data / "a.png")
    write_image(data / "b.png")
    outside = write_image(tmp_path / "outside.png")
    csv_path = _write_csv(data / "m.csv", content.format(outside=outside))
    with pytest.raises(ConfigError) as excinfo:
        load_table(csv_path)
    message = _one_line_error(excinfo, *needles)
    assert "m.csv" in message


def test_missing_or_empty_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_table(tmp_path / "nope.csv")
    _one_line_error(excinfo, "nope.csv", "does not exist", "CSV manifest")
    with pytest.raises(ConfigError) as excinfo:
        load_table("")
    _one_line_error(excinfo, "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as excinfo:
        load_table(tmp_path / "empty")
    _one_line_error(excinfo, "no class folders", "<root>/<class>")
    with pytest.raises(ConfigError) as excinfo:
        load_unlabeled(tmp_path / "empty")
    _one_line_error(excinfo, "no images")


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def test_imagefolder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "if", classes=("dog", "cat", "bird"), per_class=4)
    (root / "notes.txt").write_text("not an image")
    (root / "cat" / "readme.md").write_text("not an image")
    (root / ".cache").mkdir()
    write_image(root / ".cache" / "x.png")
    (root / "empty_class").mkdir()
    assert detect_format(root) == "imagefolder"
    table = load_table(root)
    assert table.classes == ("bird", "cat", "dog")
    assert len(table) == 12
    assert table.groups is None
    assert "cat/002.JPEG" in table.paths  # upper-case extensions count
    for i in range(len(table)):
        assert table.paths[i].split("/")[0] == table.classes[table.labels[i]]


def test_imagefolder_needs_two_classes(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "if", classes=("only",), per_class=2)
    with pytest.raises(ConfigError) as excinfo:
        load_table(root, "imagefolder")
    _one_line_error(excinfo, "at least two classes")


def test_unlabeled_directory_and_csv(tmp_path: Path) -> None:
    write_image(tmp_path / "test" / "b.png")
    write_image(tmp_path / "test" / "a.jpg")
    write_image(tmp_path / "test" / "sub" / "c.webp")
    (tmp_path / "test" / "info.txt").write_text("x")
    table = load_unlabeled(tmp_path / "test")
    assert table.ids == table.paths == ("a.jpg", "b.png", "sub/c.webp")
    assert table.layout == "files"
    assert all(table.file(i).is_file() for i in range(len(table)))

    csv_path = _write_csv(tmp_path / "test" / "list.csv", "path\nsub/c.webp\nb.png\n")
    table = load_unlabeled(csv_path)
    assert table.ids == ("sub/c.webp", "b.png")
    _write_csv(csv_path, "file\nb.png\n")
    with pytest.raises(ConfigError) as excinfo:
        load_unlabeled(csv_path)
    _one_line_error(excinfo, "missing column 'path'")


# ---------------------------------------------------------------------------------------------
# Mask-competition layout
# ---------------------------------------------------------------------------------------------


def test_mask_layout_labels_and_groups(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=6)
    (root / "train" / "images" / "000001_male_Asian_20" / "._mask1.jpg").write_bytes(b"mac litter")
    assert detect_format(root) == "mask"
    table = load_table(root)
    assert table.classes == tuple(str(c) for c in range(18))
    assert table.root == (root / "train" / "images").resolve()
    assert len(table) == 6 * 7
    assert table.groups is not None
    for i, rel in enumerate(table.paths):
        folder, filename = rel.split("/")
        person_id, gender, _, age = folder.split("_")
        stem = filename.rsplit(".", 1)[0]
        assert table.labels[i] == mask_label(stem, gender, int(age))
        assert table.groups[i] == person_id
    # spot checks of the formula on known folders
    label = {p.rsplit(".", 1)[0]: int(table.labels[i]) for i, p in enumerate(table.paths)}
    assert label["000001_male_Asian_20/mask1"] == 0  # wear, male, <30
    assert label["000002_female_Asian_30/normal"] == 2 * 6 + 3 + 1  # not wear, female, 30-59
    assert label["000003_male_Asian_60/incorrect_mask"] == 6 + 2  # incorrect, male, >=60
    assert label["000004_female_Asian_29/mask5"] == 3  # wear, female, <30
    assert label["000005_male_Asian_59/normal"] == 12 + 1  # not wear, male, 30-59
    assert label["000006_female_Asian_75/incorrect_mask"] == 6 + 3 + 2  # incorrect, female, >=60
    assert sorted(set(table.labels.tolist())) == list(range(18))  # six people cover every class
    assert {p.rsplit(".", 1)[1] for p in table.paths} == {"jpg", "png"}
    # the train/images dir itself is accepted and is the same data
    same = load_table(root / "train" / "images")
    assert same.paths == table.paths and same.fingerprint() == table.fingerprint()


def test_mask_eval_ids_in_info_csv_order(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=1, n_eval=6)
    info = (root / "eval" / "info.csv").read_text().splitlines()
    expected = tuple(line.split(",")[0] for line in info[1:])
    assert list(expected) != sorted(expected)  # order must come from the CSV, not the filesystem
    table = load_unlabeled(root)
    assert table.ids == expected
    assert table.layout == "mask"  # predict writes the submission's ImageID,ans for this layout
    assert all(table.file(i).is_file() for i in range(len(table)))
    assert table.root == (root / "eval" / "images").resolve()
    assert load_unlabeled(root / "eval").ids == expected


@pytest.mark.parametrize(
    ("folder", "filename", "needles"),
    [
        ("000009_robot_Asian_40", "mask1.jpg", ["000009_robot_Asian_40", "<id>_<gender>_<race>_<age>"]),
        ("000009_male_Asian", "mask1.jpg", ["000009_male_Asian", "rename or remove"]),
        ("000009_male_Asian_old", "mask1.jpg", ["000009_male_Asian_old"]),
        ("000009_male_Asian_40", "mask9.jpg", ["000009_male_Asian_40", "mask9.jpg", "incorrect_mask"]),
    ],
)
def test_mask_bad_names(tmp_path: Path, folder: str, filename: str, needles: list[str]) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=1, with_eval=False)
    write_image(root / "train" / "images" / folder / filename)
    with pytest.raises(ConfigError) as excinfo:
        load_table(root)
    _one_line_error(excinfo, *needles)


def test_mask_eval_missing_image(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=1, n_eval=2)
    next((root / "eval" / "images").iterdir()).unlink()
    with pytest.raises(ConfigError) as excinfo:
        load_unlabeled(root)
    _one_line_error(excinfo, "info.csv row", "not found")


def test_mask_without_eval(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=1, with_eval=False)
    with pytest.raises(ConfigError) as excinfo:
        load_unlabeled(root)
    _one_line_error(excinfo, "eval/info.csv")


# ---------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------


def test_fingerprint_tracks_data_not_location_or_mtime(tmp_path: Path) -> None:
    csv_path = make_csv_dataset(tmp_path / "d", per_class=3)
    first = load_table(csv_path).fingerprint()
    assert len(first) == 16 and int(first, 16) >= 0
    assert load_table(csv_path).fingerprint() == first

    os.utime(tmp_path / "d" / "imgs" / "a_00.png", (1, 1))
    assert load_table(csv_path).fingerprint() == first  # mtimes do not matter

    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    assert load_table(tmp_path / "copy" / "labels.csv").fingerprint() == first  # nor the location

    with (tmp_path / "d" / "imgs" / "a_00.png").open("ab") as f:
        f.write(b"\0")
    grown = load_table(csv_path).fingerprint()
    assert grown != first

    text = csv_path.read_text().replace("imgs/a_00.png,a,", "imgs/a_00.png,b,")
    csv_path.write_text(text)
    assert load_table(csv_path).fingerprint() not in (first, grown)


def test_fingerprint_changes_with_groups_and_classes() -> None:
    root = Path(__file__).parent
    base = ImageTable(root, ("datasets.py", "__init__.py"), np.array([0, 1]), ("a", "b"), None)
    grouped = ImageTable(root, base.paths, base.labels, base.classes, np.array(["x", "y"], dtype=object))
    renamed = ImageTable(root, base.paths, base.labels, ("a", "c"), None)
    assert len({base.fingerprint(), grouped.fingerprint(), renamed.fingerprint()}) == 3


# ---------------------------------------------------------------------------------------------
# Built-in sample
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize_sample(tmp_path_factory.mktemp("sample") / "sample")


def test_sample_loads_with_writer_groups(
    digits_csv: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HPO_SAMPLE_DIR", str(digits_csv.parent))
    assert detect_format("sample") == "sample"
    table = load_table("sample")
    assert len(table) == 1797
    assert table.classes == tuple(str(d) for d in range(10))
    assert table.class_counts().min() > 150
    assert table.groups is not None
    _, per_group = np.unique(table.groups, return_counts=True)
    assert per_group.max() == 6 and np.median(per_group) == 6  # 1797 = 299 * 6 + 3
    mixed = [len(set(table.labels[table.groups == g].tolist())) for g in np.unique(table.groups)[:20]]
    assert max(mixed) > 1  # groups mix classes
    with Image.open(table.file(0)) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    unlabeled = load_unlabeled("sample")
    assert unlabeled.paths == table.paths


def test_sample_default_location_is_under_cwd(
    digits_csv: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HPO_SAMPLE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(digits_csv.parent, tmp_path / ".hpo" / "sample")
    assert load_table("sample").root == (tmp_path / ".hpo" / "sample").resolve()


def test_sample_is_deterministic_and_idempotent(digits_csv: Path, tmp_path: Path) -> None:
    mtime = digits_csv.stat().st_mtime_ns
    assert materialize_sample(digits_csv.parent) == digits_csv
    assert digits_csv.stat().st_mtime_ns == mtime  # second call writes nothing
    other = materialize_sample(tmp_path / "again")
    assert _tree_digest(other.parent) == _tree_digest(digits_csv.parent)


def test_sample_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("user data")
    with pytest.raises(ConfigError) as excinfo:
        materialize_sample(tmp_path / "taken")
    _one_line_error(excinfo, "HPO_SAMPLE_DIR")


def test_sample_concurrent_materialization(digits_csv: Path, tmp_path: Path) -> None:
    dest = tmp_path / "shared" / "sample"
    assert race(materialize_sample, dest) == [dest / "labels.csv"] * 2
    assert _tree_digest(dest) == _tree_digest(digits_csv.parent)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["sample"]  # no temp dirs left behind
