"""The `hpo` CLI in-process: help, study create/reuse/conflict, status, space show.

Bad input of every command (one line, exit code 2): tests/test_bad_inputs.py.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.space import load_space
from tests.datasets import make_csv_dataset
from tests.helpers import assert_one_line_error, free_port, invoke


@pytest.fixture
def csv(workdir: Path) -> Path:
    return make_csv_dataset(workdir / "data", classes=("a", "b", "c"), per_class=8, size=(32, 32))


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "study", "worker", "status", "space", "storage", "weights"):
        assert command in result.stdout


def test_space_show_prints_params_and_conditions() -> None:
    result = invoke("space", "show", "quick")
    assert result.exit_code == 0
    assert "optim.lr" in result.stdout and "optim.momentum" in result.stdout and "sgd" in result.stdout


def test_study_create_reuse_and_conflict(workdir: Path, csv: Path) -> None:
    args = ("study", "create", "s1", "--space", "quick", "--data", str(csv), "--folds", "2")
    first = invoke(*args)
    assert first.exit_code == 0 and "created" in first.stdout
    again = invoke(*args)
    assert again.exit_code == 0 and "reusing" in again.stdout
    conflict = invoke(*args[:-1], "3")
    assert_one_line_error(conflict, "study 's1' already exists with cv.folds 2 (now 3)", "new study name")
    assert (workdir / ".hpo" / "foldtune.db").exists()

    status = invoke("status", "s1", "--json")
    assert status.exit_code == 0
    report = json.loads(status.stdout)  # only the space's starts, enqueued once
    starts = len(load_space("quick").starts)
    assert report["counts"] == {"waiting": starts} and report["origins"] == {"start": starts}


FIXED_FOLDS = """
fixed: {model.name: test_resnet, data.image_size: 32, cv.folds: 4}
params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def stored_folds(name: str) -> tuple[int, object]:
    """(the folds a study's trials run, the folds its stored space fixes)."""
    from hpo.study import load_spec

    spec = load_spec(optuna.load_study(study_name=name, storage="sqlite:///.hpo/foldtune.db"))
    return spec.base.cv.folds, spec.space.fixed.get("cv.folds")


def test_a_spaces_fixed_folds_stand_unless_the_flag_is_given(workdir: Path, csv: Path) -> None:
    (workdir / "four.yaml").write_text(FIXED_FOLDS)
    (workdir / "free.yaml").write_text(FIXED_FOLDS.replace(", cv.folds: 4", ""))
    create = ("study", "create", "--data", str(csv), "--pruner", "none")
    assert invoke(*create, "space", "--space", "four.yaml").exit_code == 0
    assert stored_folds("space") == (4, 4)  # the space's value, not a default
    assert invoke(*create, "default", "--space", "free.yaml").exit_code == 0
    assert stored_folds("default") == (3, None)  # the run config's default, as `hpo data check` uses
    assert invoke(*create, "flag", "--space", "four.yaml", "--folds", "2").exit_code == 0
    assert stored_folds("flag") == (2, 2)  # the flag wins, and the stored space says so

    assert "reusing" in invoke(*create, "space", "--space", "four.yaml").stdout
    assert "reusing" in invoke(*create, "space", "--space", "four.yaml", "--folds", "4").stdout
    assert "reusing" in invoke(*create, "flag", "--space", "four.yaml", "--folds", "2").stdout
    for extra, needle in (
        (("--folds", "2"), "cv.folds 4 (now 2)"),
        (("--sampler", "random"), "sampler tpe (now random)"),
        (("--pruner", "median"), "pruner none (now median)"),
        (("--seed", "7"), "seed 0 (now 7)"),
    ):
        line = assert_one_line_error(invoke(*create, "space", "--space", "four.yaml", *extra), needle)
        assert line.count("(now ") == 1, line  # only the input that differs
    assert_one_line_error(invoke(*create, "flag", "--space", "four.yaml"), "cv.folds 2 (now 4)")
    assert_one_line_error(
        invoke(*create, "space", "--space", "free.yaml"),
        "study 'space' already exists with cv.folds 4 (now 3)",
    )
    (workdir / "lr.yaml").write_text(FIXED_FOLDS.replace("1.0e-2", "1.0e-1"))
    assert_one_line_error(
        invoke(*create, "space", "--space", "lr.yaml"), "another space (params.optim.lr", '"high": 0.01'
    )
    other = make_csv_dataset(workdir / "other", classes=("a", "b", "c"), per_class=10, size=(32, 32))
    create_other = (
        "study",
        "create",
        "space",
        "--space",
        "four.yaml",
        "--data",
        str(other),
        "--pruner",
        "none",
    )
    assert_one_line_error(invoke(*create_other), "other data (fingerprint")

    (workdir / "searched.yaml").write_text(
        FIXED_FOLDS.replace(", cv.folds: 4", "") + "  cv.folds: {type: int, low: 2, high: 4}\n"
    )
    assert_one_line_error(
        invoke(*create, "searched", "--space", "searched.yaml", "--folds", "3"),
        "searches cv.folds",
        "leave out --folds",
    )


@pytest.mark.slow
def test_workers_through_the_grpc_proxy(workdir: Path, csv: Path) -> None:
    hpo = str(Path(sys.executable).parent / "hpo")
    port = free_port()
    backend = f"sqlite:///{workdir / 'proxied.db'}"
    server = subprocess.Popen(
        [hpo, "storage", "serve", "--storage", backend, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proxy = f"grpc://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        space = workdir / "tiny.yaml"
        space.write_text(
            "fixed: {model.name: test_resnet, data.image_size: 32, budget.max_epochs: 1,"
            " augment.preset: none}\n"
            "params:\n  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        )
        created = invoke(
            "study",
            "create",
            "g",
            "--space",
            str(space),
            "--data",
            str(csv),
            "--storage",
            proxy,
            "--folds",
            "2",
        )
        assert created.exit_code == 0, created.output
        out = subprocess.run(
            [hpo, "worker", "g", "--storage", proxy, "--devices", "cpu:2", "--n-trials", "3"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=workdir,
        )
        assert out.returncode == 0, out.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    trials = optuna.load_study(study_name="g", storage=backend).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Without a storage-wide lock the budget is best effort: at most one extra trial per extra worker.
    assert 3 <= len(finished) <= 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.parametrize(("folds", "warned"), [(4, True), (5, False)])
def test_wilcoxon_with_too_few_folds_warns_that_it_never_prunes(
    workdir: Path, caplog: pytest.LogCaptureFixture, folds: int, warned: bool
) -> None:
    from hpo.study import create_study

    csv = make_csv_dataset(workdir / "five", classes=("a", "b"), per_class=10, size=(32, 32))  # 5 groups
    url = f"sqlite:///{workdir / 'w.db'}"
    with caplog.at_level(logging.WARNING, logger="hpo.study"):
        create_study("w", space="quick", data=str(csv), storage=url, folds=folds, pruner="wilcoxon")
    assert ("never prunes" in caplog.text) == warned, caplog.text
