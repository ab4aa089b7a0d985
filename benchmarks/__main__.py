"""Every benchmark in its CPU-sized form, then the table of benchmarks/README.md rebuilt from
benchmarks/results/.

    python -m benchmarks                 # all scripts, then the table
    python -m benchmarks --readme-only   # only the table, from the JSON files as they are

Stages run one after another, each script in its own process. The timing benchmarks have the
machine to themselves; the two search benchmarks share the last stage, one core each, since what
they measure (epochs, F1) does not depend on the load and their wall-time ratios compare runs of
the same process. A failing script is reported and the rest still run; the exit code is 1 if any
failed. What ran, how long and on which machine goes to results/suite.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info
from benchmarks.readme import SUITE, update_readme

README = Path(__file__).resolve().parent / "README.md"  # benchmarks/README.md: the top README has no numbers

# (module under benchmarks/, its CPU-sized arguments); scripts in one stage run at the same time.
STAGES: list[list[tuple[str, list[str]]]] = [
    [("train_throughput", [])],
    [("storage_overhead", ["--quick"])],
    [("study_size", ["--quick"])],  # storage latency vs study size
    [("cost_overhead", [])],  # what measuring a trial's serving cost costs: one quick-space trial
    [("fleet", ["--quick"])],  # two `--devices cpu` workers vs one `cpu:2`; CLI start and its imports
    [("scale", ["--quick"])],  # cache build, `hpo data check`, `hpo status` at the competition's size
    [("peers", ["--quick"])],  # against Ray Tune and plain Optuna, in wall time: needs the [bench] extra
    [("techniques", ["--quick"])],  # OOF macro-F1 of mixup/cutmix, EMA, class bias, ensembles: sample-mask
    [("pruning", ["--quick"]), ("search_quality", ["--quick"])],
]


def _run_stage(stage: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """Start every script of the stage, prefix their output lines with the script name, wait for all."""
    running = []
    for name, args in stage:
        if importlib.util.find_spec(f"benchmarks.{name}") is None:
            print(f"[{name}] not found: benchmarks/{name}.py is missing, skipped", flush=True)
            continue
        proc = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.{name}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        echo = threading.Thread(target=_echo, args=(name, proc), daemon=True)
        echo.start()
        running.append((name, args, proc, echo, time.perf_counter()))
    done = []
    while running:  # poll, so that each script's time ends when it does, not when the stage does
        for item in [item for item in running if item[2].poll() is not None]:
            running.remove(item)
            name, args, proc, echo, start = item
            seconds = round(time.perf_counter() - start, 1)
            echo.join()
            print(f"[{name}] exit code {proc.returncode} after {seconds / 60:.1f} min", flush=True)
            done.append({"name": name, "args": args, "seconds": seconds, "exit_code": proc.returncode})
        time.sleep(0.5)
    return done


def _echo(name: str, proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"[{name}] {line}", end="", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--readme-only", action="store_true", help="only rebuild the table in benchmarks/README.md"
    )
    args = parser.parse_args()
    failed = []
    if not args.readme_only:
        began, start, load = time.time(), time.perf_counter(), os.getloadavg()[0]
        scripts = [script for stage in STAGES for script in _run_stage(stage)]
        failed = [s["name"] for s in scripts if s["exit_code"] != 0]
        fresh = sorted(p.stem for p in RESULTS.glob("*.json") if p.stat().st_mtime >= began)
        suite = {
            "machine": machine_info(),
            "total_s": round(time.perf_counter() - start, 1),
            "loadavg_start": round(load, 2),  # 1-minute load: was the machine idle when it began?
            "scripts": scripts,
            "results": [stem for stem in fresh if stem != SUITE],
        }
        out = RESULTS / f"{SUITE}.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(suite, indent=2))
        tmp.replace(out)
        print(f"all benchmarks: {suite['total_s'] / 60:.1f} min; wrote {out}")
    update_readme(README, RESULTS)
    print(f"updated the benchmark table in {README}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
