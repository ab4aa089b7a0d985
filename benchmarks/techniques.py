"""Training techniques on ``sample-mask``: what each adds to a baseline's out-of-fold macro-F1, and
whether the hill-climbed ensemble beats the best single model and a uniform top-k average.

No Optuna: every candidate is one k-fold ``training.cross_validate`` run of a fixed config, and its
score is the macro-F1 of its out-of-fold (OOF) probabilities over all 1890 images. Per seed (the
seed sets both the weight init and the fold split, so a seed is another split too), the candidates
are the baseline (test_resnet at its native 48 px, AdamW lr 1e-2, cosine, light augment, 12
epochs), the baseline with one technique each (mixup/cutmix, EMA), and a few lr/augment variations;
every figure is also given as its difference against the baseline of the same seed.

- ``+ OOF bias``: the per-class bias ``hpo retrain`` fits (``training.ensembling``), fitted on the
  other folds' OOF predictions and scored on each fold's; the in-sample figure is its upper bound.
- Ensembles over the K candidates: the best single candidate, the uniform average of the top k by
  OOF F1, and greedy forward selection with replacement (Caruana). Picked on the OOF predictions
  they are scored on, all three are optimistic; the ``held-out pick`` rows pick on the other folds'
  images and score each fold's, so the pick never sees the images it is judged on.

A technique "helps" when its mean difference exceeds its spread over the seeds (mean - std > 0),
"hurts" when mean + std < 0, and shows "no clear gain" otherwise (one seed has no spread, so no
verdict). Every fold's best epoch is chosen on its own validation fold (``budget.monitor: f1``), the
same small optimism in every row.

    python -m benchmarks.techniques --jobs 2     # 3 seeds x 6 candidates x 3 folds x 12 epochs
    python -m benchmarks.techniques --quick      # CPU-sized for `python -m benchmarks`
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import loadavg, report
from benchmarks.studies import mean_std
from training import RunConfig, apply_overrides, cross_validate, load_data, out_of_fold
from training.ensembling import apply_bias, blend_probs, fit_class_bias, heldout_bias_f1, select_ensemble
from training.metrics import classification_report, macro_f1

# What every candidate shares; each candidate below changes one or two keys of it.
BASE: dict[str, Any] = {
    "data.source": "sample-mask",
    "data.image_size": 48,  # the sample's native size
    "model.name": "test_resnet",
    "optim.name": "adamw",
    "optim.lr": 1e-2,  # the defaults' 1e-3 learns only the mask in this budget (0.11 macro-F1)
    "sched.name": "cosine",
    "augment.preset": "light",
    "budget.batch_size": 64,
    "budget.patience": None,  # every candidate trains all its epochs
    "budget.monitor": "f1",
    "budget.device": "cpu",
}
EMA_DECAY = 0.97  # ModelEmaV3's warmup lets 0.97 bind after ~110 of the ~240 steps of a 12-epoch fold
CANDIDATES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "+ mixup/cutmix": {"augment.mixup_alpha": 0.2, "augment.cutmix_alpha": 1.0, "augment.mix_prob": 0.5},
    "+ EMA": {"budget.ema_decay": EMA_DECAY},
    "lr 5e-3": {"optim.lr": 5e-3},
    "lr 2e-2": {"optim.lr": 2e-2},
    "augment medium": {"augment.preset": "medium"},
}
TOP_K = 3  # the uniform average's members
QUICK = {"seeds": [0, 1], "epochs": 4}

Weigh = Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]  # (candidates' probs, labels) -> weights


@dataclass(frozen=True)
class CandidateRun:
    seed: int
    name: str
    oof: np.ndarray  # (N, C) out-of-fold probabilities
    folds: list[np.ndarray]  # each fold's validation indices
    best_epochs: list[int]
    cpu_s: float
    wall_s: float


def config_for(name: str, seed: int, *, epochs: int, folds: int, cache_dir: str) -> RunConfig:
    overrides = {**BASE, **CANDIDATES[name], "budget.max_epochs": epochs, "cv.folds": folds}
    overrides |= {"budget.seed": seed, "cv.seed": seed, "data.cache_dir": cache_dir}
    return apply_overrides(RunConfig(), overrides, where=name)


def train_candidate(name: str, seed: int, *, epochs: int, folds: int, cache_dir: str) -> CandidateRun:
    """One k-fold run of candidate ``name``: its OOF probabilities, folds and CPU time."""
    config = config_for(name, seed, epochs=epochs, folds=folds, cache_dir=cache_dir)
    start, cpu = time.perf_counter(), time.process_time()
    data = load_data(config.data)
    results = list(cross_validate(config, data=data))
    return CandidateRun(
        seed,
        name,
        out_of_fold(results, len(data.table.labels), data.n_classes),
        [r.fold.val_idx for r in results],
        [r.fit.best_epoch for r in results],
        time.process_time() - cpu,
        time.perf_counter() - start,
    )


def _best_single(probs: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    scores = [_f1(y, p) for p in probs]
    return np.eye(len(probs))[int(np.argmax(scores))]


def _top_k(probs: Sequence[np.ndarray], y: np.ndarray, k: int = TOP_K) -> np.ndarray:
    scores = [_f1(y, p) for p in probs]
    weights = np.zeros(len(probs))
    weights[np.argsort(scores, kind="stable")[::-1][:k]] = 1 / min(k, len(probs))
    return weights


def _f1(y: np.ndarray, probs: np.ndarray) -> float:
    return macro_f1(y, probs.argmax(axis=1), probs.shape[1])


def in_sample(weigh: Weigh, probs: Sequence[np.ndarray], y: np.ndarray, *, bias: bool = False) -> float:
    """Macro-F1 of the blend ``weigh`` picks on the same OOF predictions it is scored on."""
    return heldout(weigh, probs, y, [np.arange(len(y))], bias=bias, same=True)


def heldout(
    weigh: Weigh,
    probs: Sequence[np.ndarray],
    y: np.ndarray,
    folds: Sequence[np.ndarray],
    *,
    bias: bool = False,
    same: bool = False,
) -> float:
    """Macro-F1 of blends picked (weights, and with ``bias`` a class bias on the blend) on the other
    folds' images and applied to each fold's; ``same``: pick on the fold's own images instead."""
    answers = np.empty_like(y)
    for val in folds:
        pick = val if same else np.setdiff1d(np.arange(len(y)), val)
        picked = [p[pick] for p in probs]
        weights = weigh(picked, y[pick])
        blend = blend_probs([p[val] for p in probs], weights)
        if bias:
            blend = apply_bias(blend, fit_class_bias(blend_probs(picked, weights), y[pick]))
        answers[val] = blend.argmax(axis=1)
    return macro_f1(y, answers, probs[0].shape[1])


