"""Fault tolerance with real processes and a real database: a worker killed mid-trial, the study's
database restarted mid-study, a COMMIT cut off in flight, and trials that diverge, run out of
memory or raise.

Waits follow the study's state in the storage, never fixed sleeps; the only sleep is the outage.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import timm
import torch
from optuna.storages._heartbeat import HeartbeatThread
from optuna.trial import TrialState
from timm.models import register_model
from torch import nn

from hpo.study import create_study
from hpo.workers import PullArgs, Slot, pull_trials
from storage import StorageError, open_storage
from tests.databases import fresh_storage_url
from tests.helpers import FINISHED, hpo, in_fold, trials_of, wait_for, write_space
from tests.private_postgres import private_postgres
from tests.processes import worker_processes

SECRET = "Outage-Pa55"  # trust auth never checks it; it must still never be printed
LOST = "lost the connection to the database"


# ----------------------------------------------------------------------------- kill -9 of a worker


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_then_resumed_by_another_pool(
    workdir: Path, small_csv: Path
) -> None:
    epochs = 10
    space = write_space(workdir, epochs=epochs)
    shared = workdir / "shared-checkpoints"  # both "machines" see the same disk
    with fresh_storage_url("postgresql") as url:
        create_study("kill", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
        args = ["worker", "kill", "--storage", url, "--devices", "cpu", "--n-trials", "2"]
        args += ["--heartbeat", "1", "--checkpoint-dir", str(shared)]
        doomed = hpo(*args, cwd=workdir)
        wait_for(url, "kill", "trial 0", lambda ts: bool(ts) and ts[0].state == TrialState.RUNNING, [doomed])
        survivor = hpo(*args, cwd=workdir)  # the first pool owns trial 0, this one starts later
        trials = wait_for(
            url, "kill", "fold 2 of trial 0", lambda ts: in_fold(ts[0], 2, 1), [doomed, survivor]
        )
        (child,) = worker_processes(doomed.pid)
        os.kill(child, signal.SIGKILL)
        killed_at = trials[0].user_attrs["progress"]
        _, doomed_err = doomed.communicate(timeout=60)
        _, survivor_err = survivor.communicate(timeout=300)
        trials = trials_of(url, "kill")

    assert doomed.returncode == 1 and "-9" in doomed_err, doomed_err  # its one process died
    assert survivor.returncode == 0, survivor_err
    assert len([t for t in trials if t.state in FINISHED]) == 2
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == 0  # failed by the survivor once its heartbeat went silent
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0 and t.number != 0]
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    # Resumed from the checkpoints of trial 0: fold 1 done, fold 2 from its last saved epoch.
    assert retry.user_attrs["epochs"] == [epochs, epochs]
    resumed = retry.user_attrs["resumed_epochs"]  # per fold
    assert resumed[0] == epochs
    assert resumed[1] >= killed_at["epoch"]
    trained = epochs - resumed[1]  # by the retry itself
    assert trained <= epochs - killed_at["epoch"] < 2 * epochs  # a restart from zero trains 2 x epochs


# ------------------------------------------------------------------------- the database goes away


@pytest.mark.slow
def test_workers_ride_out_a_database_restart_and_finish_the_budget(workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=6)
    with private_postgres() as pg:
        url = pg.url(password=SECRET)
        create_study("outage", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
        args = ["worker", "outage", "--storage", url, "--devices", "cpu:2", "--n-trials", "4"]
        pool = hpo(*args, "--heartbeat", "1", cwd=workdir)
        before = wait_for(
            url,
            "outage",
            "a finished trial and one mid-fold",
            lambda ts: any(t.state in FINISHED for t in ts) and any(in_fold(t, 1, 1) for t in ts),
            [pool],
        )
        pg.stop()  # every session is cut, as in a restart or failover
        time.sleep(6)
        pg.start()
        out, err = pool.communicate(timeout=300)
        after = {t.number: t for t in trials_of(url, "outage")}

    assert pool.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err  # no thread died either
    assert len([t for t in after.values() if t.state in FINISHED]) == 4
    others = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in after.values()]
    assert all(t.state == TrialState.COMPLETE for t in after.values()), (others, err)  # none failed or left
    for old in before:  # nothing written before the outage is lost; the running ones went on
        new = after[old.number]
        assert new.params.items() >= old.params.items()  # a trial just started may have sampled none yet
        if "config" in old.user_attrs:
            assert new.user_attrs["config"] == old.user_attrs["config"]
        if old.state in FINISHED:
            assert (new.value, new.user_attrs, new.intermediate_values, new.datetime_complete) == (
                old.value,
                old.user_attrs,
                old.intermediate_values,
                old.datetime_complete,
            )
    # One warning per process (the pool and its 2 trial processes), not one per retry; no password.
    assert 1 <= " ".join(err.split()).count(LOST) <= 3, err
    assert SECRET not in out + err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_storage_waits_for_the_server_and_then_gives_up_with_a_storage_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with private_postgres() as pg, caplog.at_level(logging.INFO, logger="storage"):
        storage = open_storage(pg.url(password=SECRET), heartbeat_interval=1, reconnect_timeout=3)
        study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
        trial = study.ask()
        heartbeat = HeartbeatThread(trial._trial_id, storage)  # what study.optimize runs beside a trial
        heartbeat.start()
        pg.stop()
        restart = threading.Timer(1.0, pg.start)
        restart.start()
        trial.set_user_attr("written", "during the outage")  # waits for the server to come back
        restart.join()  # pg_ctl may still be polling the server it started: let it finish first
        outages = [r for r in caplog.records if LOST in r.getMessage()]
        assert len(outages) == 1, "one warning per outage, shared by both threads"

        pg.stop()
        started = time.monotonic()
        with pytest.raises(StorageError, match="cannot reach the database server") as info:
            trial.set_user_attr("lost", True)
        waited = time.monotonic() - started
        assert heartbeat._thread is not None and heartbeat._thread.is_alive()  # logged, still beating
        pg.start()
        heartbeat.join()
        stored = optuna.load_study(study_name="s", storage=open_storage(pg.url())).trials

    assert 2 <= waited < 8, f"gave up after {waited:.1f} s"  # 3 s after the first failure of either thread
    assert SECRET not in str(info.value) and info.value.__context__ is None
    assert stored[0].user_attrs == {"written": "during the outage"} and stored[0].state == TrialState.RUNNING
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # fail_stale_trials
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_no_trial_counts_as_stale_right_after_an_outage() -> None:
    with private_postgres() as pg:
        storage = open_storage(pg.url(), heartbeat_interval=1)  # grace period: 12 s
        study = optuna.create_study(storage=storage, study_name="s")
        before, after = study.ask(), study.ask()
        for trial in (before, after):
            storage.record_heartbeat(trial._trial_id)

        silence(pg.url(), before._trial_id)  # its worker died an hour ago
        optuna.storages.fail_stale_trials(study)
        assert study._storage.get_trial(before._trial_id).state == TrialState.FAIL

        pg.stop()
        threading.Timer(0.3, pg.start).start()
        study.get_trials()  # rides out the outage
        silence(pg.url(), after._trial_id)  # as if it had missed its beats during the outage
        optuna.storages.fail_stale_trials(study)
        assert (
            study._storage.get_trial(after._trial_id).state == TrialState.RUNNING
        )  # its worker may beat yet


def silence(url: str, trial_id: int) -> None:
    """Date the last heartbeat of ``trial_id`` an hour back."""
    beats = sa.table("trial_heartbeats", sa.column("trial_id"), sa.column("heartbeat", sa.DateTime))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(beats).where(beats.c.trial_id == trial_id).values(heartbeat=datetime(2000, 1, 1))
            )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_commit_cut_off_runs_again_only_where_the_outcome_can_be_read_back() -> None:
    with private_postgres() as pg:
        storage = open_storage(pg.url(), heartbeat_interval=None, reconnect_timeout=60)
        armed = threading.Event()
        restarts: list[threading.Timer] = []

        def cut_before_commit(connection: sa.Connection) -> None:  # the server dies as COMMIT goes out
            if armed.is_set():
                armed.clear()
                pg.stop()
                restarts.append(threading.Timer(0.5, pg.start))
                restarts[-1].start()

        sa.event.listen(storage.engine, "commit", cut_before_commit)
        study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
        trial_id = storage.create_new_trial(study_id)
        armed.set()
        # A state change is read back after the restart: not stored, so it runs again.
        assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5]) is True
        trial = storage.get_trial(trial_id)
        assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.5)

        # A creation cannot be read back: running it again might leave a twin, so it is an error.
        armed.set()
        with pytest.raises(StorageError, match="may or may not have been stored"):
            storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "t")
        assert [s.study_name for s in storage.get_all_studies()] == ["s"]  # here: rolled back
        for restart in restarts:  # let pg_ctl see its server up before the teardown stops it
            restart.join()


# -------------------------------------------------------------------- trials that fail or diverge


class _Faulty(nn.Module):
    """test_resnet whose forward fails as named: NaN logits, CUDA out of memory, or another error."""

    def __init__(self, fault: str, num_classes: int) -> None:
        super().__init__()
        self.net = timm.create_model("test_resnet", num_classes=num_classes)
        self.pretrained_cfg, self.feature_info = self.net.pretrained_cfg, self.net.feature_info
        self.fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.fault == "error":
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        return self.net(x) * float("nan")


@pytest.fixture(scope="module")
def faulty_models() -> None:
    """Real timm registrations (once per session), so trials build the faulty models by name."""
    for name, fault in {"ft_nan_net": "nan", "ft_oom_net": "oom", "ft_error_net": "error"}.items():
        if not timm.is_model(name):

            def factory(pretrained: bool = False, *, fault: str = fault, **kwargs: Any) -> nn.Module:
                return _Faulty(fault, kwargs["num_classes"])

            factory.__name__ = name
            register_model(factory)


FAULT_SPACE = """
fixed:
  data.image_size: 32
  budget.max_epochs: 1
  budget.batch_size: 32
  augment.preset: none
