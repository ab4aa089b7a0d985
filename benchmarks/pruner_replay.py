"""Pruners replayed over the recorded curves (a tabular benchmark): many seeds, no training.

Input: ``benchmarks/results/curves_<space>.json`` (``benchmarks.curves``): per config, dataset, fold and
epoch the validation macro-F1 and the epoch's seconds, trained without pruning. A simulated study is
one worker taking the table's configs in a seeded random order (``numpy.random.default_rng(seed)
.permutation``). Each trial's curve is fed, epoch by epoch, to the real Optuna pruner object in an
in-memory study, exactly as the objective does: the F1 credited so far, (finished folds' best F1 +
the current fold's best so far) / k, at step ``fold_index * max_epochs + epoch``; the fold-level
Wilcoxon pruner gets each fold's best F1 at step ``fold_index``. A pruned trial stops there; a config
whose training diverged ends PRUNED where it diverged. Its cost is the sum of the epoch seconds it
actually trained (model building and validation set-up between folds are left out).

``asha`` is promotion-type ASHA with the rules the worker uses (``hpo.study.rung_steps``,
``hpo.study.in_top``): at each rung a trial goes on when its credited F1 ranks in the top 1/eta of all
trials that reached the rung, else it is paused; before starting a new config, the worker promotes the
paused trial that now ranks in the top 1/eta at its rung (the highest rung first, then the best value),
and the continuation trains only the remaining epochs. A fold that ends early (patience) counts as
having reached the fold-end rung. With the schedule rule (``+sched``) no trial is judged at an epoch
before ``training.optim.peak_lr_epoch`` of its fold.

Per pruner: the anytime curve (best final CV F1 of completed trials vs cumulative seconds), the time
until that best is within 0.005 of the table's best config on the dataset, the epochs, the final F1;
mean ± std over seeds and datasets. Then 12-trial studies (2 seeds per dataset): each pruner's best
against ``none`` on the same 12 configs (within 0.02, with fewer epochs).

    python -m benchmarks.pruner_replay                      # curves_quick.json, 5 seeds
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks.common import RESULTS, report
from benchmarks.curves import load_curves
from hpo.study import ETA, build_pruner, in_top, rung_steps

__all__ = ["Curve", "StudyTrace", "curves_of", "pruner_factories", "replay_asha", "replay_optuna"]

TARGET_GAP = 0.005  # time to within this of the table's best F1
SHORT_TRIALS = 12  # issue's "never stalls" check: 12-trial studies
SHORT_GAP = 0.02
ANYTIME_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # fractions of none's study seconds


@dataclass(frozen=True)
class Curve:
    """One config's recorded run on one dataset."""

    row: int
    f1: tuple[tuple[float, ...], ...]  # per fold, per epoch validation macro-F1
    seconds: tuple[tuple[float, ...], ...]
    folds: int  # k of the split (the credited F1 divides by it)
    max_epochs: int
    peak_epoch: int  # training.optim.peak_lr_epoch of its schedule
    diverged: bool = False

    @property
    def value(self) -> float:
        return sum(max(f, default=0.0) for f in self.f1) / self.folds


@dataclass
class StudyTrace:
    """What one simulated study did: per finished trial (cumulative seconds, state, value)."""

    events: list[tuple[float, str, float | None]] = field(default_factory=list)
    seconds: float = 0.0
    epochs: int = 0
    started: int = 0  # configs started (promotions not counted)
    promoted: int = 0

    def finish(self, state: str, value: float | None) -> None:
        self.events.append((self.seconds, state, value))

    @property
    def best(self) -> float:
        return max((v for _, s, v in self.events if s == "COMPLETE" and v is not None), default=0.0)

    def best_at(self, seconds: float) -> float:
        return max(
            (v for t, s, v in self.events if s == "COMPLETE" and v is not None and t <= seconds), default=0.0
        )

    def time_to(self, target: float) -> float | None:
        best = -math.inf
        for t, s, v in self.events:
            if s == "COMPLETE" and v is not None:
                best = max(best, v)
                if best >= target:
                    return t
        return None


def curves_of(table: dict[str, Any], dataset: str) -> list[Curve]:
    configs, runs = table["configs"], table["runs"][dataset]
    return [
        Curve(
            row=int(i),
            f1=tuple(tuple(f["f1"]) for f in run["folds"]),
            seconds=tuple(tuple(f["seconds"]) for f in run["folds"]),
            folds=configs[int(i)]["folds"],
            max_epochs=configs[int(i)]["max_epochs"],
            peak_epoch=configs[int(i)]["peak_lr_epoch"],
            diverged=run["diverged"],
        )
        for i, run in sorted(runs.items(), key=lambda kv: int(kv[0]))
    ]


