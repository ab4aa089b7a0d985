"""`hpo data check` and `hpo data report` on real image files with planted defects.

The bad dataset plants one defect of every kind the check knows in a CSV manifest (plus the mask
layout's own kinds in a mask tree); each kind must be named in the CLI output, with exit code 1.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from hpo.data import KINDS, check_data, write_report
from tests.datasets import make_csv_dataset, make_imagefolder, make_mask_tree, write_image
from tests.helpers import invoke

CSV_KINDS = {  # kind -> severity planted in the bad CSV dataset
    "missing_value": "error",
    "duplicate_row": "error",
    "missing_file": "error",
    "empty_file": "error",
    "truncated_image": "error",
    "corrupt_image": "error",
    "unsupported_mode": "error",
    "converted_mode": "warning",
    "multi_frame": "warning",
    "few_samples": "error",
    "label_typo": "error",
    "group_split": "warning",
    "duplicate_image": "warning",
    "near_duplicate": "warning",
}
MASK_KINDS = {"bad_folder_name", "unknown_file", "incomplete_group", "group_split"}


def structured(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> Path:
    """A photo-like image (gradient + blobs) whose resized/re-encoded copies stay recognisable."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([xx * 200, yy * 200, (1 - xx) * 150], axis=-1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.25)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB").save(path)
    return path