params:
  model.name: {type: categorical, choices: [test_resnet, ft_nan_net, ft_oom_net, ft_error_net]}
  optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
starts: []
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # TPE's group option
@pytest.mark.usefixtures("faulty_models")
def test_nan_prunes_oom_and_errors_fail_and_the_worker_finishes_the_budget(
    workdir: Path, small_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = workdir / "faults.yaml"
    space.write_text(FAULT_SPACE)
    url = f"sqlite:///{workdir / 'faults.db'}"
    study, _ = create_study("faults", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
    for model in ("ft_nan_net", "ft_oom_net", "ft_error_net", "test_resnet"):
        study.enqueue_trial({"model.name": model})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored afterwards, like the handler below
    sigterm, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:  # what each `hpo worker` process runs, here, where the faulty models are registered
        pull_trials(
            Slot("cpu", "", "cpu#0", 1), PullArgs("faults", url, 2, None, None, str(workdir / "ckpt"))
        )
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        torch.set_num_threads(threads)

    trials = trials_of(url, "faults")
    assert [(t.params["model.name"], t.state) for t in trials] == [
        ("ft_nan_net", TrialState.PRUNED),
        ("ft_oom_net", TrialState.FAIL),
        ("ft_error_net", TrialState.FAIL),
        ("test_resnet", TrialState.COMPLETE),  # the budget of 2 finished trials, reached
    ]
    nan, oom, error, _ = (t.user_attrs for t in trials)
    assert nan["prune_reason"].startswith("training loss became nan in epoch 1; lower optim.lr")
    assert oom["fail_reason"].startswith("out of memory: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "lower budget.batch_size or data.image_size" in oom["fail_reason"]
    assert error["fail_reason"] == "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"
