"""The pruned, group-aware k-fold objective: one trial = sampled config -> every fold -> mean macro-F1.

Reporting follows the pruner. Epoch-level pruners get step ``fold * max_epochs + epoch``, so they compare
the same fold and epoch across trials, and as value the F1 credited so far: the finished folds' F1
plus the current fold's best so far, over the number of folds. It only rises and ends at the trial's
value; Optuna's median pruner judges a trial by its best value over all steps, so a per-fold F1 that
starts over each fold would let every trial that got through fold 1 run to the end. Fold-level
pruners (Wilcoxon) get each finished fold's F1 at step ``fold``.

Which errors prune, fail or stop a trial is decided here on purpose: diverged loss -> PRUNED; out of
memory or any other error -> FAIL with the reason in user attrs (the worker goes on);
KeyboardInterrupt (SIGTERM/Ctrl-C), or any error once a stop was asked for -> FAIL plus a queued retry
that resumes from the last saved epoch.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import statistics
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hpo.optuna_compat import stored_trial
from hpo.records import Progress, write_trial
from hpo.study import FOLD_LEVEL_PRUNERS, StudySpec
from hpo.tracking import TrialObserver
from hpo.workers._cost import measure_trial
from hpo.workers._failures import FailureLog
from hpo.workers._stop import stop_requested
from storage import redact
from training.batches import load_data
from training.config import RunConfig, apply_overrides
from training.cv import Fold, FoldResult, cross_validate, out_of_fold
from training.loop import DivergedError, EpochStats
from training.metrics import macro_f1

__all__ = ["Objective", "root_trial_number"]

log = logging.getLogger(__name__)


def root_trial_number(trial: optuna.Trial) -> int:
    """The first trial of a retry chain (heartbeat or interrupt), whose checkpoints a retry resumes."""
    return int(stored_trial(trial).system_attrs.get("failed_trial", trial.number))


class Objective:
    """Callable for ``study.optimize``; built once per worker process."""

    def __init__(
        self,
        spec: StudySpec,
        *,
        device: str,
        checkpoint_root: str | Path,
        data_source: str | None = None,
        device_label: str | None = None,
        worker: str | None = None,
        observer: TrialObserver | None = None,
        failure_log: FailureLog | None = None,
    ) -> None:
        overrides: dict[str, Any] = {"budget.device": device}
        if data_source:
            overrides["data.source"] = data_source
        self.spec = spec
        self.base = apply_overrides(spec.base, overrides, where="worker")
        self.checkpoint_root = Path(checkpoint_root)
        self.device_label = device_label or device
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}/{self.device_label}"
        self.failure_log = failure_log or FailureLog()
        self.fold_level = spec.pruner in FOLD_LEVEL_PRUNERS
        self.observer = observer or TrialObserver()
        data = load_data(self.base.data)  # build or open the decoded cache once, before any trial
        spec.check_data(data.table, self.base.data.source)

    def __call__(self, trial: optuna.Trial) -> float:
        # The base already holds the space's fixed values and the study's CLI overrides (--folds, --seed).
        config = apply_overrides(self.base, self.spec.space.sample(trial), where=f"trial {trial.number}")
        write_trial(
            trial,
            {
                "config": config.to_dict(),
                "host": socket.gethostname(),
                "device": self.device_label,
                "worker": self.worker,
            },
        )
        root = root_trial_number(trial)
        ckpt_dir = self.checkpoint_root / trial.study.study_name / f"trial-{root}"
        self.observer.on_trial_start(trial, config)
        try:
            n_classes, device = load_data(config.data).n_classes, self.base.budget.device
            if over := measure_trial(
                trial, config, limits=self.spec.limits, num_classes=n_classes, device=device
            ):
                raise optuna.TrialPruned(over)  # the config alone breaks a limit: pruned before step 1
            value = self._run_folds(trial, config, ckpt_dir)
        except DivergedError as exc:
            write_trial(trial, {"prune_reason": str(exc)})
            self._end(trial, ckpt_dir, TrialState.PRUNED, None, str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except optuna.TrialPruned as exc:
            write_trial(trial, {"prune_reason": str(exc)})
            self._end(trial, ckpt_dir, TrialState.PRUNED, None, str(exc))
            raise
        except KeyboardInterrupt:
            self._hand_back(trial, root)
            raise
        except torch.OutOfMemoryError as exc:
            reason = self._record_failure(
                trial, exc, f"out of memory: {exc}; lower budget.batch_size or data.image_size"
            )
            torch.cuda.empty_cache()
            self._end(trial, ckpt_dir, TrialState.FAIL, None, reason)
            raise
        except Exception as exc:
            if stop_requested():  # the interrupt surfaced as another error (e.g. inside torch.save)
                self._hand_back(trial, root)
                raise KeyboardInterrupt from exc
            reason = self._record_failure(trial, exc, f"{type(exc).__name__}: {exc}")
            self._end(trial, ckpt_dir, TrialState.FAIL, None, reason)
            raise
        self._end(trial, ckpt_dir, TrialState.COMPLETE, value, None)
        return value

    def _hand_back(self, trial: optuna.Trial, root: int) -> None:
        """Interrupted, not wrong: keep the checkpoints and queue the same params to run again."""
        _queue_retry(trial, root)
        self.observer.on_trial_end(trial, TrialState.FAIL, None, "interrupted; queued for retry")

    def _record_failure(self, trial: optuna.Trial, exc: Exception, reason: str) -> str:
        """Keep the reason with the trial, and log the failure (a traceback per distinct kind)."""
        reason = redact(reason)
        write_trial(trial, {"fail_reason": reason})
        self.failure_log(trial.number, exc, reason)
        return reason

    def _end(
        self, trial: optuna.Trial, ckpt_dir: Path, state: TrialState, value: float | None, reason: str | None
    ) -> None:
        """A finished trial needs its checkpoints no more (an interrupted one keeps them for its retry)."""
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        self.observer.on_trial_end(trial, state, value, reason)

    def _run_folds(self, trial: optuna.Trial, config: RunConfig, ckpt_dir: Path) -> float:
        data = load_data(config.data)
        max_epochs = config.budget.max_epochs
        done: list[FoldResult] = []
        fold_best: dict[int, float] = {}  # fold index -> best epoch F1 so far

        def on_epoch(fold: Fold, stats: EpochStats) -> None:
            progress = Progress(fold=fold.number, folds=fold.count, epoch=stats.epoch, epochs=max_epochs)
            write_trial(trial, {"progress": progress})
            self.observer.on_epoch(trial, fold, stats)
            if self.fold_level:
                return
            fold_best[fold.index] = max(fold_best.get(fold.index, 0.0), stats.f1)
            credited = (sum(r.fit.best_f1 for r in done) + fold_best[fold.index]) / fold.count
            trial.report(credited, fold.index * max_epochs + stats.epoch)
            if trial.should_prune():
                write_trial(trial, {"epochs": [*(len(r.fit.history) for r in done), stats.epoch]})
                raise optuna.TrialPruned(
                    f"pruned in fold {fold.number} epoch {stats.epoch}: F1 credited so far {credited:.4f} "
                    "is below its peers"
                )

        for result in cross_validate(config, data=data, on_epoch=on_epoch, checkpoint_dir=ckpt_dir):
            done.append(result)
            self.observer.on_fold(trial, result)
            write_trial(
                trial,
                {
                    "fold_f1": [r.fit.best_f1 for r in done],
                    "epochs": [len(r.fit.history) for r in done],
                    "best_epochs": [r.fit.best_epoch for r in done],
                    "resumed_epochs": [r.fit.resumed_epochs for r in done],
                },
            )
            if self.fold_level:
                trial.report(result.fit.best_f1, result.fold.index)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned after fold {result.fold.number}: F1 {result.fit.best_f1:.4f} "
                        "is below its peers"
                    )

        fold_f1 = [r.fit.best_f1 for r in done]
        history = [h for r in done for h in r.fit.history]
        seconds = sum(h.seconds for h in history)
        images = sum(h.images_per_sec * h.seconds for h in history)
        oof = out_of_fold(done, len(data.table), data.n_classes)
        write_trial(
            trial,
            {
                "f1_std": statistics.pstdev(fold_f1),
                "seconds": round(seconds, 2),
                "images_per_sec": round(images / max(seconds, 1e-9), 1),
                "threads": torch.get_num_threads(),
                "oof_f1": macro_f1(data.table.labels, oof.argmax(axis=1), data.n_classes),
            },
        )
        return float(statistics.fmean(fold_f1))


def _queue_retry(trial: optuna.Trial, root: int) -> None:
    """The same bookkeeping as Optuna's heartbeat retry, so both kinds of retry resume alike."""
    frozen = stored_trial(trial)
    history = [*frozen.system_attrs.get("retry_history", []), trial.number]
    trial.study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            system_attrs={"failed_trial": root, "retry_history": history},
        )
    )
    log.info("trial %d interrupted; queued a retry that resumes from its checkpoints", trial.number)