def write_manifest(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    return path


def clean_rows(root: Path, classes=("cat", "dog", "bird"), per_class: int = 10) -> list[list[str]]:
    """Groups hold one class each (two images per group), as in a per-patient medical dataset."""
    rows = []
    for c, label in enumerate(classes):
        for i in range(per_class):
            rel = f"imgs/{label}_{i:02d}.png"
            write_image(root / rel, (48, 48), seed=c * 100 + i, colour=c)
            rows.append([rel, label, f"{label}-{i // 2}"])
    return rows


@pytest.fixture(scope="module")
def bad_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "data"
    rows = clean_rows(root)
    imgs = root / "imgs"

    def add(rel: str, label: str, group: str) -> None:
        rows.append([rel, label, group])

    # files: missing (also outside the CSV folder), zero bytes, truncated, garbage
    add("imgs/not_there.png", "cat", "cat-90")
    add("../outside.png", "cat", "cat-91")
    (imgs / "empty.png").write_bytes(b"")
    add("imgs/empty.png", "dog", "dog-90")
    write_image(imgs / "full.jpg", (96, 96), seed=2, colour=1)
    data = (imgs / "full.jpg").read_bytes()
    (imgs / "truncated.jpg").write_bytes(data[: len(data) // 2])
    add("imgs/truncated.jpg", "dog", "dog-91")
    (imgs / "garbage.png").write_bytes(b"this is not an image " * 20)
    add("imgs/garbage.png", "bird", "bird-90")

    # modes: converted (RGBA, CMYK, 16-bit, grey) and unsupported (LAB)
    def rgb(seed: int) -> Image.Image:
        return Image.open(write_image(imgs / f"src_{seed}.png", (48, 48), seed=seed, colour=2)).convert("RGB")

    rgb(801).convert("RGBA").save(imgs / "rgba.png")
    rgb(802).convert("CMYK").save(imgs / "cmyk.jpg")
    Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 28).save(imgs / "deep16.png")
    rgb(804).convert("L").save(imgs / "grey.png")
    rgb(805).convert("LAB").save(imgs / "lab.tif")
    for i, name in enumerate(("rgba.png", "cmyk.jpg", "deep16.png", "grey.png", "lab.tif")):
        add(f"imgs/{name}", "bird", f"bird-{80 + i}")
    first = Image.open(structured(imgs / "anim_src.png", seed=7)).convert("RGB")
    first.save(imgs / "anim.tif", save_all=True, append_images=[Image.new("RGB", first.size)])
    add("imgs/anim.tif", "dog", "dog-92")
    # rows: empty label, duplicate row
    add("imgs/cat_01.png", "cat", "cat-0")  # listed twice
    add("imgs/cat_02.png", "", "cat-1")
    # a class too thin for 5 folds; a label typo ("Cat" next to "cat")
    for i in range(2):
        write_image(imgs / f"owl_{i}.png", (48, 48), seed=500 + i, colour=5)
        add(f"imgs/owl_{i}.png", "owl", f"owl-{i}")
    write_image(imgs / "typo.png", (48, 48), seed=600, colour=0)
    add("imgs/typo.png", "Cat", "cat-92")
    # a group spanning two classes while every other group holds one
    write_image(imgs / "mixed.png", (48, 48), seed=700, colour=1)
    add("imgs/mixed.png", "dog", "cat-3")
    # an exact copy and a near copy (resized, brighter, JPEG) in other groups
    shutil.copy(imgs / "bird_03.png", imgs / "copy_of_bird_03.png")
    add("imgs/copy_of_bird_03.png", "bird", "bird-93")
    structured(imgs / "photo.png", seed=11)
    add("imgs/photo.png", "cat", "cat-4")
    near = ImageEnhance.Brightness(Image.open(imgs / "photo.png").resize((80, 80))).enhance(1.05)
    near.save(imgs / "photo_copy.jpg", quality=90)
    add("imgs/photo_copy.jpg", "cat", "cat-93")
    return write_manifest(root / "labels.csv", rows)


def normalized(text: str) -> str:
    return " ".join(text.split())


def test_check_names_every_planted_defect(bad_csv: Path) -> None:
    result = invoke("data", "check", str(bad_csv))
    assert result.exit_code == 1, result.output
    out = normalized(result.stdout)
    for kind, severity in CSV_KINDS.items():
        assert re.search(rf"\b{severity} {kind}\b", out), f"{severity} {kind} missing from:\n{result.stdout}"
    assert "Traceback" not in result.output


def test_check_points_at_the_right_files(bad_csv: Path) -> None:
    report = check_data(bad_csv)
    where = {(f.kind, f.where) for f in report.findings}
    text = " ".join(f"{f.kind} {f.where} {f.message}" for f in report.findings)
    assert set(CSV_KINDS) <= report.kinds()
    assert not report.ok and report.errors and report.warnings
    assert ("label_typo", "label 'Cat'") in where
    assert ("few_samples", "class 'owl'") in where
    assert ("group_split", "group 'cat-3'") in where
    for needle in (
        "not_there.png",
        "outside.png",
        "mode LAB",
        "mode RGBA",
        "mode CMYK",
        "mode I;16",
        "mode L",
    ):
        assert needle in text, needle
    dup = next(f for f in report.findings if f.kind == "duplicate_image")
    assert "bird_03.png" in dup.message and "copy_of_bird_03.png" in dup.message
    near = next(f for f in report.findings if f.kind == "near_duplicate")
    assert "photo.png" in near.message and "photo_copy.jpg" in near.message
    truncated = next(f for f in report.findings if f.kind == "truncated_image")
    assert truncated.where.startswith("imgs/truncated.jpg (row ")  # the file and its CSV row
    # only the planted pair is a near duplicate: noisy images of one class are not
    assert sum(f.kind == "near_duplicate" for f in report.findings) == 1


def test_json_output_parses_and_lists_findings(bad_csv: Path) -> None:
    result = invoke("data", "check", str(bad_csv), "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["n_errors"] > 0
    assert {f["kind"] for f in payload["findings"]} >= set(CSV_KINDS)
    assert all(f["kind"] in KINDS and f["severity"] in ("error", "warning") for f in payload["findings"])


def test_clean_dataset_passes(tmp_path: Path) -> None:
    csv_path = write_manifest(tmp_path / "labels.csv", clean_rows(tmp_path))
    result = invoke("data", "check", str(csv_path))
    assert result.exit_code == 0, result.output
    assert "0 error(s), 0 warning(s)" in normalized(result.stdout)
    payload = json.loads(invoke("data", "check", str(csv_path), "--json").stdout)
    assert payload["ok"] and payload["findings"] == [] and payload["n_images"] == 30


def test_clean_helpers_datasets_pass(tmp_path: Path) -> None:
    """The test-suite datasets: groups that mix classes by design are not flagged."""
    csv_path = make_csv_dataset(tmp_path / "csv", per_class=10, size=(32, 32))
    assert check_data(csv_path).findings == []
    folder = make_imagefolder(tmp_path / "folder", per_class=5, size=(32, 32))
    report = check_data(folder)
    assert report.findings == [] and report.n_groups is None and report.n_classes == 3


def test_warnings_only_exit_zero(tmp_path: Path) -> None:
    rows = clean_rows(tmp_path)
    Image.open(tmp_path / "imgs/cat_00.png").convert("L").save(tmp_path / "imgs/cat_00.png")
    result = invoke("data", "check", str(write_manifest(tmp_path / "labels.csv", rows)))
    assert result.exit_code == 0, result.output
    assert "warning converted_mode" in normalized(result.stdout)


def test_label_one_typo_apart_is_a_warning(tmp_path: Path) -> None:
    rows = clean_rows(tmp_path, classes=("healthy", "diseased"), per_class=10)
    write_image(tmp_path / "imgs/x.png", (48, 48), seed=9)
    rows.append(["imgs/x.png", "helthy", "healthy-9"])
    report = check_data(write_manifest(tmp_path / "labels.csv", rows), folds=2)
    typos = [f for f in report.findings if f.kind == "label_typo"]
    assert [(f.severity, f.where) for f in typos] == [("warning", "label 'helthy'")]


def test_folds_option_changes_thin_class_verdict(tmp_path: Path) -> None:
    csv_path = write_manifest(tmp_path / "labels.csv", clean_rows(tmp_path, per_class=6))  # 3 groups/class
    assert invoke("data", "check", str(csv_path), "--folds", "3").exit_code == 0
    assert invoke("data", "check", str(csv_path)).exit_code == 0  # 3 folds, as `hpo study create`'s default
    result = invoke("data", "check", str(csv_path), "--folds", "4")
    assert result.exit_code == 1 and "error few_samples" in normalized(result.stdout)


def test_mask_layout_defects(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=12, size=(32, 32), with_eval=False)
    images = root / "train" / "images"
    people = sorted(images.iterdir())
    typo = images / people[0].name.replace("male", "mael")
    people[0].rename(typo)  # gender typo
    people = sorted(images.iterdir())
    write_image(people[2] / "mask6.jpg", (32, 32), seed=3)  # unknown stem
    (people[3] / "normal.png").unlink(missing_ok=True)
    (people[3] / "normal.jpg").unlink(missing_ok=True)  # incomplete person
    shutil.copytree(people[4], images / (people[4].name.split("_")[0] + "_female_Asian_45"))  # same id twice
    result = invoke("data", "check", str(root), "--folds", "2")
    assert result.exit_code == 1, result.output
    out = normalized(result.stdout)
    for kind in MASK_KINDS:
        assert f" {kind} " in f" {out} ", f"{kind} missing from:\n{result.stdout}"
    assert typo.name in out


def test_clean_mask_tree_passes(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=12, size=(32, 32), with_eval=False)
    report = check_data(root, folds=2)
    assert report.findings == [] and report.n_groups == 12 and report.n_images == 84


def eval_findings(root: Path) -> tuple[int, str, dict]:
    """`hpo data check` on a mask tree: exit code, the text output (one line per finding), the JSON."""
    text = invoke("data", "check", str(root), "--folds", "2")
    as_json = invoke("data", "check", str(root), "--folds", "2", "--json")
    return text.exit_code, normalized(text.stdout), json.loads(as_json.stdout)


def test_mask_eval_split_is_checked_through_the_cli(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=12, size=(32, 32), n_eval=4)
    code, out, report = eval_findings(root)
    assert code == 0 and report["n_eval_images"] == 4 and report["findings"] == [], out
    info = root / "eval" / "info.csv"
    lines = info.read_text().splitlines()

    info.write_text("\n".join(["id,ans", *lines[1:]]) + "\n")  # the header users mistype
    code, out, report = eval_findings(root)
    assert code == 1
    assert f"error manifest {info}: missing column 'ImageID' (found: id, ans)" in out
    assert [f["kind"] for f in report["findings"]] == ["manifest"]

    gone = lines[2].split(",")[0]
    (root / "eval" / "images" / gone).unlink()  # listed in info.csv, not on disk
    corrupt = lines[3].split(",")[0]
    (root / "eval" / "images" / corrupt).write_bytes(b"\xff\xd8 not really a JPEG")
    info.write_text("\n".join(lines) + "\n")
    code, out, report = eval_findings(root)
    assert code == 1
    assert f"error missing_file {info} row 3: image '{gone}' not found" in out
    assert f"error corrupt_image eval/images/{corrupt} (row 4)" in out
    assert sorted(f["kind"] for f in report["findings"]) == ["corrupt_image", "missing_file"]
    assert report["n_eval_images"] == 3  # the missing one cannot be looked at


def test_mask_classes_are_named_in_the_check_and_the_report(tmp_path: Path) -> None:
    root = make_mask_tree(tmp_path / "mask", n_people=6, size=(32, 32), with_eval=False)
    result = invoke("data", "check", str(root), "--folds", "2")
    out = normalized(result.stdout)
    # the class table: every class by mask/gender/age band, with its count and share
    assert "0 wear/male/<30 5 11.9%" in out and "17 not wear/female/>=60 1 2.4%" in out
    assert "error few_samples class '9 incorrect/female/<30': 1 image but 2 folds" in out
    counts = json.loads(invoke("data", "check", str(root), "--folds", "2", "--json").stdout)["class_counts"]
    assert list(counts)[:2] == ["0 wear/male/<30", "1 wear/male/30-59"] and len(counts) == 18

    page = write_report(root, tmp_path / "report").html.read_text()
    assert "<h3>4 wear/female/30-59</h3>" in page and "incorrect/male/&gt;=60" in page
    # other layouts keep their class names, numeric ones included
    csv_path = make_csv_dataset(tmp_path / "digits", classes=("0", "1", "4"), per_class=6, size=(32, 32))
    counts = json.loads(invoke("data", "check", str(csv_path), "--folds", "2", "--json").stdout)[
        "class_counts"
    ]
    assert list(counts) == ["0", "1", "4"]


def test_missing_source_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = invoke("data", "check", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr.startswith("hpo: error: ") and "does not exist" in result.stderr
    assert "Traceback" not in result.output
    assert invoke("data", "check", str(tmp_path), "--folds", "1").exit_code == 2


def test_quiet_json_has_nothing_on_stderr(tmp_path: Path) -> None:
    csv_path = write_manifest(tmp_path / "labels.csv", clean_rows(tmp_path))
    result = invoke("--quiet", "data", "check", str(csv_path), "--json")
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout)["ok"] is True


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def test_report_writes_pngs_and_html(tmp_path: Path) -> None:
    csv_path = write_manifest(tmp_path / "data" / "labels.csv", clean_rows(tmp_path / "data"))
    out = tmp_path / "report"
    result = invoke("data", "report", str(csv_path), "--out", str(out), "--samples", "4")
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert {"class_balance.png", "group_sizes.png", "image_sizes.png"} <= set(pngs)
    assert [p for p in pngs if p.startswith("samples/")] == [f"samples/class_{c:03d}.png" for c in range(3)]
    for png in pngs:
        assert f'src="{png}"' in page, png
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 50
    referenced = re.findall(r'src="([^"]+)"', page)
    assert all((out / ref).is_file() for ref in referenced)
    for needle in ("cat", "dog", "bird", "cat-0", "48x48", "30 images, 3 classes, 15 groups"):
        assert needle in page, needle
    assert not list(out.rglob("*.tmp"))


def test_report_without_groups_and_with_html_in_class_names(tmp_path: Path) -> None:
    folder = make_imagefolder(tmp_path / "data", classes=("a<b>", "plain"), per_class=3, size=(32, 24))
    files = write_report(folder, tmp_path / "r")
    page = files.html.read_text()
    assert "a&lt;b&gt;" in page and "<b>" not in page
    assert "no groups" in page and "group_sizes.png" not in files.images
    assert "32x24" in page


def test_report_on_broken_data_is_one_line(tmp_path: Path) -> None:
    result = invoke("data", "report", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and result.stderr.startswith("hpo: error: ")
