"""HPO core against real databases and real worker processes: budget, pruning, conditions, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.records import study_record, unbudgeted
from hpo.study import create_study
from hpo.workers import STOP_GRACE_SECONDS, run_workers
from tests.databases import fresh_storage_url
from tests.helpers import FINISHED, HPO, hpo, trials_of, write_space
from tests.processes import alive, worker_processes


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sqlite", "postgresql", "mariadb"])
def test_concurrent_workers_finish_exactly_the_budget(mode: str, workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=1)
    with fresh_storage_url(mode, workdir) as url:
        # Three creates racing on a fresh, empty database: one schema, one study, no error.
        creates = [
            hpo(
                "study",
                "create",
                "race",
                "--space",
                str(space),
                "--data",
                str(small_csv),
                "--storage",
                url,
                "--folds",
                "2",
                cwd=workdir,
            )
            for _ in range(3)
        ]
        outs = [p.communicate(timeout=300) for p in creates]
        assert [p.returncode for p in creates] == [0, 0, 0], outs
        # Two pools started at the same instant (as on two machines): 4 worker processes in all.
        pools = [
            hpo("worker", "race", "--storage", url, "--devices", "cpu:2", "--n-trials", "6", cwd=workdir)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=600) for p in pools]
        assert [p.returncode for p in pools] == [0, 0], outs
        assert not any("database is locked" in err for _, err in outs)

        trials = trials_of(url, "race")
        finished = [t for t in trials if t.state in FINISHED]
        # as the budget counts: a paused trial and its continuation once (asha, the default pruner)
        race = optuna.load_study(study_name="race", storage=url)
        assert len(finished) - unbudgeted(study_record(race)) == 6
        assert len({t.number for t in trials}) == len(trials)
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        for t in finished:  # conditional params only where their condition holds
            assert ("optim.momentum" in t.params) == (t.params["optim.name"] == "sgd")
        devices = {t.user_attrs["device"] for t in finished}
        assert devices <= {"cpu#0", "cpu#1"} and len(devices) == 2


@pytest.mark.slow
def test_median_pruner_stops_bad_trials_early(workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=4)
    url = f"sqlite:///{workdir / 'prune.db'}"
    create_study("prune", space=space, data=str(small_csv), storage=url, folds=2, pruner="median", seed=1)
    assert run_workers("prune", storage=url, devices="cpu", n_trials=10).exit_codes == [0]
    trials = trials_of(url, "prune")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned, "no trial was pruned"
    full = 2 * 4  # folds x max_epochs
    assert all(sum(t.user_attrs["epochs"]) < full for t in pruned)
    assert all(sum(t.user_attrs["epochs"]) == full for t in complete)
    # Steps are fold * max_epochs + epoch, so pruners compare the same fold and epoch across trials.
    assert all(set(t.intermediate_values) == set(range(1, full + 1)) for t in complete)
    # Values are the F1 credited so far: they only rise (the median pruner goes by a trial's best
    # value), pass the first fold's F1 over 2 at its end, and end at the trial's value.
    for t in complete:
        values = [t.intermediate_values[step] for step in range(1, full + 1)]
        assert values == sorted(values)
        assert values[full // 2 - 1] == pytest.approx(t.user_attrs["fold_f1"][0] / 2)  # fold 1's end
        assert values[-1] == pytest.approx(t.value)


@pytest.mark.slow
def test_wilcoxon_reports_one_value_per_fold(workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=1)
    url = f"sqlite:///{workdir / 'wil.db'}"
    create_study("wil", space=space, data=str(small_csv), storage=url, folds=3, pruner="wilcoxon")
    assert run_workers("wil", storage=url, devices="cpu", n_trials=3).exit_codes == [0]
    complete = [t for t in trials_of(url, "wil") if t.state == TrialState.COMPLETE]
    assert complete and all(set(t.intermediate_values) == {0, 1, 2} for t in complete)
    assert all(len(t.user_attrs["fold_f1"]) == 3 for t in complete)


@pytest.mark.slow
def test_sigterm_hands_the_running_trial_back_and_a_retry_resumes(workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=20)
    url = f"sqlite:///{workdir / 'term.db'}"
    create_study("term", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
    pool = hpo("worker", "term", "--storage", url, "--devices", "cpu", "--n-trials", "1", cwd=workdir)
    deadline = time.time() + 240
    while time.time() < deadline:
        running = [t for t in trials_of(url, "term") if t.state == TrialState.RUNNING]
        if running and running[0].user_attrs.get("progress", {}).get("epoch", 0) >= 3:
            break
        time.sleep(0.5)
    else:
        pool.kill()
        pytest.fail("no trial reached epoch 3")
    children = worker_processes(pool.pid)
    assert children, "no trial process found under the pool"
    started = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    while any(alive(pid) for pid in children) and time.monotonic() - started < STOP_GRACE_SECONDS:
        time.sleep(0.05)
    stopped_s = time.monotonic() - started
    _, err = pool.communicate(timeout=60)
    # Every trial process exits by itself (exit code 0: none was killed at the end of the grace period).
    assert pool.returncode == 0, err
    assert stopped_s < 20, f"the trial process took {stopped_s:.1f} s to stop after SIGTERM"

    trials = trials_of(url, "term")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    reasons = [t.user_attrs.get("fail_reason") for t in failed]
    assert len(failed) == 1 and len(waiting) == 1, (reasons, err[-2000:])
    assert waiting[0].system_attrs["failed_trial"] == failed[0].number
    assert waiting[0].params == failed[0].params

    finish = hpo("worker", "term", "--storage", url, "--devices", "cpu", "--n-trials", "1", cwd=workdir)
    _, err = finish.communicate(timeout=600)
    assert finish.returncode == 0, err
    done = [t for t in trials_of(url, "term") if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].params == failed[0].params
    assert done[0].user_attrs["resumed_epochs"][0] >= 3  # resumed, not restarted from epoch 0


@pytest.mark.slow
def test_hpo_run_main_job_prints_best_f1_and_where_the_study_lives(tmp_path: Path) -> None:
    import csv

    from mlflow import MlflowClient

    # the shipped quick space at 2 folds x 2 epochs: the whole chain, in a third of the CPU time
    quick = (Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml").read_text()
    assert "budget.max_epochs: 6" in quick and "cv.folds: 3" in quick
    space = tmp_path / "quick-short.yaml"
    space.write_text(
        quick.replace("budget.max_epochs: 6", "budget.max_epochs: 2").replace("cv.folds: 3", "cv.folds: 2")
    )
    env = {**os.environ, "HPO_STORAGE": "", "MLFLOW_TRACKING_URI": ""}
    out = subprocess.run(
        [HPO, "run", "--n-trials", "2", "--space", str(space)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "best macro-F1" in out.stdout
    assert "sqlite:///" in out.stdout and (tmp_path / ".hpo" / "foldtune.db").exists()
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / '.hpo' / 'foldtune.db'}")
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 2
    # ... then the best trial retrained, registered in the local MLflow store, and predicted
    assert "now @champion" in out.stdout and "mlflow ui --backend-store-uri" in out.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / '.hpo' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("demo", "champion")
    best = max((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert champion.tags["foldtune.trials"] == str(best.number)
    runs = client.search_runs([study.user_attrs["mlflow"]["experiment_id"]])
    assert {r.data.tags.get("foldtune.trial") for r in runs} >= {str(t.number) for t in finished}
    with (tmp_path / ".hpo" / "predictions-demo.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label", *(f"prob_{c}" for c in range(10))]
    assert len(rows) == 1 + 1797  # every sample image once


@pytest.mark.slow
def test_ctrl_c_stops_hpo_run_before_the_retrain(workdir: Path) -> None:
    """Ctrl-C in the main job hands the running trials back and ends it there: no retrain, no registry."""
    space = write_space(workdir, epochs=20)
    env = {**os.environ, "HPO_STORAGE": "", "MLFLOW_TRACKING_URI": ""}
    run = subprocess.Popen(
        [HPO, "run", "--n-trials", "4", "--space", str(space)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"sqlite:///{workdir / '.hpo' / 'foldtune.db'}"
    deadline = time.time() + 240
    while time.time() < deadline and run.poll() is None:
        try:
            running = [t for t in trials_of(url, "demo") if t.state == TrialState.RUNNING]
        except KeyError:  # the study is not created yet
            running = []
        if running and running[0].user_attrs.get("progress", {}).get("epoch", 0) >= 1:
            break
        time.sleep(0.5)
    else:
        run.kill()
        pytest.fail(f"no trial got through an epoch: {run.communicate()}")
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGINT, err
    assert "handed back for retry" in err and "retraining" not in out and "@champion" not in out
    assert [t for t in trials_of(url, "demo") if t.state == TrialState.WAITING]


def test_observers_see_every_hook_and_a_failing_one_changes_nothing(workdir: Path, small_csv: Path) -> None:
    from hpo.study import open_study
    from hpo.tracking import ObserverGroup, TrialObserver
    from hpo.workers import Objective

    class Recorder(TrialObserver):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_trial_start(self, trial, config) -> None:
            self.calls.append("start")

        def on_epoch(self, trial, fold, stats) -> None:
            self.calls.append(f"epoch {fold.number}.{stats.epoch}")

        def on_fold(self, trial, result) -> None:
            self.calls.append(f"fold {result.fold.number}/{result.fold.count}")

        def on_trial_end(self, trial, state, value, reason) -> None:
            self.calls.append(f"end {state.name}")

    class Broken(TrialObserver):
        def on_epoch(self, trial, fold, stats) -> None:
            raise RuntimeError("tracking server down")

    url = f"sqlite:///{workdir / 'obs.db'}"
    create_study(
        "obs", space=write_space(workdir, epochs=2), data=str(small_csv), storage=url, folds=2, pruner="none"
    )
    study, spec = open_study("obs", url)
    recorder = Recorder()
    objective = Objective(
        spec, device="cpu", checkpoint_root=workdir / "ckpt", observer=ObserverGroup([Broken(), recorder])
    )
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert all(1 <= e <= 2 for e in study.trials[0].user_attrs["best_epochs"])  # one per fold
    assert len(study.trials[0].user_attrs["best_epochs"]) == 2
    assert recorder.calls == [
        "start",
        "epoch 1.1",
        "epoch 1.2",
        "fold 1/2",
        "epoch 2.1",
        "epoch 2.2",
        "fold 2/2",
        "end COMPLETE",
    ]
    assert not (workdir / "ckpt" / "obs" / "trial-0").exists()  # a finished trial's checkpoints are removed


def test_an_interrupt_that_surfaces_as_another_error_still_hands_the_trial_back(
    workdir: Path, small_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM inside torch.save surfaces as a RuntimeError: the trial is queued for retry all the same."""
    from hpo.study import open_study
    from hpo.tracking import TrialObserver
    from hpo.workers import Objective, _stop

    class InterruptedInsideTorch(TrialObserver):
        def on_epoch(self, trial, fold, stats) -> None:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this
            except KeyboardInterrupt:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None

    url = f"sqlite:///{workdir / 'stop.db'}"
    create_study(
        "stop", space=write_space(workdir, epochs=2), data=str(small_csv), storage=url, folds=2, pruner="none"
    )
    study, spec = open_study("stop", url)
    objective = Objective(
        spec, device="cpu", checkpoint_root=workdir / "ckpt", observer=InterruptedInsideTorch()
    )
    monkeypatch.setattr(_stop, "_requested", False)
    previous = signal.getsignal(signal.SIGTERM)
    _stop.interrupt_on_sigterm()
    try:
        with pytest.raises(KeyboardInterrupt):
            study.optimize(objective, n_trials=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL and "fail_reason" not in failed.user_attrs
    assert retry.state == TrialState.WAITING and retry.params == failed.params
