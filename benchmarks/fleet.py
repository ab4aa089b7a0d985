"""The worker fleet as users start it: CPU sharing between separate workers, and how fast the CLI starts.

1. CPU sharing. On one study, two ``hpo worker S --devices cpu`` processes started together (two
   shells on one machine) against one ``hpo worker S --devices cpu:2`` (the pool splits the cores
   between its two trial processes), with the same study-wide trial budget, space and data. Both
   are driven through the CLI only. The figure is aggregate training throughput::

       images/s = sum over trials of (images_per_sec x seconds) / training span

   with ``images_per_sec`` and ``seconds`` the trial's user attrs (a trial's training rate and its
   training + validation seconds, so the product is its images scaled by the same validation share
   on both sides) and the span from the first trial's start to the last trial's end. The goal is
   two ``cpu`` workers at >= 0.9x one ``cpu:2``. Wall time (first command to last exit) is kept too.
   The space is the shipped ``quick`` with batch size 64 and no augmentation fixed (they change a
   trial's speed, not its cost per image) and no pruner, so both sides train comparable trials.
2. CLI start. Median wall time of ``hpo --help`` and ``hpo status`` on a small study (the one just
   run) over ``python -c "import typer, rich"`` in the same interpreter, and which heavy modules
   (torch, mlflow, timm, albumentations, cv2) ``import hpo.cli``, ``hpo --help`` and ``hpo status``
   load: the goal is none.

Evidence so far (2026-12-01, 2-core EPYC shared with other work, load average 2.9-4.6, torch
2.14.1, optuna 5.0.0), the --quick run: two `cpu` workers trained 566 images/s together against 521
for one `cpu:2` (1.09x; wall 51 s vs 54 s; before CPU trial processes of separate workers split the
cores: 96 vs 502, 0.19x), each run 4 distinct param sets in 4 trials. `hpo --help` started in 0.53 s
against 0.10 s for `import typer, rich` (5.3x; 0.91 s before the package faces loaded lazily),
`hpo status` on a 4-trial study in 1.66 s; none of them loads a heavy module.

    python -m benchmarks.fleet --quick     # ~5 min on 2 busy cores: 4 trials a run, 900 images
    python -m benchmarks.fleet             # full: 8 trials a run, 2 repeats, whole sample, ~20-50 min

Results: ``fleet.json`` (``fleet_quick.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.commands import hpo, hpo_env, median_times, modules_loaded
from benchmarks.common import loadavg, report

__all__ = ["RATIO_GOAL", "TrialTiming", "VariantRun", "main", "summarize", "throughput"]

RATIO_GOAL = 0.9  # two `--devices cpu` workers over one `--devices cpu:2`, aggregate images/s
VARIANTS = {  # name -> the `--devices` of each worker process started together
    "two cpu": ["cpu", "cpu"],
    "one cpu:2": ["cpu:2"],
}
QUICK: dict[str, Any] = {"trials": 4, "folds": 2, "epochs": 2, "images": 900, "repeats": 1, "runs": 5}
FULL: dict[str, Any] = {"trials": 8, "folds": 3, "epochs": 6, "images": None, "repeats": 2, "runs": 20}
RUN_TIMEOUT_S = 3600.0  # one variant's workers; then they are killed and the run reported as cut


@dataclass(frozen=True)
class TrialTiming:
    number: int
    state: str
    start_s: float  # since the run's first command
    end_s: float | None
    images_per_sec: float | None
    seconds: float | None
    device: str
    params: str  # a canonical text of the params: equal texts are twin trials


@dataclass
class VariantRun:
    variant: str
    repeat: int
    wall_s: float
    exit_codes: list[int]
    trials: list[TrialTiming]
    note: str = ""


# ------------------------------------------------------------------------------------------- maths


def throughput(trials: list[TrialTiming]) -> dict[str, Any]:
    """Aggregate images/s of the finished trials over their training span, and what it rests on."""
    done = [
        t for t in trials if t.end_s is not None and t.images_per_sec is not None and t.seconds is not None
    ]
    if not done:
        return {"images_per_s": math.nan, "images": 0.0, "span_s": math.nan, "trials": 0}
    images = sum(t.images_per_sec * t.seconds for t in done)  # type: ignore[operator]
    span = max(t.end_s for t in done) - min(t.start_s for t in done)  # type: ignore[type-var]
    return {
        "images_per_s": images / span if span > 0 else math.nan,
        "images": images,
        "span_s": span,
        "trials": len(done),
        "mean_trial_images_per_s": statistics.fmean(t.images_per_sec for t in done),  # type: ignore[misc]
        "distinct_params": len({t.params for t in done}),
        "devices": sorted({t.device for t in done}),
    }


def summarize(runs: list[VariantRun]) -> dict[str, Any]:
    """Per variant: throughput of each repeat and their median; the ratio per repeat, its median, goal."""
    per: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:
        mine = [r for r in runs if r.variant == name]
        rates = [throughput(r.trials)["images_per_s"] for r in mine]
        per[name] = {
            "images_per_s": rates,
            "median_images_per_s": _median(rates),
            "wall_s": [round(r.wall_s, 1) for r in mine],
            "median_wall_s": _median([r.wall_s for r in mine]),
        }
    shared, pooled = VARIANTS
    ratios = []
    for repeat in sorted({r.repeat for r in runs}):
        rate = {r.variant: throughput(r.trials)["images_per_s"] for r in runs if r.repeat == repeat}
        if shared in rate and pooled in rate:
            ratios.append(rate[shared] / rate[pooled])
    ratio = _median(ratios)
    return {
        "variants": per,
        "ratios": ratios,
        "ratio": ratio,
        "goal": RATIO_GOAL,
        "goal_met": not math.isnan(ratio) and ratio >= RATIO_GOAL,
    }


def _median(values: list[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else math.nan


# -------------------------------------------------------------------------------------------- setup


def write_data(work: Path, images: int | None) -> Path:
    """The built-in sample under ``work``, and a manifest of whole writer groups up to ``images``
    (all of them when None) next to its labels.csv."""
    from training.sample import materialize_sample

    labels = materialize_sample(work / "sample")
    if images is None:
        return labels
    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_group: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    names, kept = sorted(by_group), []
    for i in np.random.default_rng(0).permutation(len(names)):
        if len(kept) >= images:
            break
        kept += by_group[names[i]]
    out = labels.with_name(f"subset-{images}.csv")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "group"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(kept, key=lambda r: r["path"]))
    return out


def write_space(work: Path, *, folds: int, epochs: int) -> Path:
    """search_spaces/quick.yaml at ``folds`` x ``epochs``, batch size and augmentation fixed."""
    raw = yaml.safe_load(importlib.resources.files("search_spaces").joinpath("quick.yaml").read_text())
    for path in ("budget.batch_size", "augment.preset", "augment.strength"):
        raw["params"].pop(path, None)
    # the starts keep what is still searched (a start that sets only fixed keys is dropped)
    starts = [{k: v for k, v in start.items() if k in raw["params"]} for start in raw.get("starts", [])]
    raw["starts"] = [start for start in starts if start]
    raw["fixed"] |= {
        "cv.folds": folds,
        "budget.max_epochs": epochs,
        "budget.batch_size": 64,
        "augment.preset": "none",
    }
    raw["description"] = (
        f"benchmarks.fleet: quick at {folds} folds x <= {epochs} epochs, batch 64, no augment"
    )
    out = work / "fleet-space.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


# -------------------------------------------------------------------------------------------- runs


def run_variant(
    variant: str, repeat: int, *, work: Path, space: Path, data: Path, trials: int, folds: int
) -> VariantRun:
    """``hpo study create``, then the variant's workers started together; their trials as recorded."""
    name = f"fleet-{variant.replace(' ', '-').replace(':', '')}-{repeat}"
    url = f"sqlite:///{work / f'{name}.db'}"
    log = work / f"{name}.log"
    create = [hpo(), "--quiet", "study", "create", name, "--space", str(space), "--data", str(data)]
    create += ["--storage", url, "--folds", str(folds), "--pruner", "none", "--seed", str(repeat)]
    create += ["--artifacts", str(work / "artifacts"), "--no-mlflow"]
    begin = time.time()
    with log.open("w") as out:
        made = subprocess.run(create, cwd=work, env=hpo_env(), stdout=out, stderr=subprocess.STDOUT)
    if made.returncode != 0:
        return VariantRun(
            variant, repeat, time.time() - begin, [made.returncode], [], f"study create: {_tail(log)}"
        )
    procs = []
    for devices in VARIANTS[variant]:
        worker = [hpo(), "--quiet", "worker", name, "--storage", url, "--devices", devices]
        worker += ["--n-trials", str(trials), "--checkpoint-dir", str(work / f"checkpoints-{name}")]
        with log.open("a") as out:
            procs.append(
                subprocess.Popen(worker, cwd=work, env=hpo_env(), stdout=out, stderr=subprocess.STDOUT)
            )
    note = ""
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, begin + RUN_TIMEOUT_S - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            note = f"killed after {RUN_TIMEOUT_S:.0f} s"
    wall = time.time() - begin
    codes = [p.returncode for p in procs]
    if any(codes) and not note:
        note = f"exit codes {codes}: {_tail(log)}"
    return VariantRun(variant, repeat, wall, codes, read_trials(url, name, begin), note)


