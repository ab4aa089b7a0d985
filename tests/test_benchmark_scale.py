"""The scale benchmark's parts: the generated portraits, the long study written straight into Optuna's
tables (the same trials as ``add_trials``), the speed-up maths, a CLI's refusal, and the README rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from benchmarks import portraits
from benchmarks.big_study import insert_trials, make_trials
from benchmarks.readme import TIMES, table_rows
from benchmarks.scale import CHECK_GOAL, refusal, speedup
from hpo.cli import app
from hpo.space import load_space
from hpo.study import StudySpec, study_status
from training.config import RunConfig
from training.layouts import scan_mask


def test_portraits_are_deterministic_and_differ_between_people_and_photos() -> None:
    first = portraits.portrait(3, "mask1")
    assert first.shape == (512, 384, 3) and first.dtype == np.uint8
    assert np.array_equal(first, portraits.portrait(3, "mask1"))
    assert not np.array_equal(first, portraits.portrait(4, "mask1"))
    assert not np.array_equal(first, portraits.portrait(3, "normal"))
    assert portraits.folder_name(3) == portraits.folder_name(3)


def test_a_generated_set_is_the_mask_layout_and_is_reused(tmp_path: Path) -> None:
    root = portraits.dataset(tmp_path, 6, jobs=1)

    scan = scan_mask(root)
    assert not scan.problems
    assert len(scan.entries) == 6 * 7 and len({e.group for e in scan.entries}) == 6
    assert portraits.missing(tmp_path, 6) == []
    stamp = (root / "train" / "images" / portraits.folder_name(0) / "normal.jpg").stat().st_mtime_ns
    assert portraits.dataset(tmp_path, 6, jobs=1) == root  # nothing rewritten
    assert (root / "train" / "images" / portraits.folder_name(0) / "normal.jpg").stat().st_mtime_ns == stamp
    bigger = portraits.dataset(tmp_path, 8, jobs=1)  # the first 6 from the store, 2 new
    assert len(scan_mask(bigger).entries) == 8 * 7


@pytest.fixture
def spec() -> StudySpec:
    return StudySpec(load_space("quick"), RunConfig(), "fingerprint", "tpe", "median", 0)


def test_inserted_trials_read_back_as_add_trials_writes_them(tmp_path: Path, spec: StudySpec) -> None:
    trials = make_trials(spec, 40, seed=1, start=dt.datetime(2026, 12, 1, 9, 0, 0))
    urls = [f"sqlite:///{tmp_path / name}.db" for name in ("added", "inserted")]
    added, inserted = (optuna.create_study(study_name="s", storage=url, direction="maximize") for url in urls)
    added.add_trials(trials)
    insert_trials(urls[1], "s", trials)

    def frozen(study: optuna.Study) -> list[tuple]:
        fresh = optuna.load_study(study_name="s", storage=study._storage)
        return [
            (
                t.number,
                t.state,
                t.value,
                t.params,
                t.distributions,
                t.user_attrs,
                t.intermediate_values,
                t.datetime_start,
                t.datetime_complete,
            )
            for t in fresh.get_trials()
        ]

    assert frozen(inserted) == frozen(added)
    with pytest.raises(ValueError, match="already has trials"):
        insert_trials(urls[1], "s", trials)


def test_the_long_study_looks_like_a_pruned_foldtune_study(spec: StudySpec) -> None:
    trials = make_trials(spec, 200, seed=0)
    states = {state: [t for t in trials if t.state == state] for state in TrialState}

    assert 80 <= len(states[TrialState.PRUNED]) <= 140 and len(states[TrialState.FAIL]) < 25
    for t in states[TrialState.COMPLETE]:
        assert t.value == pytest.approx(float(np.mean(t.user_attrs["fold_f1"])))
        assert len(t.user_attrs["fold_f1"]) == t.user_attrs["config"]["cv"]["folds"]
    assert all(t.intermediate_values for t in states[TrialState.PRUNED])
    assert all(t.value is None and "fail_reason" in t.user_attrs for t in states[TrialState.FAIL])
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    status = study_status(study)
    assert sum(status.counts.values()) == 200 and status.mean_trial_s is not None


def test_speedup_is_the_most_threads_rate_over_one_threads() -> None:
    s = speedup({2: 10.0, 1: 16.0}, 800)
    assert s["images_per_s"] == {"2": 80.0, "1": 50.0}
    assert s["threads"] == 2 and s["speedup"] == pytest.approx(1.6)


def test_refusal_is_the_line_that_says_what_is_wrong() -> None:
    result = CliRunner().invoke(app, ["study", "no-such-command"])
    assert result.exit_code == 2
    assert refusal(result.output) == "No such command 'no-such-command'."


def test_readme_rows_from_a_scale_result_file(tmp_path: Path) -> None:
    def check(persons: int, peak_mb: float) -> dict:
        images = persons * 7
        return {
            "persons": persons,
            "images": images,
            "wall_s": 20.4,
            "peak_rss_mb": peak_mb,
            "errors": 0,
            "warnings": 3,
        }

    times = {
        "hpo --help": {"median_s": 0.5, "runs_s": [0.5] * 3},
        "hpo status": {"median_s": 2.0, "runs_s": [2.0] * 3},
    }
    payload = {
        "machine": {"cpu": "Xeon", "cores": 2, "device": "cpu", "date": "2026-12-01"},
        "quick": False,
        "cache_size": 224,
        "check_goal": CHECK_GOAL,
        "cache": speedup({2: 10.0, 1: 16.0}, 2100),
        "check": [check(300, 900.0), check(600, 1400.0)],
        "status": {
            "trials": 10_000,
            "times": times,
            "status_peak_rss_mb": 350.0,
            "study_list": "skipped: the CLI refuses it (No such command 'list'.)",
        },
    }
    (tmp_path / "scale.json").write_text(json.dumps(payload))

    rows = table_rows(tmp_path)

    assert [r[0] for r in rows] == [
        "decoded-cache build, all cores vs one",
        "`hpo data check`, 2,100 images",
        "`hpo data check`, 4,200 images",
        "`hpo status`, 10,000 trials",
        "hpo study list, 10,000 trials",  # skipped: no code span for a command the CLI lacks
    ]
    assert rows[0][2] == f"1.60{TIMES} (210 vs 131 images/s)"
    assert rows[1][3:] == ("—", "—")  # no goal at that size
    assert rows[2][2:] == ("20 s, peak RSS 1.37 GB, 0 errors, 3 warnings", "peak < 1.3 GB", "no")
    assert rows[3][2] == f"2.00 s (4.0{TIMES} `hpo --help`, 0.50 s), peak RSS 350 MB"
    assert rows[4][2].startswith("skipped")
