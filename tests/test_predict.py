"""Model bundles and `hpo predict` / `hpo evaluate` on local bundles: ensemble + TTA arithmetic,
the submission layouts, atomic output and one-line errors. Real files, real models, no MLflow."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from hpo.models import Bundle, Member, load_bundle, save_bundle
from tests.datasets import make_csv_dataset, make_mask_tree, mask_label, write_image
from tests.helpers import assert_one_line_error, invoke
from training.cache import decode_image
from training.config import RunConfig
from training.loop import predict_proba
from training.metrics import mask_attribute_f1
from training.models import build_model, normalization

CLASSES = tuple(str(c) for c in range(18))
SIZES = (32, 48)  # two members at different input sizes: each must get its own preprocessing


@pytest.fixture(scope="module")
def members() -> list[Member]:
    out = []
    for seed, size in enumerate(SIZES):
        torch.manual_seed(seed)
        config = RunConfig.from_dict(
            {"model": {"name": "test_resnet"}, "data": {"image_size": size}, "augment": {"hflip": True}}
        )
        model = build_model(config.model, len(CLASSES))
        with torch.no_grad():  # random BN statistics make the members disagree visibly
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
        mean, std = normalization(model)
        out.append(Member(config=config, state=model.state_dict(), mean=mean, std=std, trial=seed, fold=0))
    return out


@pytest.fixture(scope="module")
def bundle_dir(members: list[Member], tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = Bundle(classes=CLASSES, members=members, tta="hflip", info={"study": "unit"})
    return save_bundle(bundle, tmp_path_factory.mktemp("model") / "bundle")


@pytest.fixture(scope="module")
def mask_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mask_tree(tmp_path_factory.mktemp("data") / "mask", n_people=2, size=(40, 30), n_eval=7)


def write_manifest(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["path", "label"], *rows])
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def expected_member_probs(member: Member, files: list[Path], *, hflip: bool) -> np.ndarray:
    """One member's probabilities computed the training way: decode_image + predict_proba's own TTA."""
    model = build_model(member.config.model, len(CLASSES))
    model.load_state_dict(member.state)
    images = np.stack([decode_image(f, member.image_size) for f in files])
    return predict_proba(
        model, images, mean=member.mean, std=member.std, device=torch.device("cpu"), hflip=hflip
    )


def test_bundle_round_trip_holds_no_pickle(bundle_dir: Path, members: list[Member]) -> None:
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "bundle.json",
        "member-0.safetensors",
        "member-1.safetensors",
    ]
    loaded = load_bundle(bundle_dir)
    assert loaded.classes == CLASSES and loaded.tta == "hflip" and loaded.vote == "soft"
    assert [m.image_size for m in loaded.members] == list(SIZES)
    for original, copy in zip(members, loaded.members, strict=True):
        assert copy.mean == original.mean and copy.config == original.config
        assert all(torch.equal(original.state[k], copy.state[k]) for k in original.state)


def test_mask_layout_writes_every_eval_image_once(workdir: Path, bundle_dir: Path, mask_root: Path) -> None:
    out = workdir / "sub" / "submission.csv"
    result = invoke("predict", "--model", str(bundle_dir), "--data", str(mask_root), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "ImageID,ans" in result.stdout and "tta=hflip" in result.stdout  # TTA default from the model
    header, rows = read_csv(out)
    info = [line.split(",")[0] for line in (mask_root / "eval" / "info.csv").read_text().splitlines()[1:]]
    assert header == ["ImageID", "ans"]
    assert [r[0] for r in rows] == info  # every eval image once, in info.csv order
    assert all(r[1] in CLASSES for r in rows)
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_soft_vote_with_tta_is_the_mean_of_member_probabilities(
    workdir: Path, bundle_dir: Path, members: list[Member], mask_root: Path, tta: str
) -> None:
    images = mask_root / "eval" / "images"
    out = workdir / "probs.csv"
    result = invoke(
        "predict",
        "--model",
        str(bundle_dir),
        "--data",
        str(images),
        "--out",
        str(out),
        "--tta",
        tta,
        "--probs",
    )
    assert result.exit_code == 0, result.output
    header, rows = read_csv(out)
    assert header == ["path", "label", *(f"prob_{c}" for c in CLASSES)]
    files = [images / r[0] for r in rows]
    assert sorted(r[0] for r in rows) == sorted(p.name for p in images.iterdir())
    per_member = [expected_member_probs(m, files, hflip=tta == "hflip") for m in members]
    expected = np.mean(per_member, axis=0)
    got = np.array([[float(v) for v in r[2:]] for r in rows])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [r[1] for r in rows] == [CLASSES[i] for i in expected.argmax(axis=1)]
    # the members really differ, so a mean that ignored one of them would fail above
    assert np.abs(per_member[0] - per_member[1]).max() > 1e-3


def test_hard_vote_follows_the_members_majority(
    workdir: Path, bundle_dir: Path, members: list[Member], mask_root: Path
) -> None:
    images = mask_root / "eval" / "images"
    out = workdir / "hard.csv"
    args = ("--data", str(images), "--out", str(out), "--tta", "none", "--vote", "hard", "--probs")
    result = invoke("predict", "--model", str(bundle_dir), *args)
    assert result.exit_code == 0, result.output
    _, rows = read_csv(out)
    files = [images / r[0] for r in rows]
    votes = np.stack([expected_member_probs(m, files, hflip=False).argmax(axis=1) for m in members])
    for row, (a, b) in zip(rows, votes.T, strict=True):
        shares = np.array([float(v) for v in row[2:]])
        if a == b:  # agreement: that class with the whole vote
            assert row[1] == CLASSES[a] and shares[a] == pytest.approx(1.0, abs=1e-5)
        else:  # a tie of two: one of the two, each with half the vote
            assert row[1] in (CLASSES[a], CLASSES[b])
            assert shares[a] == pytest.approx(0.5, abs=1e-5) and shares[b] == pytest.approx(0.5, abs=1e-5)


def test_evaluate_and_predict_labels_report_macro_f1(
    workdir: Path, bundle_dir: Path, mask_root: Path
) -> None:
    import json

    evaluated = invoke("evaluate", "--model", str(bundle_dir), "--data", str(mask_root), "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    out = workdir / "labeled.csv"
    predicted = invoke(
        "predict", "--model", str(bundle_dir), "--data", str(mask_root), "--out", str(out), "--labels"
    )
    assert predicted.exit_code == 0, predicted.output
    assert "macro-F1" in predicted.stdout
    _, rows = read_csv(out)
    truth = []
    for path, _label in rows:  # <id>_<gender>_<race>_<age>/<stem>.<ext>
        person, file = path.split("/")
        _, gender, _, age = person.split("_")
        truth.append(mask_label(Path(file).stem, gender, int(age)))
    pred = [int(r[1]) for r in rows]
    expected = f1_score(truth, pred, labels=list(range(18)), average="macro", zero_division=0)
    assert report["macro_f1"] == pytest.approx(expected)
    assert len(report["per_class"]) == 18 and len(rows) == 2 * 7
    assert all(0 <= int(r[1]) < 18 for r in rows)  # answers stay class indices; names are for reading
    # the mask layout: classes by name, and macro-F1 per attribute of the class
    assert report["per_class"]["4"]["name"] == "4 wear/female/30-59"
    assert report["attribute_f1"] == pytest.approx(mask_attribute_f1(np.array(truth), np.array(pred)))
    text = invoke("evaluate", "--model", str(bundle_dir), "--data", str(mask_root))
    assert text.exit_code == 0, text.output
    assert "17 not wear/female/>=60" in text.stdout
    shown = ", ".join(f"{k} {v:.4f}" for k, v in report["attribute_f1"].items())
    assert f"macro-F1 per attribute: {shown}" in " ".join(text.stdout.split())
    assert report["training_overlap"] is None  # the bundle knows no training data to compare with
    assert "warning" not in text.stderr


def evaluate_json(bundle: Path, data: Path):
    import json

    result = invoke("evaluate", "--model", str(bundle), "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["training_overlap"], " ".join(result.stderr.split())


def test_evaluate_warns_when_the_labeled_set_holds_training_images(
    workdir: Path, members: list[Member], mask_root: Path
) -> None:
    from training.config import apply_overrides
    from training.data import load_table

    train_csv = make_csv_dataset(workdir / "train", classes=("0", "1"), per_class=4, size=(32, 32))
    trained_on = [apply_overrides(m.config, {"data.source": str(train_csv)}, where="test") for m in members]
    bundle = save_bundle(
        Bundle(
            classes=CLASSES,
            members=[Member(c, m.state, m.mean, m.std) for c, m in zip(trained_on, members, strict=True)],
            info={"data_fingerprint": load_table(mask_root).fingerprint()},
        ),
        workdir / "model",
    )

    # a copy of the study's data elsewhere: the fingerprint says it is the training data
    copy = workdir / "copy-of-mask"
    shutil.copytree(mask_root, copy)
    overlap, stderr = evaluate_json(bundle, copy)
    assert overlap == {"n_images": 14, "n_seen": 14, "how": "same data fingerprint"}
    assert "warning: 14 of 14 labeled images are images the model was trained on" in stderr
    assert "not a held-out score" in stderr

    # a set of 3 training files (by path), 2 copies of training images and 2 new images
    rows = [[f"../train/imgs/0_0{i}.png", "0"] for i in range(3)]
    (workdir / "mixed").mkdir()
    for i in range(2):
        shutil.copy(workdir / "train" / "imgs" / f"1_0{i}.png", workdir / "mixed" / f"copy{i}.png")
        rows.append([f"copy{i}.png", "1"])
    for i in range(2):
        write_image(workdir / "mixed" / f"new{i}.png", (32, 32), seed=900 + i, colour=i)
        rows.append([f"new{i}.png", str(i)])
    write_manifest(workdir / "mixed" / "labels.csv", rows)
    overlap, stderr = evaluate_json(bundle, workdir / "mixed" / "labels.csv")
    assert overlap == {"n_images": 7, "n_seen": 5, "how": "same files and identical copies"}
    assert "warning: 5 of 7 labeled images" in stderr

    # held out: new images only, none of them a copy
    write_manifest(workdir / "mixed" / "held-out.csv", rows[-2:])
    overlap, stderr = evaluate_json(bundle, workdir / "mixed" / "held-out.csv")
    assert overlap == {"n_images": 2, "n_seen": 0, "how": "none"} and "warning" not in stderr


def test_a_failure_midway_writes_nothing(workdir: Path, bundle_dir: Path) -> None:
    images = workdir / "eval"
    for i in range(6):
        write_image(images / f"{i}.png", (40, 30), seed=i, colour=i)
    (images / "3.png").write_bytes(b"not an image at all")  # decoding fails after others succeeded
    out = workdir / "submission.csv"
    out.write_text("previous,file\n")
    result = invoke("predict", "--model", str(bundle_dir), "--data", str(images), "--out", str(out))
    assert_one_line_error(result, "3.png", "cannot decode")
    assert out.read_text() == "previous,file\n"  # an older file is left as it was
    fresh = workdir / "new.csv"
    result = invoke("predict", "--model", str(bundle_dir), "--data", str(images), "--out", str(fresh))
    assert_one_line_error(result, "3.png")
    assert not fresh.exists()
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]


def test_predicting_from_a_local_bundle_loads_no_mlflow(
    workdir: Path, bundle_dir: Path, mask_root: Path
) -> None:
    """The bundle format stands alone: `hpo predict --model DIR` never imports MLflow."""
    code = (
        "import sys; from typer.testing import CliRunner; from hpo.cli import app\n"
        "result = CliRunner().invoke(app, ['predict', '--model', sys.argv[1], '--data', sys.argv[2],"
        " '--out', 'sub.csv', '--device', 'cpu'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('mlflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(bundle_dir), str(mask_root)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (workdir / "sub.csv").read_text().startswith("ImageID,ans\n")
