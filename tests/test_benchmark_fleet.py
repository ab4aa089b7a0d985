"""The fleet benchmark's pure parts: aggregate images/s over the training span, the ratio and its goal,
the README rows, and the space and data it gives the workers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from benchmarks.fleet import VARIANTS, TrialTiming, VariantRun, summarize, throughput, write_data, write_space
from benchmarks.readme import TIMES, table_rows
from hpo.space import load_space


def timing(
    start: float, end: float | None, ips: float | None, seconds: float | None, params: str = "a"
) -> TrialTiming:
    return TrialTiming(0, "COMPLETE" if end else "RUNNING", start, end, ips, seconds, "h/cpu#0", params)


def test_throughput_is_the_trials_images_over_the_span_they_trained_in() -> None:
    trials = [
        timing(10.0, 40.0, 100.0, 30.0, params="x"),  # 3,000 images
        timing(12.0, 52.0, 50.0, 40.0, params="x"),  # 2,000 images, a twin of the first
        timing(50.0, None, None, None, params="y"),  # still running: not counted
    ]

    t = throughput(trials)

    assert t["images"] == pytest.approx(5000.0)
    assert t["span_s"] == pytest.approx(42.0)  # first start 10 s, last end 52 s
    assert t["images_per_s"] == pytest.approx(5000.0 / 42.0)
    assert t["trials"] == 2 and t["distinct_params"] == 1
    assert t["mean_trial_images_per_s"] == pytest.approx(75.0)
    assert math.isnan(throughput([timing(0.0, None, None, None)])["images_per_s"])


def run(variant: str, repeat: int, images_per_s: float, wall_s: float) -> VariantRun:
    # one trial of 10 s that trained images_per_s * 10 images
    return VariantRun(variant, repeat, wall_s, [0], [timing(0.0, 10.0, images_per_s, 10.0)])


def test_summary_takes_the_median_ratio_of_the_repeats_against_the_goal() -> None:
    shared, pooled = VARIANTS
    runs = [run(shared, 0, 300.0, 60.0), run(pooled, 0, 900.0, 30.0)]
    runs += [run(pooled, 1, 800.0, 32.0), run(shared, 1, 760.0, 34.0)]
    runs += [run(shared, 2, 850.0, 31.0), run(pooled, 2, 850.0, 31.0)]

    s = summarize(runs)

    assert s["ratios"] == pytest.approx([1 / 3, 0.95, 1.0])
    assert s["ratio"] == pytest.approx(0.95)
    assert s["goal_met"]
    assert s["variants"][shared]["median_images_per_s"] == pytest.approx(760.0)
    assert s["variants"][shared]["median_wall_s"] == pytest.approx(34.0)
    assert not summarize(runs[:2])["goal_met"]  # 0.33x alone misses 0.9x


def test_readme_rows_from_a_fleet_result_file(tmp_path: Path) -> None:
    shared, pooled = VARIANTS
    sharing = summarize([run(shared, 0, 120.0, 90.0), run(pooled, 0, 600.0, 40.0)])
    base = {"median_s": 0.1, "ratio": 1.0}
    payload = {
        "machine": {"cpu": "Xeon", "cores": 2, "device": "cpu", "date": "2026-12-01"},
        "quick": True,
        "loadavg_start": "5.52 4.10 3.00",
        "setup": "4 trials a run",
        "sharing": sharing,
        "cli": {
            "runs": 5,
            "times": {
                "import typer, rich": base,
                "hpo --help": {"median_s": 0.7, "ratio": 7.0},
                "hpo status": {"median_s": 1.2, "ratio": 12.0},
            },
            "modules": {
                "import hpo.cli": {"heavy": [], "notable": ["optuna"]},
                "hpo status": {"heavy": ["torch"], "notable": []},
            },
        },
    }
    (tmp_path / "fleet_quick.json").write_text(json.dumps(payload))

    rows = table_rows(tmp_path)

    assert rows[0] == (
        "two `hpo worker --devices cpu` vs one `--devices cpu:2`, aggregate images/s",
        "2-core CPU, load average 5.5 at start, --quick, 4 trials a run",
        f"0.20{TIMES} (120 vs 600 images/s; wall 90 vs 40 s)",
        f"≥ 0.9{TIMES}",
        "no",
    )
    assert (
        rows[1][2]
        == f"7.0{TIMES} (0.70 vs 0.10 s); `hpo status` 1.20 s (12.0{TIMES}); heavy modules loaded: torch"
    )
    assert rows[1][4] == "no"  # `hpo status` pulled in torch


def test_the_workers_space_is_quick_with_speed_knobs_fixed(tmp_path: Path) -> None:
    space = load_space(str(write_space(tmp_path, folds=2, epochs=3)))

    assert space.fixed["cv.folds"] == 2 and space.fixed["budget.max_epochs"] == 3
    assert space.fixed["budget.batch_size"] == 64 and space.fixed["augment.preset"] == "none"
    searched = set(space.params)
    assert not searched & {"budget.batch_size", "augment.preset", "augment.strength"}
    assert {"optim.name", "optim.lr", "loss.name"} <= searched


def test_the_data_subset_holds_whole_writer_groups(tmp_path: Path) -> None:
    subset = write_data(tmp_path, 300)
    full = subset.with_name("labels.csv")

    def rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    kept, every = rows(subset), rows(full)
    groups = {r["group"] for r in kept}
    assert 300 <= len(kept) < 300 + 10  # whole groups of a few images each, stopping once 300 are in
    assert len(kept) == sum(r["group"] in groups for r in every)  # no group cut in half
    assert all((subset.parent / r["path"]).is_file() for r in kept)
    assert write_data(tmp_path, None) == full
