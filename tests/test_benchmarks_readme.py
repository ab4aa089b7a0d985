"""The README benchmark table: rows from result JSON files, only the text between the markers replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.readme import END, START, TIMES, update_readme

CPU = {"cpu": "Xeon", "cores": 2, "device": "cpu", "date": "2026-11-28"}
GPU = {"cpu": "Xeon", "cores": 16, "device": "NVIDIA H100 80GB HBM3", "date": "2026-11-23"}


def write(results: Path, name: str, payload: dict) -> None:
    (results / f"{name}.json").write_text(json.dumps(payload))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    write(
        results,
        "train_throughput_cuda_resnet50",
        {
            "machine": GPU,
            "rows": [
                ["fit vs bare timm loop", "resnet50 224px b64", 3055.1, 3308.6, 0.923, 0.95],
                ["cached vs decode-per-epoch", "384x512 JPEG -> 224, 1 core", 2535.3, 297.8, 8.51, 8.0],
            ],
        },
    )
    write(
        results,
        "pruning_quick",
        {
            "machine": CPU,
            "setup": "TPE, 12 trials x 2 folds x <= 4 epochs",
            "goal": {"f1_within": 0.01, "epochs_ratio_at_most": 1 / 3},
            "summary": {
                "none": {"epochs_ratio": [1.0, 0.0], "f1_diff": [0.0, 0.0], "goal_met": False},
                "median": {"epochs_ratio": [0.27, 0.02], "f1_diff": [-0.004, 0.003], "goal_met": True},
            },
        },
    )
    suite = {
        "machine": CPU,
        "total_s": 600.0,
        "loadavg_start": 0.4,
        "scripts": [],
        "results": ["pruning_quick"],
    }
    write(results, "suite", suite)
    return results


def test_table_rows_replace_only_the_text_between_the_markers(tmp_path: Path, results: Path) -> None:
    readme = tmp_path / "README.md"
    before, after = "# project\n\nintro\n\n", "\n\n## Layout\n\nunchanged | text\n"
    readme.write_text(f"{before}{START}\nan old table\n{END}{after}")

    update_readme(readme, results)

    text = readme.read_text()
    assert text.startswith(before + START + "\n") and text.endswith(END + after)
    inside = text[text.index(START) + len(START) : text.index(END)]
    assert "an old table" not in inside
    assert "2 cores (load average 0.40 when it began), 10.0 min in all" in inside
    rows = [line for line in inside.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [  # throughput before pruning; the GPU file is not from the suite run: recorded
        "| `fit` vs a bare timm loop | NVIDIA H100 80GB HBM3 (recorded 2026-11-23), resnet50 224px b64 "
        f"| 0.92{TIMES} | ≥ 0.95{TIMES} | no |",
        "| cached vs decode-per-epoch loader | NVIDIA H100 80GB HBM3 (recorded 2026-11-23), "
        f"384x512 JPEG -> 224, 1 core | 8.51{TIMES} | ≥ 8{TIMES} | yes |",
        "| pruner median vs none | 2-core CPU, TPE, 12 trials x 2 folds x <= 4 epochs "
        f"| epochs 0.27 ± 0.02{TIMES}, best F1 -0.004 ± 0.003 | ≤ 0.33{TIMES} epochs, F1 within 0.01 | yes |",
    ]
    update_readme(readme, results)  # idempotent: the same inputs give the same file
    assert readme.read_text() == text


def test_a_readme_without_markers_is_left_alone(tmp_path: Path, results: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# project\n")
    with pytest.raises(ValueError, match="benchmarks:start"):
        update_readme(readme, results)
    assert readme.read_text() == "# project\n"
    assert [p.name for p in tmp_path.iterdir() if p.name != "results"] == ["README.md"]  # no temp file left
