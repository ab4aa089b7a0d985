"""The worker fleet as users run it: separate `hpo worker` processes on one host, through the real CLI.

No twin trials, a study whose every trial fails stops its workers with the reason, CPU workers split
the host's cores, logs without a terminal, and a CLI that starts without the training stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.study import create_study
from tests.databases import fresh_storage_url
from tests.helpers import FINISHED, assert_one_line_error, hpo, invoke, trials_of, write_space

HEAVY = ("torch", "mlflow", "timm", "albumentations", "cv2")

FAILING_SPACE = """
description: every trial fails (BatchNorm cannot train on batches of one image)
fixed:
  model.name: test_resnet
  data.image_size: 32
  budget.max_epochs: 1
  budget.batch_size: 1
  augment.preset: none
params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
starts: []
"""


def cores() -> int:
    return len(os.sched_getaffinity(0))


def start_workers(name: str, url: str, cwd: Path, *extra: str, n: int = 2) -> list[subprocess.Popen]:
    """``n`` separate `hpo worker` commands at once, as from n shells (stderr a pipe: no terminal)."""
    return [hpo("worker", name, "--storage", url, "--devices", "cpu", *extra, cwd=cwd) for _ in range(n)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    """Each worker's exit code and stderr, once all have exited."""
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errs, strict=True)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sqlite", "postgresql"])
def test_parallel_workers_never_propose_twin_trials(mode: str, workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=1)
    with fresh_storage_url(mode, workdir) as url:
        create_study("twins", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
        done = finish(start_workers("twins", url, workdir, "--n-trials", "12"))
        assert [code for code, _ in done] == [0, 0], done
        trials = trials_of(url, "twins")
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 12
    params = {tuple(sorted(t.params.items())) for t in trials}
    assert len(params) == len(trials) == 12  # same seeds would have proposed the same configs in pairs
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # host:pid/device: unique per process, though host and device are equal
    assert all(w.endswith("/cpu#0") and w.split(":")[0] == trials[0].user_attrs["host"] for w in workers)
    # Logs without a terminal: each worker prints one line per trial it ends, naming itself.
    for _, err in done:
        own = [t for t in trials if t.user_attrs["worker"] in err]
        lines = [line for line in err.splitlines() if " complete: macro-F1 " in line]
        assert own and len(lines) == len(own), err
        assert all("best " in line and own[0].user_attrs["worker"] in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sqlite", "postgresql"])
def test_a_study_whose_every_trial_fails_stops_its_workers(mode: str, workdir: Path, small_csv: Path) -> None:
    space = workdir / "failing.yaml"
    space.write_text(FAILING_SPACE)
    with fresh_storage_url(mode, workdir) as url:
        create_study("doomed", space=space, data=str(small_csv), storage=url, folds=2)
        started = time.monotonic()
        done = finish(start_workers("doomed", url, workdir, "--n-trials", "50"), timeout=300)
        trials = trials_of(url, "doomed")
    assert time.monotonic() - started < 240
    assert [code for code, _ in done] == [1, 1], done
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # 3 in a row stop a worker; the study-wide streak stops the other one too: not 2 x 3 failures.
    assert len(failed) == len(trials) and 3 <= len(failed) <= 3 + 1
    assert all("Expected more than 1 value per channel" in t.user_attrs["fail_reason"] for t in failed)
    for _, err in done:
        errors = [line for line in err.splitlines() if line.startswith("hpo: error: ")]
        assert len(errors) == 1 and "stopped" in errors[0] and "failed" in errors[0], err
        assert "Expected more than 1 value per channel" in errors[0]
        assert err.count("Traceback (most recent call last)") <= 1, err  # one per distinct failure


def test_what_would_fail_every_trial_is_refused_before_the_first(workdir: Path, small_csv: Path) -> None:
    url = f"sqlite:///{workdir / 'pre.db'}"
    plots = workdir / "plots"
    create_study(
        "pre", space=write_space(workdir, epochs=1), data=str(small_csv), storage=url, artifacts=plots
    )
    (workdir / "blocked").write_text("a file where the checkpoint folder should be")
    result = invoke("worker", "pre", "--storage", url, "--devices", "cpu", "--checkpoint-dir", "blocked/ckpt")
    assert_one_line_error(result, "--checkpoint-dir", "blocked/ckpt", "cannot write there")
    plots.write_text("a file where the trial plots go")
    result = invoke("worker", "pre", "--storage", url, "--devices", "cpu")
    assert_one_line_error(result, "study 'pre' keeps its trial plots in", str(plots), "cannot write there")
    assert trials_of(url, "pre") == []  # refused before any trial started
    assert_one_line_error(invoke("worker", "pre", "--storage", url, "--max-failures", "-1"), "--max-failures")


def test_cpu_processes_on_one_host_split_its_cores(tmp_path: Path) -> None:
    """The registry across real processes: each of two holds cores // 2; when one dies, the other all."""
    code = (
        "import sys, time; from pathlib import Path; from hpo.workers._cpu_share import CpuShare\n"
        "share = CpuShare(registry=Path(sys.argv[1]), cores=4)\n"
        "Path(sys.argv[2]).touch()\n"
        "while not Path(sys.argv[3]).exists(): time.sleep(0.05)\n"
        "print(share.threads(), flush=True)\n"
        "time.sleep(60)\n"
    )
    registry, go = tmp_path / "registry", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, registry, tmp_path / f"joined{i}", go],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"joined{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        go.touch()
        assert [int(p.stdout.readline()) for p in procs] == [2, 2]
        procs[0].kill()  # dies holding its registry entry: the survivor must not count it
        procs[0].wait()
        from hpo.workers._cpu_share import CpuShare

        me = CpuShare(registry=registry, cores=4)
        assert me.members() == 2 and me.threads() == 2  # the survivor and this process
        me.close()
        assert len(list(registry.glob("*.lock"))) == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
def test_two_cpu_worker_commands_take_half_the_cores_each(workdir: Path, small_csv: Path) -> None:
    space = write_space(workdir, epochs=2)
    url = f"sqlite:///{workdir / 'share.db'}"
    create_study("share", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
    done = finish(start_workers("share", url, workdir, "--n-trials", "8"))
    assert [code for code, _ in done] == [0, 0], done
    by_worker: dict[str, list[int]] = {}
    for t in trials_of(url, "share"):
        by_worker.setdefault(t.user_attrs["worker"], []).append(t.user_attrs["threads"])
    assert len(by_worker) == 2
    # Alone, each would take every core; together each runs with half (a lone last trial may grow back).
    assert all(cores() // 2 in threads for threads in by_worker.values()), by_worker


def test_the_cli_starts_without_the_training_stack(workdir: Path, small_csv: Path) -> None:
    url = f"sqlite:///{workdir / 'fast.db'}"
    create_study("fast", space=write_space(workdir, epochs=1), data=str(small_csv), storage=url)
    code = (
        "import sys; from typer.testing import CliRunner; from hpo.cli import app\n"
        "runner = CliRunner()\n"
        "for args in (['--help'], ['status', 'fast', '--storage', sys.argv[1]], ['worker', '--help']):\n"
        "    assert runner.invoke(app, args).exit_code == 0, args\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_worker_pool_leaves_the_training_stack_to_its_trial_processes(
    workdir: Path, small_csv: Path
) -> None:
    # The pool process starts its trial processes sooner when it does not import torch itself first.
    url = f"sqlite:///{workdir / 'pool.db'}"
    study, _ = create_study("pool", space=write_space(workdir, epochs=1), data=str(small_csv), storage=url)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))  # budget of 1 met
    code = (
        "import sys; from typer.testing import CliRunner; from hpo.cli import app\n"
        "args = ['worker', 'pool', '--storage', sys.argv[1], '--devices', 'cpu', '--n-trials', '1']\n"
        "result = CliRunner().invoke(app, args)\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # its trial process imported them, joined and found the budget met
    assert len(trials_of(url, "pool")) == 1


@pytest.mark.slow
def test_retrain_top_k_skips_a_trial_whose_params_repeat_a_better_one(workdir: Path, small_csv: Path) -> None:
    url = f"sqlite:///{workdir / 'dup.db'}"
    space = write_space(workdir, epochs=1)
    study, _ = create_study("dup", space=space, data=str(small_csv), storage=url, folds=2, pruner="none")
    for lr in (3e-3, 3e-3, 1e-3):  # a twin, as two workers with one seed made them
        study.enqueue_trial({"optim.name": "adamw", "optim.lr": lr})
    done = finish(
        [hpo("worker", "dup", "--storage", url, "--devices", "cpu", "--n-trials", "3", cwd=workdir)]
    )
    assert done[0][0] == 0, done
    first, twin = sorted(
        (t for t in trials_of(url, "dup") if t.params["optim.lr"] == 3e-3), key=lambda t: t.number
    )
    other = next(t for t in trials_of(url, "dup") if t.params["optim.lr"] == 1e-3)
    better, worse = sorted([first, twin], key=lambda t: (-(t.value or 0), t.number))
    result = invoke("retrain", "dup", "--storage", url, "--top-k", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"skipped trial {worse.number}: same params as trial {better.number}" in result.stderr
    chosen = sorted([better, other], key=lambda t: (-(t.value or 0), t.number))
    # both retrained; the bundle keeps the 2 fold models of each trial the out-of-fold selection weighs
    assert f"retrained trial(s) {chosen[0].number}, {chosen[1].number} (folds, " in result.stdout
    weighed = [line for line in result.stdout.splitlines() if line.startswith("  trial ")]
    kept = sum("weight 0.00" not in line for line in weighed)
    assert len(weighed) == 2 and f"(folds, {2 * kept} member(s))" in result.stdout


def test_devices_follow_the_gpus_the_scheduler_assigned(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.errors import UserError
    from hpo.workers import parse_devices

    # SLURM and Kubernetes hand a job its GPUs through CUDA_VISIBLE_DEVICES; an empty one hides every GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert [slot.label for slot in parse_devices("auto")] == ["cpu#0"]
    with pytest.raises(UserError, match=r"GPU 0 does not exist .*CUDA_VISIBLE_DEVICES="):
        parse_devices("0")