# ------------------------------------------------------------------------------ Optuna pruners


def replay_optuna(
    curves: Sequence[Curve],
    pruner: optuna.pruners.BasePruner,
    *,
    fold_level: bool = False,
    schedule_rule: bool = False,
) -> StudyTrace:
    """One worker runs ``curves`` in order under ``pruner``, reporting as the objective does."""
    # a fixed name: Hyperband assigns brackets by a hash of the study name and trial number
    study = optuna.create_study(study_name="replay", direction="maximize", pruner=pruner)
    trace = StudyTrace()
    for curve in curves:
        trial = study.ask()
        trace.started += 1
        state, value = _replay_trial(trial, curve, trace, fold_level=fold_level, schedule_rule=schedule_rule)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        trace.finish(state.name, value)
    return trace


def _replay_trial(
    trial: optuna.Trial, curve: Curve, trace: StudyTrace, *, fold_level: bool, schedule_rule: bool
) -> tuple[TrialState, float | None]:
    done: list[float] = []
    for fold, (f1s, secs) in enumerate(zip(curve.f1, curve.seconds, strict=True)):
        best = 0.0
        for epoch, (f1, sec) in enumerate(zip(f1s, secs, strict=True), start=1):
            trace.seconds += sec
            trace.epochs += 1
            if fold_level:
                continue
            best = max(best, f1)
            trial.report((sum(done) + best) / curve.folds, fold * curve.max_epochs + epoch)
            judged = not schedule_rule or epoch >= curve.peak_epoch
            if judged and trial.should_prune():
                return TrialState.PRUNED, None
        done.append(max(f1s, default=0.0))
        if curve.diverged and fold == len(curve.f1) - 1:
            return TrialState.PRUNED, None
        if fold_level:
            trial.report(done[-1], fold)
            if trial.should_prune():
                return TrialState.PRUNED, None
    return TrialState.COMPLETE, sum(done) / curve.folds


# ------------------------------------------------------------------------------ ASHA with promotion


@dataclass
class _Run:
    """A trial's place in its curve: where it stopped, and the rungs it has been judged at."""

    curve: Curve
    fold: int = 0
    epoch: int = 0  # epochs done in ``fold``
    done: list[float] = field(default_factory=list)
    best: float = 0.0
    rungs: dict[int, float] = field(default_factory=dict)  # rung step -> credited F1 there
    paused_at: int | None = None


def replay_asha(curves: Sequence[Curve], *, eta: int = ETA, schedule_rule: bool = False) -> StudyTrace:
    """One worker runs ``curves`` in order under promotion-type ASHA; see the module docstring."""
    trace = StudyTrace()
    at_rung: dict[int, list[float]] = {}
    paused: list[_Run] = []
    queue = list(curves)
    while True:
        promotable = [
            r
            for r in paused
            if in_top(r.rungs[r.paused_at], at_rung[r.paused_at], eta=eta)  # type: ignore[index]
        ]
        if promotable:
            run = max(promotable, key=lambda r: (r.paused_at, r.rungs[r.paused_at]))
            paused.remove(run)
            run.paused_at = None
            trace.promoted += 1
        elif queue:
            run = _Run(queue.pop(0))
            trace.started += 1
        else:
            break
        state, value = _advance(run, trace, at_rung, eta=eta, schedule_rule=schedule_rule)
        if state == "PAUSED":
            paused.append(run)
            state = "PRUNED"
        trace.finish(state, value)
    return trace