# Ensemble rows: (weights picker, with a class bias), picked on the OOF predictions or held out.
ENSEMBLES: dict[str, tuple[Weigh, bool]] = {
    "best single": (_best_single, False),
    f"uniform top-{TOP_K}": (_top_k, False),
    "hill-climbed": (select_ensemble, False),  # Caruana: greedy forward selection with replacement
    "hill-climbed + bias": (select_ensemble, True),
}


def score_seed(runs: Sequence[CandidateRun], y: np.ndarray) -> dict[str, float]:
    """Every row's OOF macro-F1 for one seed's candidates (all on the same folds)."""
    folds = runs[0].folds
    if any(len(r.folds) != len(folds) or not all(map(np.array_equal, r.folds, folds)) for r in runs):
        raise ValueError("the candidates of one seed must share its folds")
    by_name = {r.name: r.oof for r in runs}
    base = by_name["baseline"]
    scores = {name: _f1(y, oof) for name, oof in by_name.items()}
    scores["+ OOF bias (in-sample)"] = _f1(y, apply_bias(base, fit_class_bias(base, y)))
    scores["+ OOF bias (held-out)"] = heldout_bias_f1(base, y, folds)
    probs = list(by_name.values())
    for name, (weigh, bias) in ENSEMBLES.items():
        scores[f"{name} of {len(probs)} (OOF pick)"] = in_sample(weigh, probs, y, bias=bias)
        scores[f"{name} of {len(probs)} (held-out pick)"] = heldout(weigh, probs, y, folds, bias=bias)
    return scores


# Paired comparisons beside "vs the baseline": (row, the row it is compared with).
def comparisons(k: int) -> list[tuple[str, str]]:
    pairs = []
    for pick in ("OOF pick", "held-out pick"):
        for other in ("best single", f"uniform top-{TOP_K}"):
            pairs.append((f"hill-climbed of {k} ({pick})", f"{other} of {k} ({pick})"))
    return pairs


def verdict(diff: tuple[float, float], seeds: int) -> str:
    mean, std = diff
    if seeds < 2:
        return "one seed: no spread"
    return "helps" if mean - std > 0 else "hurts" if mean + std < 0 else "no clear gain"


