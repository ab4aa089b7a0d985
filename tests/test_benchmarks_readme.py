"""benchmarks/README.md's table: rows from result JSON files read by column name, only the text between the
markers replaced, and the shipped table is what the shipped results give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import RESULTS
from benchmarks.readme import END, START, TIMES, Row, render, update_readme

ROOT = Path(__file__).resolve().parents[1]

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
            # read by these names: a column added or moved by the benchmark changes nothing here
            "columns": ["setup", "comparison", "ours img/s", "baseline img/s", "goal", "ratio", "extra"],
            "rows": [
                ["resnet50 224px b64", "fit vs bare timm loop", 3055.1, 3308.6, 0.95, 0.923, 1],
                ["384x512 JPEG -> 224, 1 core", "cached vs decode-per-epoch", 2535.3, 297.8, 8.0, 8.51, 2],
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
    header, *rows = [line for line in inside.splitlines() if line.startswith("| ") and "---" not in line]
    assert header == "| " + " | ".join(Row._fields) + " |"
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


def test_a_row_that_does_not_match_its_columns_names_the_file(tmp_path: Path, results: Path) -> None:
    bad = {"machine": CPU, "columns": ["comparison", "setup"], "rows": [["fit vs bare timm loop"]]}
    write(results, "train_throughput_cpu_x", bad)
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    with pytest.raises(ValueError, match=r"train_throughput_cpu_x\.json: not the layout"):
        update_readme(readme, results)


def test_the_shipped_table_is_what_the_shipped_results_give() -> None:
    text = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    inside = text[text.index(START) + len(START) : text.index(END)]
    assert inside == f"\n{render(RESULTS)}\n", (
        "benchmarks/README.md's table differs from benchmarks/results/: "
        "rebuild it with `python -m benchmarks --readme-only`"
    )
    top = (ROOT / "README.md").read_text(encoding="utf-8")
    assert START not in top and END not in top, "the top README holds no numbers that runs rewrite"