def _advance(
    run: _Run, trace: StudyTrace, at_rung: dict[int, list[float]], *, eta: int, schedule_rule: bool
) -> tuple[str, float | None]:
    curve = run.curve
    m = curve.max_epochs
    rungs = rung_steps(folds=curve.folds, max_epochs=m, eta=eta)
    while run.fold < len(curve.f1):
        f1s, secs = curve.f1[run.fold], curve.seconds[run.fold]
        while run.epoch < len(f1s):
            trace.seconds += secs[run.epoch]
            trace.epochs += 1
            run.best = max(run.best, f1s[run.epoch])
            run.epoch += 1
            fold_over = run.epoch == len(f1s)
            credited = (sum(run.done) + run.best) / curve.folds
            # a fold that stopped early has reached its fold-end rung
            step = (run.fold + 1) * m if fold_over else run.fold * m + run.epoch
            judged = not schedule_rule or run.epoch >= curve.peak_epoch
            for rung in rungs:
                if rung > step or rung in run.rungs:
                    continue
                run.rungs[rung] = credited
                at_rung.setdefault(rung, []).append(credited)
                if judged and not in_top(credited, at_rung[rung], eta=eta):
                    run.paused_at = rung
                    if fold_over:
                        run.done.append(run.best)
                        run.fold, run.epoch, run.best = run.fold + 1, 0, 0.0
                    if run.fold >= len(curve.f1) and not curve.diverged:
                        return "COMPLETE", sum(run.done) / curve.folds  # paused after its last epoch
                    return "PAUSED", None
        run.done.append(run.best)
        run.fold, run.epoch, run.best = run.fold + 1, 0, 0.0
    if curve.diverged:
        return "PRUNED", None
    return "COMPLETE", sum(run.done) / curve.folds


# ------------------------------------------------------------------------------ the comparison

Replayer = Callable[[Sequence[Curve], bool], StudyTrace]


def pruner_factories(*, folds: int, max_epochs: int) -> dict[str, tuple[Replayer, bool]]:
    """name -> (replay(curves, schedule_rule), whether the schedule rule can change anything)."""

    def optuna_pruner(make: Callable[[], optuna.pruners.BasePruner], fold_level: bool = False) -> Replayer:
        return lambda curves, rule: replay_optuna(curves, make(), fold_level=fold_level, schedule_rule=rule)

    def built(name: str) -> Callable[[], optuna.pruners.BasePruner]:
        return lambda: build_pruner(name, folds=folds, max_epochs=max_epochs)

    return {
        "none": (optuna_pruner(built("none")), False),
        "median": (optuna_pruner(built("median")), True),
        "median-s5": (
            optuna_pruner(lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)),
            True,
        ),
        # optuna#2906's kurobako run: PercentilePruner(75) with Optuna's defaults (5 startup trials, no
        # warm-up steps). For maximize it keeps the top 75 %: it prunes below the 25th percentile.
        "percentile": (optuna_pruner(lambda: optuna.pruners.PercentilePruner(75.0)), True),
        "sh": (optuna_pruner(built("sh")), True),
        "hyperband": (optuna_pruner(built("hyperband")), True),
        "wilcoxon": (optuna_pruner(built("wilcoxon"), fold_level=True), False),
        "asha": (lambda curves, rule: replay_asha(curves, schedule_rule=rule), True),
    }


