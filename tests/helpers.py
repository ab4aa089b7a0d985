"""What many tests share: the real ``hpo`` CLI (in-process and as a process), one-line errors,
free ports, a tiny search space and reading a study's trials back."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner, Result

from hpo.cli import app
from storage import open_storage

__all__ = [
    "FINISHED",
    "HPO",
    "assert_one_line_error",
    "free_port",
    "hpo",
    "in_fold",
    "invoke",
    "run_hpo",
    "trials_of",
    "wait_for",
    "write_space",
]

HPO = str(Path(sys.executable).parent / "hpo")  # the console script, as users run it
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_runner = CliRunner()

SPACE = """
description: tiny test space
fixed:
  model.name: test_resnet
  data.image_size: 32
  budget.max_epochs: {epochs}
  budget.batch_size: 32
  budget.patience: null
  augment.preset: none
params:
  optim.name: {{type: categorical, choices: [sgd, adamw]}}
  optim.lr: {{type: float, low: 1.0e-5, high: 1.0e-1, log: true}}
  optim.momentum: {{type: float, low: 0.5, high: 0.95, when: {{optim.name: sgd}}}}
starts: []  # none, and none borrowed: these tests count what the sampler and the workers do
"""


def invoke(*args: str) -> Result:
    """``hpo ARGS`` in this process (typer's runner), stdout and stderr apart."""
    return _runner.invoke(app, list(args))


def hpo(*args: str, cwd: Path) -> subprocess.Popen:
    """``hpo ARGS`` as a real process, output piped."""
    return subprocess.Popen([HPO, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_hpo(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``hpo ARGS`` as a real process that must succeed."""
    done = subprocess.run([HPO, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def assert_one_line_error(result: Result, *needles: str) -> str:
    """Bad input: exit 2, one ``hpo: error:`` line on stderr holding every needle, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_space(workdir: Path, epochs: int) -> Path:
    """A space on test_resnet at 32 px with ``epochs`` epochs per fold and no early stopping."""
    path = workdir / "space.yaml"
    path.write_text(SPACE.format(epochs=epochs))
    return path


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def wait_for(
    url: str,
    name: str,
    what: str,
    found: Callable[[list[FrozenTrial]], bool],
    pools: list[subprocess.Popen],
    timeout: float = 240,
) -> list[FrozenTrial]:
    """Poll the study until ``found(trials)`` is true; the trials then. Fails early if a pool exits."""
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = study.get_trials()
        if found(trials):
            return trials
        for pool in pools:
            if pool.poll() is not None:
                pytest.fail(f"a pool exited ({pool.returncode}) before {what}: {pool.communicate()[1]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; trials: {[(t.number, t.state.name) for t in trials]}")


def in_fold(trial: FrozenTrial, fold: int, epoch: int) -> bool:
    """RUNNING in fold ``fold`` (1-based) or later, with ``epoch`` epochs of it saved."""
    progress = trial.user_attrs.get("progress") or {}
    running = trial.state == TrialState.RUNNING
    return running and progress.get("fold", 0) >= fold and progress.get("epoch", 0) >= epoch