def summarize(per_seed: dict[int, dict[str, float]], k: int) -> dict[str, Any]:
    """Per row over seeds: F1 and its difference against the same seed's baseline (mean, std), the
    verdict; then the ensemble comparisons, paired by seed likewise."""
    seeds = sorted(per_seed)
    rows = {}
    for name in per_seed[seeds[0]]:
        diff = mean_std([per_seed[s][name] - per_seed[s]["baseline"] for s in seeds])
        rows[name] = {
            "f1": mean_std([per_seed[s][name] for s in seeds]),
            "diff": diff,
            "verdict": "" if name == "baseline" else verdict(diff, len(seeds)),
        }
    versus = {}
    for name, other in comparisons(k):
        diff = mean_std([per_seed[s][name] - per_seed[s][other] for s in seeds])
        versus[f"{name} - {other}"] = {"diff": diff, "verdict": verdict(diff, len(seeds))}
    return {"rows": rows, "comparisons": versus}


def _pm(pair: tuple[float, float] | list[float], fmt: str = ".3f") -> str:
    return f"{pair[0]:{fmt}} ± {pair[1]:.3f}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12, help="epochs a fold")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="candidate runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads a run")
    parser.add_argument("--quick", action="store_true", help=f"CPU-sized: {QUICK}")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("COLUMNS", "160")  # rich falls back to 80 columns when piped
    start, load = time.perf_counter(), loadavg()
    with tempfile.TemporaryDirectory(prefix="foldtune-techniques-") as tmp:
        os.environ["HPO_SAMPLE_DIR"] = str(Path(tmp) / "sample")  # sample-mask is written beside it
        cache = str(Path(tmp) / "cache")
        data = load_data(config_for("baseline", 0, epochs=1, folds=args.folds, cache_dir=cache).data)
        y, classes = data.table.labels, data.table.classes  # the sample and its cache, built once
        train = functools.partial(train_candidate, epochs=args.epochs, folds=args.folds, cache_dir=cache)
        plans = [(name, seed) for seed in args.seeds for name in CANDIDATES]
        ctx = get_context("spawn")  # fresh interpreters: no torch thread pool inherited by fork
        with ProcessPoolExecutor(
            args.jobs, mp_context=ctx, initializer=_set_threads, initargs=(args.threads,)
        ) as pool:
            runs = list(pool.map(train, *zip(*plans, strict=True)))
    per_seed = {seed: score_seed([r for r in runs if r.seed == seed], y) for seed in args.seeds}
    summary = summarize(per_seed, len(CANDIDATES))
    baseline = [r for r in runs if r.name == "baseline"]
    attributes = {
        name: mean_std(
            [classification_report(y, r.oof, classes, layout="mask")["attribute_f1"][name] for r in baseline]
        )
        for name in ("mask", "gender", "age")
    }
    wall_s, cpu_s = time.perf_counter() - start, sum(r.cpu_s for r in runs)
    setup = (
        f"sample-mask ({len(y)} images), {args.folds} folds, test_resnet 48 px, AdamW lr 1e-2, cosine, "
        f"light augment, {args.epochs} epochs, {len(CANDIDATES)} candidates, {len(args.seeds)} seed(s)"
    )
    rows = [
        [name, _pm(s["f1"]), "" if name == "baseline" else _pm(s["diff"], "+.3f"), s["verdict"]]
        for name, s in summary["rows"].items()
    ]
    rows += [[name, "", _pm(s["diff"], "+.3f"), s["verdict"]] for name, s in summary["comparisons"].items()]
    report(
        "techniques_quick" if args.quick else "techniques",
        f"OOF macro-F1 on {setup}; mean ± std over seeds; differences paired by seed",
        ["row", "OOF macro-F1", "minus baseline (or the named row)", "verdict"],
        rows,
        {
            "args": vars(args),
            "quick": args.quick,
            "setup": setup,
            "loadavg_start": load,
            "wall_s": round(wall_s, 1),
            "cpu_s": round(cpu_s, 1),
            "base": BASE,
            "candidates": CANDIDATES,
            "baseline_attribute_f1": attributes,
            "summary": summary,
            "per_seed": {str(s): scores for s, scores in per_seed.items()},
            "runs": [
                {
                    "seed": r.seed,
                    "name": r.name,
                    "best_epochs": r.best_epochs,
                    "cpu_s": round(r.cpu_s, 1),
                    "wall_s": round(r.wall_s, 1),
                }
                for r in runs
            ],
        },
    )
    print(
        f"{len(runs)} candidate runs: {cpu_s:.0f} CPU s in the runs, {wall_s / 60:.1f} min wall, "
        f"load {load} at start"
    )


if __name__ == "__main__":
    main()