def simulate(
    table: dict[str, Any], *, seeds: Sequence[int], short_seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """Every (dataset, seed, pruner, schedule rule) study, full length and 12-trial."""
    configs = table["configs"]
    factories = pruner_factories(folds=configs[0]["folds"], max_epochs=configs[0]["max_epochs"])
    out = []
    for dataset in table["runs"]:
        curves = curves_of(table, dataset)
        table_best = max(c.value for c in curves if not c.diverged)
        for seed in sorted({*seeds, *short_seeds}):
            order = [curves[i] for i in np.random.default_rng(seed).permutation(len(curves))]
            for name, (replay, rule_matters) in factories.items():
                for rule in (False, True) if rule_matters else (False,):
                    label = name + ("+sched" if rule else "")
                    studies = []
                    if seed in seeds:
                        studies.append(("full", replay(order, rule)))
                    if seed in short_seeds:
                        studies.append(("short", replay(order[:SHORT_TRIALS], rule)))
                    for kind, trace in studies:
                        out.append(
                            {
                                "dataset": dataset,
                                "seed": seed,
                                "pruner": label,
                                "kind": kind,
                                "table_best": table_best,
                                "best": trace.best,
                                "seconds": trace.seconds,
                                "epochs": trace.epochs,
                                "started": trace.started,
                                "promoted": trace.promoted,
                                "time_to_target": trace.time_to(table_best - TARGET_GAP),
                                "events": trace.events,
                            }
                        )
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _pm(pair: tuple[float, float], fmt: str = ".3f") -> str:
    return "-" if math.isnan(pair[0]) else f"{pair[0]:{fmt}} ± {pair[1]:{fmt}}"


def summarize(studies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pruner, over datasets and seeds; time figures as ratios to ``none`` on the same study."""
    full = [s for s in studies if s["kind"] == "full"]
    base = {(s["dataset"], s["seed"]): s for s in full if s["pruner"] == "none"}
    summary: dict[str, dict[str, Any]] = {}
    for pruner in dict.fromkeys(s["pruner"] for s in full):
        mine = [s for s in full if s["pruner"] == pruner]
        pairs = [(s, base[s["dataset"], s["seed"]]) for s in mine]
        reached = [(s, b) for s, b in pairs if s["time_to_target"] is not None]
        # equal-time view: best F1 when `none` has spent a quarter / half of its study
        at = {
            frac: _mean_std(
                [_best_at(s, frac * b["seconds"]) - _best_at(b, frac * b["seconds"]) for s, b in pairs]
            )
            for frac in (0.1, 0.25, 0.5)
        }
        # a study that ran out of configs before that time plateaus there: the table is finite
        ran_out = sum(s["seconds"] < 0.25 * b["seconds"] for s, b in pairs)
        summary[pruner] = {
            # the anytime curve: mean regret to the table's best at fractions of none's study time
            "anytime_regret": {
                str(frac): _mean_std([s["table_best"] - _best_at(s, frac * b["seconds"]) for s, b in pairs])[
                    0
                ]
                for frac in ANYTIME_GRID
            },
            "final_f1": _mean_std([s["best"] for s in mine]),
            "final_minus_none": _mean_std([s["best"] - b["best"] for s, b in pairs]),
            "reached": f"{len(reached)}/{len(mine)}",
            "reached_n": len(reached),
            "time_to_target_s": _mean_std([s["time_to_target"] for s, _ in reached]),
            "time_ratio_to_none": _mean_std([s["time_to_target"] / b["time_to_target"] for s, b in reached]),
            "epochs": _mean_std([s["epochs"] for s in mine]),
            "epochs_ratio_to_none": _mean_std([s["epochs"] / b["epochs"] for s, b in pairs]),
            "seconds": _mean_std([s["seconds"] for s in mine]),
            "promoted": _mean_std([s["promoted"] for s in mine]),
            "f1_minus_none_at_time": {str(k): v for k, v in at.items()},
            "ran_out_before_quarter_of_none": ran_out,
        }
    return summary


def short_check(studies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """12-trial studies: per pruner, in how many its best is within 0.02 of none's with fewer epochs."""
    short = [s for s in studies if s["kind"] == "short"]
    base = {(s["dataset"], s["seed"]): s for s in short if s["pruner"] == "none"}
    out = {}
    for pruner in dict.fromkeys(s["pruner"] for s in short):
        pairs = [(s, base[s["dataset"], s["seed"]]) for s in short if s["pruner"] == pruner]
        ok = [s["best"] >= b["best"] - SHORT_GAP and s["epochs"] < b["epochs"] for s, b in pairs]
        out[pruner] = {
            "passed": f"{sum(ok)}/{len(ok)}",
            "all_passed": all(ok),
            "worst_f1_minus_none": min(s["best"] - b["best"] for s, b in pairs),
            "epochs_ratio_to_none": _mean_std([s["epochs"] / b["epochs"] for s, b in pairs]),
            "failed": [
                f"{s['dataset']}/{s['seed']}" for (s, _), good in zip(pairs, ok, strict=True) if not good
            ],
        }
    return out


def leave_one_out(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each dataset D: the pruner :func:`recommend` picks on the others, and its figures on D."""
    datasets = list(dict.fromkeys(s["dataset"] for s in studies))
    rows = []
    for held in datasets:
        pick = recommend(summarize([s for s in studies if s["dataset"] != held]))
        on_d = summarize([s for s in studies if s["dataset"] == held])[pick]
        rows.append(
            {
                "held_out": held,
                "chosen": pick,
                **{k: on_d[k] for k in ("final_minus_none", "time_ratio_to_none", "reached")},
            }
        )
    return rows


def recommend(summary: dict[str, dict[str, Any]]) -> str:
    """The best time-to-target (never reached = 2x none) among the pruners that prune at all and whose
    final F1 is within the target's gap of none's (equal or better final F1)."""
    eligible = [
        p
        for p, s in summary.items()
        if p != "none" and s["final_minus_none"][0] >= -TARGET_GAP and s["epochs_ratio_to_none"][0] < 1
    ]
    return min(eligible, key=lambda p: _rank_key(summary[p])) if eligible else "none"


def _rank_key(s: dict[str, Any]) -> tuple[float, float]:
    """Never-reached studies count as a full `none` study (ratio 1 would flatter them: use 2)."""
    n_total = int(s["reached"].split("/")[1])
    ratio, _ = s["time_ratio_to_none"]
    ratio = 2.0 if math.isnan(ratio) else ratio
    penalised = (ratio * s["reached_n"] + 2.0 * (n_total - s["reached_n"])) / n_total
    return penalised, -s["final_minus_none"][0]


def _best_at(study: dict[str, Any], seconds: float) -> float:
    return max(
        (v for t, state, v in study["events"] if state == "COMPLETE" and v is not None and t <= seconds),
        default=0.0,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--curves", default="curves_quick")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--short-seeds", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    table = load_curves(RESULTS / f"{args.curves}.json")
    # the configs recorded on every dataset, so each study draws from the same rows
    common = set.intersection(*(set(r) for r in table["runs"].values()))
    table["runs"] = {d: {i: r for i, r in runs.items() if i in common} for d, runs in table["runs"].items()}
    studies = simulate(table, seeds=range(args.seeds), short_seeds=range(args.short_seeds))
    summary = summarize(studies)
    short = short_check(studies)
    ranked = sorted((p for p in summary if p != "none"), key=lambda p: _rank_key(summary[p]))
    recommended = recommend(summary)
    loo = leave_one_out(studies)
    n_sets = len(table["runs"])
    rows = [
        [
            p,
            _pm(s["final_f1"]),
            _pm(s["final_minus_none"], "+.3f"),
            s["reached"],
            f"{s['time_ratio_to_none'][0]:.2f}",
            f"{_rank_key(s)[0]:.2f}",
            f"{s['epochs_ratio_to_none'][0]:.2f}",
            f"{s['f1_minus_none_at_time']['0.1'][0]:+.3f}",
            f"{s['f1_minus_none_at_time']['0.25'][0]:+.3f}"
            + (
                f" ({s['ran_out_before_quarter_of_none']} out)" if s["ran_out_before_quarter_of_none"] else ""
            ),
            short[p]["passed"] if p in short else "",
            f"{short[p]['worst_f1_minus_none']:+.3f}" if p in short else "",
        ]
        for p, s in sorted(summary.items(), key=lambda kv: _rank_key(kv[1]) if kv[0] != "none" else (9, 0))
    ]
    os.environ.setdefault("COLUMNS", "200")
    report(
        f"pruner_replay_{table['space']}",
        f"Pruners replayed over {len(common)} configs x {n_sets} datasets, {args.seeds} seeds "
        f"(mean ± std over seeds and datasets); recommended: {recommended}",
        [
            "pruner",
            "final F1",
            "final - none",
            f"reached best-{TARGET_GAP}",
            "time to it / none (reached)",
            "same, never = 2",
            "epochs / none",
            "F1 - none at 10% of none's s",
            "at 25% (studies out of configs)",
            f"{SHORT_TRIALS} trials: within {SHORT_GAP} w/ fewer epochs",
            "worst",
        ],
        rows,
        {
            "curves": args.curves,
            "space": table["space"],
            "configs": len(common),
            "datasets": list(table["runs"]),
            "seeds": args.seeds,
            "order": "numpy.random.default_rng(seed).permutation of the table's rows, one worker",
            "target": f"table's best config F1 on the dataset - {TARGET_GAP}",
            "summary": summary,
            "short_check": short,
            "ranking": ranked,
            "recommended": recommended,
            "leave_one_dataset_out": loo,
            "studies": [{k: v for k, v in s.items() if k != "events"} for s in studies],
        },
    )
    print("anytime: mean regret to the table's best F1 at fractions of none's study seconds")
    print("pruner            " + " ".join(f"{f:>6.2f}" for f in ANYTIME_GRID))
    for p, s in summary.items():
        print(f"{p:17s} " + " ".join(f"{s['anytime_regret'][str(f)]:6.3f}" for f in ANYTIME_GRID))
    for row in loo:
        print(
            f"without {row['held_out']:9s} the replay picks {row['chosen']:16s}; "
            f"on {row['held_out']}: final - none "
            f"{_pm(row['final_minus_none'], '+.3f')}, time / none {_pm(row['time_ratio_to_none'], '.2f')}, "
            f"reached {row['reached']}"
        )


if __name__ == "__main__":
    main()
