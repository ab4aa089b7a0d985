"""Study management through the real CLI: list, trials, delete, and what status tells about a study."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.study import create_study
from tests.databases import fresh_storage_url
from tests.helpers import assert_one_line_error, invoke, write_space

LR = {"optim.lr": FloatDistribution(1e-5, 1e-1, log=True)}


def add(study: optuna.Study, state: TrialState, *, value: float | None = None, **attrs) -> None:
    study.add_trial(
        create_trial(state=state, value=value, params={"optim.lr": 0.01}, distributions=LR, user_attrs=attrs)
    )


@pytest.fixture
def studies(workdir: Path, small_csv: Path) -> str:
    """Two studies in one SQLite file: 'a' with trials of every kind and a budget, 'b' empty."""
    url = f"sqlite:///{workdir / 'many.db'}"
    space = write_space(workdir, epochs=1)
    a, _ = create_study("a", space=space, data=str(small_csv), storage=url, folds=2)
    create_study("b", space=space, data=str(small_csv), storage=url, folds=2)
    a.set_user_attr("budget", 10)
    add(a, TrialState.COMPLETE, value=0.61, worker="h:1/cpu#0", fold_f1=[0.6, 0.62])
    add(a, TrialState.COMPLETE, value=0.75, worker="h:2/cpu#0", fold_f1=[0.7, 0.8])
    add(a, TrialState.PRUNED, value=0.2, worker="h:1/cpu#0", prune_reason="pruned in fold 1 epoch 2")
    for _ in range(3):
        add(a, TrialState.FAIL, worker="h:2/cpu#0", fail_reason="OSError: disk full")
    add(a, TrialState.FAIL, worker="h:1/cpu#0", fail_reason="ValueError: bad batch")
    running = a._storage.create_new_trial(a._study_id)
    a._storage.set_trial_user_attr(running, "worker", "h:3/cuda:0")
    return url


def test_study_list_shows_every_study_with_counts_best_and_budget(studies: str) -> None:
    result = invoke("study", "list", "--storage", studies, "--json")
    assert result.exit_code == 0, result.output
    listed = {s["name"]: s for s in json.loads(result.stdout)}
    assert set(listed) == {"a", "b"}
    assert listed["a"]["counts"] == {"running": 1, "complete": 2, "pruned": 1, "fail": 4}
    assert listed["a"]["best_value"] == pytest.approx(0.75) and listed["a"]["budget"] == 10
    assert listed["a"]["finished"] == 3 and listed["a"]["direction"] == "maximize"
    assert listed["b"]["counts"] == {} and listed["b"]["best_value"] is None
    table = invoke("study", "list", "--storage", studies)
    assert table.exit_code == 0 and "3 / 10" in table.stdout and "0.7500 (trial 1)" in table.stdout


def test_study_trials_has_one_row_per_trial_in_json_and_csv(studies: str) -> None:
    rows = json.loads(invoke("study", "trials", "a", "--storage", studies, "--json").stdout)
    assert [r["number"] for r in rows] == list(range(8))
    assert rows[1]["value"] == pytest.approx(0.75) and rows[1]["fold_f1"] == [0.7, 0.8]
    assert rows[1]["params"] == {"optim.lr": 0.01} and rows[1]["worker"] == "h:2/cpu#0"
    assert rows[2]["reason"] == "pruned in fold 1 epoch 2" and rows[3]["reason"] == "OSError: disk full"
    written = invoke("study", "trials", "a", "--storage", studies, "--csv")
    parsed = list(csv.DictReader(io.StringIO(written.stdout)))
    assert len(parsed) == 8 and parsed[1]["optim.lr"] == "0.01" and parsed[1]["state"] == "complete"
    assert invoke("study", "trials", "a", "--storage", studies).exit_code == 0


def test_status_shows_the_budget_running_workers_and_failures_by_reason(studies: str) -> None:
    status = json.loads(invoke("status", "a", "--storage", studies, "--json").stdout)
    assert status["budget"] == 10 and status["finished"] == 3
    assert status["workers"] == ["h:3/cuda:0"]
    assert [(f["reason"], f["count"], f["last_trial"]) for f in status["failures"]] == [
        ("OSError: disk full", 3, 5),
        ("ValueError: bad batch", 1, 6),
    ]
    text = invoke("status", "a", "--storage", studies).stdout
    for needle in ("3 of the budget of 10 finished", "running on 1 worker(s)", "h:3/cuda:0", "disk full"):
        assert needle in " ".join(text.split()), needle


def test_an_unknown_study_lists_the_existing_ones(studies: str) -> None:
    for command in (["status", "nope"], ["study", "trials", "nope"], ["study", "delete", "nope", "--yes"]):
        assert_one_line_error(
            invoke(*command, "--storage", studies), "'nope' not found", "studies there: a, b"
        )


@pytest.mark.parametrize("mode", ["sqlite", "postgresql"])
def test_study_delete_asks_unless_yes(mode: str, workdir: Path, small_csv: Path) -> None:
    with fresh_storage_url(mode, workdir) as url:
        create_study("gone", space=write_space(workdir, epochs=1), data=str(small_csv), storage=url, folds=2)
        assert_one_line_error(invoke("study", "delete", "gone", "--storage", url), "--yes")  # no terminal
        assert [
            s["name"] for s in json.loads(invoke("study", "list", "--storage", url, "--json").stdout)
        ] == ["gone"]
        result = invoke("study", "delete", "gone", "--storage", url, "--yes")
        assert result.exit_code == 0 and "deleted study gone" in result.stdout
        assert json.loads(invoke("study", "list", "--storage", url, "--json").stdout) == []
