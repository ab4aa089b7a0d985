"""Commands as a user runs them: wall time and peak memory of one process, medians of many, modules loaded.

Every measured command is a fresh process of the interpreter running the benchmark (``hpo`` is the
console script next to it), started with the user's settings for storage and MLflow removed, so a
developer's environment cannot steer a run. It runs under a small launcher process that times it
and takes its ``ru_maxrss`` from ``os.wait4``: its largest resident set, counted by the kernel, not
sampled (at least the launcher's own ~10 MB, which it starts as a copy of).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HEAVY",
    "NOTABLE",
    "Measured",
    "hpo",
    "hpo_env",
    "median_times",
    "modules_loaded",
    "run_measured",
]

HEAVY = ("torch", "mlflow", "timm", "albumentations", "cv2")  # what the CLI must not import to start
NOTABLE = ("optuna", "sqlalchemy", "numpy", "pandas", "PIL", "sklearn", "scipy", "pydantic", "yaml")


@dataclass(frozen=True)
class Measured:
    wall_s: float
    peak_rss_mb: float  # the child's largest resident set
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, n: int = 3) -> str:
        return " | ".join([line for line in self.output.splitlines() if line.strip()][-n:])


def hpo() -> str:
    """The ``hpo`` console script of this interpreter's environment."""
    return str(Path(sys.executable).with_name("hpo"))


def hpo_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "HPO_STORAGE"):  # a user's settings must not steer the runs
        env.pop(key, None)
    env["HF_HUB_OFFLINE"] = "1"  # nothing here needs weights; nothing should wait on a hub
    env.setdefault("COLUMNS", "120")  # rich's tables as wide as on a terminal, not 80 columns
    return env


# Runs the measured command as its child and reports on it. A child's ru_maxrss starts from its
# parent's resident set at the fork, so measuring from the benchmark process itself (hundreds of MB
# of numpy, torch or a decoded cache) would report that instead: the launcher is a small process.
_LAUNCHER = """
import json, os, subprocess, sys, time
cmd, report = json.loads(sys.argv[1]), sys.argv[2]
begin = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - begin
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "returncode": code}, f)
"""


def run_measured(cmd: list[str], *, cwd: Path | None = None, timeout_s: float = 3600.0) -> Measured:
    """Run ``cmd`` to its end; its wall time, peak RSS and output. Killed after ``timeout_s``."""
    with (
        open(os.devnull, "rb") as stdin,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        report = Path(scratch) / "report.json"
        launcher = [sys.executable, "-c", _LAUNCHER, json.dumps(cmd), str(report)]
        proc = subprocess.Popen(
            launcher, cwd=cwd, env=hpo_env(), stdin=stdin, stdout=out, stderr=err, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher's session: the command too
            proc.wait()
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
        if not report.is_file():
            return Measured(math.nan, math.nan, -9, texts[0], texts[1] + f"\nkilled after {timeout_s:.0f} s")
        found = json.loads(report.read_text())
    # ru_maxrss is in KiB on Linux
    return Measured(found["wall_s"], found["maxrss_kib"] / 1024, found["returncode"], texts[0], texts[1])


def median_times(commands: dict[str, list[str]], *, runs: int, cwd: Path | None = None) -> dict[str, dict]:
    """Each command ``runs`` times, taking turns (so a spell of load hits them alike): median wall
    time, every time, and the first failure if any."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    failures: dict[str, str] = {}
    for _ in range(runs):
        for name, cmd in commands.items():
            result = run_measured(cmd, cwd=cwd, timeout_s=300)
            times[name].append(round(result.wall_s, 4))
            if result.returncode != 0 and name not in failures:
                failures[name] = f"exit code {result.returncode}: {result.tail()}"
    return {
        name: {"median_s": statistics.median(values), "runs_s": values, "failure": failures.get(name)}
        for name, values in times.items()
    }


_PROBE = """
import json, sys
args = json.loads(sys.argv[1])
if args is None:
    import hpo.cli
else:
    from hpo.cli import app
    try:
        app(args, prog_name="hpo")
    except SystemExit:
        pass
names = json.loads(sys.argv[2])
print("\\nMODULES " + json.dumps([m for m in names if m in sys.modules]))
"""


def modules_loaded(args: list[str] | None, *, cwd: Path | None = None) -> dict[str, list[str]]:
    """Which of HEAVY and NOTABLE are in ``sys.modules`` after ``import hpo.cli`` (``args`` None) or
    after running ``hpo ARGS`` in one process."""
    names = [*HEAVY, *NOTABLE]
    cmd = [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(names)]
    result = run_measured(cmd, cwd=cwd, timeout_s=300)
    marker = [line for line in result.output.splitlines() if line.startswith("MODULES ")]
    if not marker:
        raise RuntimeError(f"module probe for {args} printed no module list: {result.tail()}")
    loaded = json.loads(marker[-1].removeprefix("MODULES "))
    return {"heavy": [m for m in HEAVY if m in loaded], "notable": [m for m in NOTABLE if m in loaded]}