def read_trials(url: str, study: str, began: float) -> list[TrialTiming]:
    import json

    import optuna

    out = []
    for t in optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False):
        if t.datetime_start is None:
            continue
        end = t.datetime_complete.timestamp() - began if t.datetime_complete else None
        attrs = t.user_attrs
        out.append(
            TrialTiming(
                number=t.number,
                state=t.state.name,
                start_s=round(t.datetime_start.timestamp() - began, 3),  # naive local time, read back
                end_s=None if end is None else round(end, 3),
                images_per_sec=attrs.get("images_per_sec"),
                seconds=attrs.get("seconds"),
                device=f"{attrs.get('host', '?')}/{attrs.get('device', '?')}",
                params=json.dumps(t.params, sort_keys=True),
            )
        )
    return out


def _tail(log: Path, n: int = 3) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def cli_start(work: Path, *, runs: int, study: str | None, url: str | None) -> dict[str, Any]:
    """Median start times against ``import typer, rich``, and the heavy modules each start loads."""
    import sys

    commands = {
        "import typer, rich": [sys.executable, "-c", "import typer, rich"],
        "hpo --help": [hpo(), "--help"],
    }
    probes: dict[str, list[str] | None] = {"import hpo.cli": None, "hpo --help": ["--help"]}
    if study and url:
        commands["hpo status"] = [hpo(), "status", study, "--storage", url]
        probes["hpo status"] = ["status", study, "--storage", url]
    times = median_times(commands, runs=runs, cwd=work)
    base = times["import typer, rich"]["median_s"]
    for entry in times.values():
        entry["ratio"] = entry["median_s"] / base
    modules = {name: modules_loaded(args, cwd=work) for name, args in probes.items()}
    return {"runs": runs, "times": times, "modules": modules}


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help=f"CPU-sized: {QUICK}")
    parser.add_argument("--trials", type=int, help=f"study-wide budget of each run (full: {FULL['trials']})")
    parser.add_argument("--folds", type=int, help=f"(full: {FULL['folds']})")
    parser.add_argument("--epochs", type=int, help=f"epoch cap per fold (full: {FULL['epochs']})")
    parser.add_argument("--images", type=int, help="sample images, whole writer groups (full: all 1797)")
    parser.add_argument(
        "--repeats", type=int, help=f"runs of each variant, alternating (full: {FULL['repeats']})"
    )
    parser.add_argument("--runs", type=int, help=f"runs of each CLI start command (full: {FULL['runs']})")
    parser.add_argument("--parts", nargs="+", choices=["sharing", "cli"], default=["sharing", "cli"])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.trials < 2 or args.repeats < 1 or args.runs < 1:
        parser.error("--trials must be at least 2, --repeats and --runs at least 1")
    return args


