"""``hpo retrain``'s training: one trial's members, per seed and per fold (or on all images).

A seed is ``budget.seed`` and the next ones; the folds are the study's (same ``cv.folds`` and
``cv.seed``), so each seed's out-of-fold probabilities cover every image once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from optuna.trial import FrozenTrial

from hpo.models._bundle import Member
from hpo.records import trial_record
from hpo.tracking import BEST_F1, OOF_F1, RunLog, epoch_metrics, fold_key, key, seed_key, trial_key
from training.batches import LoadedData, load_data
from training.checkpoint import load_checkpoint
from training.config import RunConfig, apply_overrides
from training.cv import Fold, cross_validate, out_of_fold
from training.loop import EpochStats, fit
from training.metrics import macro_f1

__all__ = ["OnFold", "Retrained", "retrain_trial", "train_subset"]

TRAIN_SUBSET = 512  # images scored each epoch in full mode (fit needs a validation set)

# (trial number, "fold 2/3" | "all data, on its training images", F1): full mode's F1 is a training F1
OnFold = Callable[[int, str, float], None]


@dataclass(frozen=True)
class _Seed:
    """Where one seed's fits write: checkpoints, metrics under ``tag``, progress lines through ``say``."""

    workdir: Path
    tag: str  # trial<n>, or trial<n>/seed<s> with several seeds
    say: str  # "{}", or "seed <s>, {}" with several seeds
    run: RunLog
    on_fold: OnFold | None


@dataclass(frozen=True)
class Retrained:
    """One trial retrained: its members, out-of-fold probabilities (folds mode) and epoch history."""

    trial: FrozenTrial
    config: RunConfig
    data: LoadedData
    members: list[Member]
    oof: np.ndarray | None
    history: dict[int, list[EpochStats]]  # fold index -> epochs


def retrain_trial(
    t: FrozenTrial,
    config: RunConfig,
    *,
    mode: str,
    seeds: int,
    workdir: Path,
    run: RunLog,
    on_fold: OnFold | None,
) -> Retrained:
    """Train trial ``t`` again with ``seeds`` seeds (``budget.seed``, +1, ...): its k folds (folds
    mode) or once on all images (full mode). The seeds' OOF probabilities average into the trial's.
    Each epoch's metrics go to ``run`` once, under ``trial<n>[/seed<s>]/fold<k>`` (``.../full``)."""
    data = load_data(config.data)
    members, oofs, history = [], [], {}
    for offset in range(seeds):
        seed = config.budget.seed + offset
        seeded = apply_overrides(config, {"budget.seed": seed}, where="hpo retrain --seeds")
        # one seed keeps the names it always had; several name theirs
        tag = key(trial_key(t.number), seed_key(seed)) if seeds > 1 else trial_key(t.number)
        say = (f"seed {seed}, " if seeds > 1 else "") + "{}"
        fits = _retrain_full if mode == "full" else _retrain_folds
        got, oof, seen = fits(t, seeded, data, _Seed(workdir / f"seed-{seed}", tag, say, run, on_fold))
        members += got
        if oof is not None:
            oofs.append(oof)
            if seeds > 1:
                f1 = macro_f1(data.table.labels, oof.argmax(axis=1), data.n_classes)
                run.log_metrics({key(tag, OOF_F1): f1})
        history = history or seen  # the curves show the first seed
    oof = np.mean(oofs, axis=0) if oofs else None
    return Retrained(t, config, data, members, oof, history)


def _retrain_folds(
    t: FrozenTrial, config: RunConfig, data: LoadedData, seed: _Seed
) -> tuple[list[Member], np.ndarray, dict[int, list[EpochStats]]]:
    history: dict[int, list[EpochStats]] = {}

    def on_epoch(fold: Fold, stats: EpochStats) -> None:
        history.setdefault(fold.index, []).append(stats)
        seed.run.log_metrics(epoch_metrics(key(seed.tag, fold_key(fold.number)), stats), step=stats.epoch)

    members, results = [], []
    for result in cross_validate(config, data=data, on_epoch=on_epoch, checkpoint_dir=seed.workdir):
        results.append(result)
        fold, fit_result = result.fold, result.fit
        assert fit_result.checkpoint is not None  # cross_validate was given a checkpoint_dir
        state = load_checkpoint(fit_result.checkpoint)
        members.append(
            Member.from_checkpoint(
                state, trial=t.number, fold=fold.index, cv_f1=t.value, epochs=fit_result.best_epoch
            )
        )
        seed.run.log_metrics({key(seed.tag, fold_key(fold.number), BEST_F1): fit_result.best_f1})
        if seed.on_fold is not None:
            seed.on_fold(t.number, seed.say.format(f"fold {fold.number}/{fold.count}"), fit_result.best_f1)
    return members, out_of_fold(results, len(data.table), data.n_classes), history


def _retrain_full(
    t: FrozenTrial, config: RunConfig, data: LoadedData, seed: _Seed
) -> tuple[list[Member], None, dict[int, list[EpochStats]]]:
    history: dict[int, list[EpochStats]] = {}
    record = trial_record(t)
    epochs = max(
        int(e) for e in record.get("best_epochs") or record.get("epochs") or [config.budget.max_epochs]
    )
    config = apply_overrides(
        config, {"budget.max_epochs": epochs, "budget.patience": None}, where="hpo retrain --mode full"
    )

    def on_epoch(stats: EpochStats) -> None:
        history.setdefault(0, []).append(stats)
        # its "validation" images are training images: epoch_metrics names their scores so
        metrics = epoch_metrics(key(seed.tag, "full"), stats, on_training_images=True)
        seed.run.log_metrics(metrics, step=stats.epoch)

    everything = np.arange(len(data.table), dtype=np.int64)
    result = fit(
        config,
        everything,
        train_subset(len(data.table)),
        on_epoch=on_epoch,
        checkpoint_dir=seed.workdir / "full",
        data=data,
    )
    state = load_checkpoint(seed.workdir / "full" / "best.pt")  # config, classes, mean/std
    state["model"] = load_checkpoint(seed.workdir / "full" / "last.pt")["model"]  # the final epoch's weights
    if seed.on_fold is not None:
        seed.on_fold(t.number, seed.say.format("all data, on its training images"), result.history[-1].f1)
    member = Member.from_checkpoint(state, trial=t.number, fold=None, cv_f1=t.value, epochs=epochs)
    return [member], None, history


def train_subset(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n, size=min(n, TRAIN_SUBSET), replace=False)).astype(np.int64)
