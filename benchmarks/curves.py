"""A tabular benchmark: the same seeded random configs of a space, trained on every meta-set dataset.

Each config is one k-fold ``training.cross_validate`` run with the space's folds, epochs and early
stopping, and no pruning, so the table holds what any pruner would have seen: per fold and per epoch
the validation macro-F1 and the epoch's seconds. ``benchmarks.portfolio`` picks starts from it and
``benchmarks.pruner_replay`` replays pruners over it, with no training.

The configs are ``space.sample`` under Optuna's RandomSampler (seed 0), so the table's row i is the
same config on every dataset and on every machine. Runs go config by config over the datasets, and
each finished run is written at once, so an interrupted recording resumes where it stopped and a
partial table holds the same configs on every dataset. Lower fidelity (``--epochs``, ``--use-folds``:
train only the first folds of the space's split) makes large spaces affordable on a CPU.

    nice -n 10 python -m benchmarks.curves --space quick --configs 48
    python -m benchmarks.curves --space competition_cpu --configs 24 --epochs 4 --use-folds 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.common import RESULTS, machine_info
from benchmarks.metaset import META_SET, dataset_source, metaset_root
from hpo.space import SearchSpace, load_space
from training import DivergedError, RunConfig, apply_overrides, cross_validate, load_data
from training.optim import peak_lr_epoch

__all__ = ["config_for", "load_curves", "sample_configs"]

SEED = 0  # the configs' sampler, the folds and the weights: one table, one seed


def sample_configs(space: SearchSpace, n: int, *, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` param dicts drawn by Optuna's RandomSampler, as a study's first trials would be."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


def config_for(
    space: SearchSpace, params: dict[str, Any], dataset: str, *, epochs: int | None = None
) -> RunConfig:
    base = apply_overrides(
        RunConfig(),
        {
            "data.source": dataset_source(dataset),
            "data.cache_dir": str(metaset_root() / "cache"),
            "budget.device": "cpu",
            "budget.seed": SEED,
            "cv.seed": SEED,
        },
        where="curves",
    )
    config = space.resolve(base, params)
    if epochs is not None:
        config = apply_overrides(config, {"budget.max_epochs": epochs}, where="curves --epochs")
    return config


def record_run(config: RunConfig, *, use_folds: int | None) -> dict[str, Any]:
    """Train ``config`` fold by fold; per fold its per-epoch F1 and seconds, how it stopped, its best F1."""
    data = load_data(config.data)
    folds: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def on_epoch(fold: Any, stats: Any) -> None:
        current.setdefault(fold.index, {"f1": [], "seconds": []})
        current[fold.index]["f1"].append(round(stats.f1, 5))
        current[fold.index]["seconds"].append(round(stats.seconds, 4))

    start = time.process_time()
    try:
        for result in cross_validate(config, data=data, on_epoch=on_epoch):
            fold = current[result.fold.index]
            fold |= {"best_f1": round(result.fit.best_f1, 5), "stop": result.fit.stop_reason}
            folds.append(fold)
            if use_folds is not None and len(folds) >= use_folds:
                break
    except DivergedError as exc:
        # the objective prunes such a trial where it diverged: keep the epochs it trained
        index = len(folds)
        fold = current.get(index, {"f1": [], "seconds": []})
        fold |= {"best_f1": max(fold["f1"], default=0.0), "stop": f"diverged: {exc}"}
        folds.append(fold)
        return {"folds": folds, "value": None, "diverged": True, "cpu_s": time.process_time() - start}
    value = sum(f["best_f1"] for f in folds) / len(folds)
    return {"folds": folds, "value": round(value, 5), "diverged": False, "cpu_s": time.process_time() - start}


def load_curves(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="quick")
    parser.add_argument("--configs", type=int, default=48)
    parser.add_argument("--datasets", nargs="+", default=list(META_SET))
    parser.add_argument("--epochs", type=int, help="max epochs (default: the space's)")
    parser.add_argument("--use-folds", type=int, help="train only the first N folds of the space's split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="results file stem (default: curves_<space>[_low])")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    low = args.epochs is not None or args.use_folds is not None
    out = RESULTS / f"{args.out or f'curves_{args.space}' + ('_low' if low else '')}.json"
    configs = sample_configs(space, args.configs)
    described = _described(space, configs, epochs=args.epochs)
    payload: dict[str, Any] = load_curves(out) if out.is_file() else {}
    kept = payload.get("configs", [])
    if [c["params"] for c in kept] != [c["params"] for c in described[: len(kept)]]:
        raise SystemExit(f"{out} holds other configs (another space or seed); move it away to start over")
    payload.setdefault("runs", {})
    payload |= {
        "space": args.space,
        "seed": SEED,
        "fidelity": {"epochs": args.epochs, "use_folds": args.use_folds},
        "machine": machine_info(),
        "configs": described,
    }
    for index in range(len(configs)):
        for dataset in args.datasets:
            runs = payload["runs"].setdefault(dataset, {})
            if str(index) in runs:
                continue
            config = config_for(space, configs[index], dataset, epochs=args.epochs)
            runs[str(index)] = record_run(config, use_folds=args.use_folds)
            done = sum(len(r) for r in payload["runs"].values())
            payload["cpu_s"] = round(sum(r["cpu_s"] for d in payload["runs"].values() for r in d.values()), 1)
            _write(out, payload)
            value = runs[str(index)]["value"]
            print(
                f"config {index:3d} {dataset:9s} F1 {'diverged' if value is None else f'{value:.3f}'} "
                f"({runs[str(index)]['cpu_s']:.0f} CPU s; {done} runs, {payload['cpu_s'] / 3600:.2f} CPU h)",
                flush=True,
            )


def _described(
    space: SearchSpace, configs: list[dict[str, Any]], *, epochs: int | None
) -> list[dict[str, Any]]:
    """Each config's params and what the replay needs from its resolved config."""
    rows = []
    for params in configs:
        config = space.resolve(RunConfig(), params)
        max_epochs = epochs or config.budget.max_epochs
        rows.append(
            {
                "params": params,
                "peak_lr_epoch": peak_lr_epoch(config.sched, max_epochs),
                "max_epochs": max_epochs,
                "folds": config.cv.folds,
            }
        )
    return rows


if __name__ == "__main__":
    main()