def _rows(summary: dict[str, Any] | None, cli: dict[str, Any] | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if summary:
        for name, v in summary["variants"].items():
            rates = ", ".join(f"{r:.0f}" for r in v["images_per_s"])
            walls = ", ".join(f"{w:.0f}" for w in v["wall_s"])
            rows.append([f"{name}: aggregate images/s", rates, f"wall {walls} s", "", ""])
        ratio = summary["ratio"]
        rows.append(
            ["two cpu / one cpu:2", f"{ratio:.2f}x", "", f">= {RATIO_GOAL}x", _yes(summary["goal_met"])]
        )
    if cli:
        for name, t in cli["times"].items():
            rows.append(
                [f"{name}: median s", f"{t['median_s']:.3f}", f"{t['ratio']:.1f}x", "", t["failure"] or ""]
            )
        for name, m in cli["modules"].items():
            heavy = ", ".join(m["heavy"]) or "none"
            rows.append(
                [f"{name}: heavy modules", heavy, ", ".join(m["notable"]), "none", _yes(not m["heavy"])]
            )
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_start, began = loadavg(), time.time()
    work = args.keep or Path(tempfile.mkdtemp(prefix="foldtune-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: list[VariantRun] = []
    summary = cli = None
    status_study = status_url = None
    try:
        if "sharing" in args.parts:
            data = write_data(work, args.images)
            space = write_space(work, folds=args.folds, epochs=args.epochs)
            for repeat in range(args.repeats):
                order = (
                    list(VARIANTS) if repeat % 2 == 0 else list(VARIANTS)[::-1]
                )  # alternate who goes first
                for variant in order:
                    run = run_variant(
                        variant,
                        repeat,
                        work=work,
                        space=space,
                        data=data,
                        trials=args.trials,
                        folds=args.folds,
                    )
                    runs.append(run)
                    t = throughput(run.trials)
                    print(
                        f"{variant:>10} repeat {repeat}: {t['images_per_s']:.0f} images/s over "
                        f"{t['span_s']:.0f} s, wall {run.wall_s:.0f} s, {t['trials']} trials, "
                        f"{t.get('distinct_params', 0)} distinct param sets, load {loadavg()} {run.note}",
                        flush=True,
                    )
            summary = summarize(runs)
            last = runs[-1]
            status_study = f"fleet-{last.variant.replace(' ', '-').replace(':', '')}-{last.repeat}"
            status_url = f"sqlite:///{work / f'{status_study}.db'}"
        if "cli" in args.parts:
            cli = cli_start(work, runs=args.runs, study=status_study, url=status_url)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    os.environ.setdefault("COLUMNS", "160")
    setup = (
        f"{args.trials} trials a run, quick space at {args.folds} folds x <= {args.epochs} epochs, batch 64, "
        f"no augment, no pruner, {args.images or 1797} sample images, {args.repeats} repeat(s)"
    )
    report(
        f"fleet{'_quick' if args.quick else ''}",
        "Worker fleet: CPU sharing and CLI start",
        ["measure", "value", "detail", "goal", "met"],
        _rows(summary, cli),
        {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "quick": args.quick,
            "setup": setup,
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "total_s": round(time.time() - began, 1),
            "sharing": None if summary is None else {**summary, "runs": [_run_json(r) for r in runs]},
            "cli": cli,
        },
    )


def _run_json(run: VariantRun) -> dict[str, Any]:
    return {
        "variant": run.variant,
        "repeat": run.repeat,
        "wall_s": round(run.wall_s, 1),
        "exit_codes": run.exit_codes,
        "note": run.note,
        "throughput": throughput(run.trials),
        "trials": [asdict(t) for t in run.trials],
    }


if __name__ == "__main__":
    main()
