"""A portfolio of at most 4 starts for a space, chosen greedily over the recorded meta-set table.

Input: ``benchmarks/results/curves_<space>.json`` (``benchmarks.curves``): the same configs trained on
every meta-set dataset. Each config's score on a dataset is its k-fold mean macro-F1 (a diverged run
scores 0), normalised per dataset between the table's worst and best config there:
``(F1 - min) / (max - min)``, so an easy dataset with F1 near 1 everywhere weighs no more than a hard
one. The first start is the config with the best mean normalised score; each next start is the one
that most raises the mean over datasets of the best-so-far normalised score (ties: the lower row).

Leave-one-dataset-out: for each dataset D the portfolio is built on the other datasets, and its first
start and its best of 4 are scored on D as a fraction of a reference: the best F1 that 30 TPE trials
reach on D, replayed over the table (TPE with foldtune's settings choosing among the table's rows as
one categorical param, mean of 5 seeds). With no more rows than trials, that reference is close to
the table's best, which is shown too.

    python -m benchmarks.portfolio                        # quick: table, LOO figures, starts YAML
    python -m benchmarks.portfolio --space competition_cpu --curves curves_competition_cpu_low
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import yaml

from benchmarks.common import RESULTS, report
from benchmarks.curves import load_curves
from hpo.space import CategoricalParam, FloatParam, IntParam, SearchSpace, load_space

__all__ = ["greedy_portfolio", "normalise", "score_table", "starts_yaml", "tpe_best"]

MAX_STARTS = 4
TPE_TRIALS = 30
TPE_SEEDS = 5


def score_table(
    curves: dict[str, Any], datasets: Sequence[str] | None = None
) -> tuple[list[str], list[int], np.ndarray]:
    """(datasets, config rows, F1 matrix [dataset, row]) over the rows recorded on every dataset."""
    runs = curves["runs"]
    names = list(datasets or runs)
    rows = sorted(set.intersection(*(set(map(int, runs[d])) for d in names)))
    f1 = np.array([[runs[d][str(i)]["value"] or 0.0 for i in rows] for d in names], dtype=float)
    return names, rows, f1


def normalise(f1: np.ndarray) -> np.ndarray:
    """Per dataset (row of ``f1``): 0 at the worst config, 1 at the best."""
    low, high = f1.min(axis=1, keepdims=True), f1.max(axis=1, keepdims=True)
    return (f1 - low) / np.where(high > low, high - low, 1.0)


def greedy_portfolio(scores: np.ndarray, k: int = MAX_STARTS) -> list[int]:
    """Columns of ``scores`` [dataset, config], each maximising the mean over datasets of the best so far."""
    chosen: list[int] = []
    best = np.full(scores.shape[0], -np.inf)
    for _ in range(min(k, scores.shape[1])):
        gain = np.maximum(best[:, None], scores).mean(axis=0)
        gain[chosen] = -np.inf
        pick = int(np.argmax(gain))  # argmax: the first (lowest) column among ties
        chosen.append(pick)
        best = np.maximum(best, scores[:, pick])
    return chosen


def tpe_best(values: Sequence[float], *, trials: int = TPE_TRIALS, seed: int) -> float:
    """Best value TPE (foldtune's settings) finds in ``trials`` picks among ``values`` as one categorical."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: values[t.suggest_categorical("row", list(range(len(values))))], n_trials=trials)
    return float(study.best_value)


def starts_yaml(space: SearchSpace, starts: Sequence[dict[str, Any]]) -> str:
    """The ``starts:`` block: each start's params, floats at 3 significant digits kept inside their range."""
    lines = ["starts:"]
    for params in starts:
        items = [f"{path}: {_yaml_value(space, path, value)}" for path, value in params.items()]
        lines.append("  - {" + ", ".join(items) + "}")
    text = "\n".join(lines) + "\n"
    _check_starts(space, yaml.safe_load(text)["starts"])
    return text


def _yaml_value(space: SearchSpace, path: str, value: Any) -> str:
    param = space.params[path]
    if isinstance(value, bool) or isinstance(param, CategoricalParam | IntParam):
        return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    rounded = min(max(float(f"{value:.3g}"), param.low), param.high)
    text = f"{rounded:.3g}"
    if "e" in text:  # YAML 1.1 (PyYAML) reads 3e-05 as a string: write 3.0e-05
        mantissa, exponent = text.split("e")
        text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
    elif "." not in text:
        text += ".0"
    return text


def _check_starts(space: SearchSpace, starts: list[dict[str, Any]]) -> None:
    """Every value inside its param's range or choices, every condition held (as the space loads them)."""
    for n, start in enumerate(starts):
        for path, value in start.items():
            param = space.params[path]
            where = f"start {n}: {path}={value!r}"
            inside = (
                value in param.choices
                if isinstance(param, CategoricalParam)
                else not isinstance(param, FloatParam | IntParam) or param.low <= value <= param.high
            )
            if not inside:
                raise ValueError(f"{where} is outside the space's range or choices")
            if not param.applies(start):
                raise ValueError(f"{where}: condition {param.when} does not hold")


def fidelity_ranking(curves: dict[str, Any], *, epochs: int) -> dict[str, float]:
    """Per dataset, Spearman's rho between each config's fold-1 best F1 within its first ``epochs`` epochs
    (a 1-fold, ``epochs``-epoch run) and its full k-fold F1: how well a cheaper run ranks the configs."""
    from scipy.stats import spearmanr

    out = {}
    for dataset, runs in curves["runs"].items():
        pairs = [(max(r["folds"][0]["f1"][:epochs], default=0.0), r["value"] or 0.0) for r in runs.values()]
        low, full = zip(*pairs, strict=True)
        out[dataset] = float(spearmanr(low, full).statistic)
    return out


def fidelity_against(low: dict[str, Any], full: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per dataset both tables hold: Spearman's rho between the low- and full-fidelity F1 of the
    configs in both, and how many configs that is."""
    from scipy.stats import spearmanr

    out = {}
    for dataset, runs in full["runs"].items():
        rows = sorted(set(runs) & set(low["runs"].get(dataset, {})), key=int)
        if len(rows) >= 3:
            pairs = [(low["runs"][dataset][i]["value"] or 0.0, runs[i]["value"] or 0.0) for i in rows]
            cheap, whole = zip(*pairs, strict=True)
            out[dataset] = {"rho": float(spearmanr(cheap, whole).statistic), "configs": len(rows)}
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="quick")
    parser.add_argument("--curves", help="curves results stem (default: curves_<space>)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    stem = args.curves or f"curves_{args.space}"
    curves = load_curves(RESULTS / f"{stem}.json")
    names, rows, f1 = score_table(curves)
    params = [curves["configs"][i]["params"] for i in rows]

    whole = greedy_portfolio(normalise(f1))
    loo = []
    for d, name in enumerate(names):
        others = [k for k in range(len(names)) if k != d]
        picks = greedy_portfolio(normalise(f1[others]))
        reference = statistics.fmean(tpe_best(f1[d].tolist(), seed=s) for s in range(TPE_SEEDS))
        loo.append(
            {
                "dataset": name,
                "starts": [rows[p] for p in picks],
                "first_f1": f1[d, picks[0]],
                "best_of_4_f1": f1[d, picks].max(),
                "tpe30_f1": reference,
                "table_best_f1": f1[d].max(),
                "table_median_f1": float(np.median(f1[d])),
                "first_frac": f1[d, picks[0]] / reference,
                "best_of_4_frac": f1[d, picks].max() / reference,
            }
        )
    table_rows = [
        [
            r["dataset"],
            " ".join(map(str, r["starts"])),
            f"{r['first_f1']:.3f}",
            f"{r['best_of_4_f1']:.3f}",
            f"{r['tpe30_f1']:.3f}",
            f"{r['table_best_f1']:.3f}",
            f"{r['table_median_f1']:.3f}",
            f"{r['first_frac']:.3f}",
            f"{r['best_of_4_frac']:.3f}",
        ]
        for r in loo
    ]
    table_rows.append(
        [
            "mean",
            "",
            *(f"{statistics.fmean(r[k] for r in loo):.3f}" for k in ("first_f1", "best_of_4_f1", "tpe30_f1")),
            f"{statistics.fmean(r['table_best_f1'] for r in loo):.3f}",
            f"{statistics.fmean(r['table_median_f1'] for r in loo):.3f}",
            *(f"{statistics.fmean(r[k] for r in loo):.3f}" for k in ("first_frac", "best_of_4_frac")),
        ]
    )
    starts = [params[p] for p in whole]
    full = not any((curves.get("fidelity") or {}).values())  # a low-fidelity table cannot rank itself
    fidelity = {e: fidelity_ranking(curves, epochs=e) for e in (1, 2, 4)} if full else {}
    full_table = RESULTS / f"curves_{args.space}.json"
    against_full = (
        fidelity_against(curves, load_curves(full_table)) if not full and full_table.is_file() else {}
    )
    text = starts_yaml(space, starts)
    report(
        f"portfolio_{args.space}",
        f"Portfolio starts for {args.space}, leave-one-dataset-out "
        f"({len(rows)} configs x {len(names)} datasets)",
        [
            "held out",
            "starts (rows)",
            "first F1",
            "best of 4 F1",
            f"TPE {TPE_TRIALS} F1",
            "table best",
            "table median",
            "first / TPE",
            "best of 4 / TPE",
        ],
        table_rows,
        {
            "space": args.space,
            "curves": stem,
            "fidelity": curves.get("fidelity"),
            "datasets": names,
            "rows": rows,
            "normalisation": "per dataset (F1 - min) / (max - min) over the table's configs; diverged = 0",
            "reference": (
                f"TPE over the table rows as one categorical, {TPE_TRIALS} trials, mean of {TPE_SEEDS} seeds"
            ),
            "portfolio": [rows[p] for p in whole],
            "portfolio_mean_normalised": [
                float(normalise(f1)[:, whole[: k + 1]].max(axis=1).mean()) for k in range(len(whole))
            ],
            "starts": starts,
            "starts_yaml": text,
            "leave_one_out": loo,
            "low_fidelity_spearman": fidelity,
            "low_vs_full_spearman": against_full,
        },
    )
    for dataset, fig in against_full.items():
        print(f"vs full runs on {dataset}: Spearman {fig['rho']:.2f} over {fig['configs']} configs")
    for e, rhos in fidelity.items():
        print(
            f"fold 1, first {e} epoch(s) vs full run, Spearman rho: "
            + ", ".join(f"{d} {rho:.2f}" for d, rho in rhos.items())
            + f"; mean {statistics.fmean(rhos.values()):.2f}"
        )
    print(f"# {args.space}: built on {', '.join(names)} ({len(rows)} configs)")
    print(text)


if __name__ == "__main__":
    main()
