"""The pruned, group-aware k-fold objective: one trial = sampled config -> every fold -> mean macro-F1.

Reporting follows the pruner. Epoch-level pruners get step ``fold * max_epochs + epoch``, so they compare
the same fold and epoch across trials, and as value the F1 credited so far: the finished folds' F1
plus the current fold's best so far, over the number of folds. It only rises and ends at the trial's
value; Optuna's median pruner judges a trial by its best value over all steps, so a per-fold F1 that
starts over each fold would let every trial that got through fold 1 run to the end. Fold-level
pruners (Wilcoxon) get each finished fold's F1 at step ``fold``. No epoch-level pruner judges a trial
on an epoch before its schedule reaches its peak learning rate (``training.optim.peak_lr_epoch``):
warm-up and one-cycle's rise would otherwise lose to trials already at full rate. The values are
reported all the same.

With ``--pruner asha`` a stop at a rung is a pause (``hpo.workers._promotion``): the trial keeps its
checkpoints, and a fold that early stopping ends before ``max_epochs`` reports its credited F1 at the
rungs it skipped, so it is judged there too. A continuation resumes the paused trial's checkpoints and
reports only the steps after the paused trial's last one.

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
from hpo.records import SAMPLED, Progress, TrialRecord, trial_record, write_trial
from hpo.study import ETA, FOLD_LEVEL_PRUNERS, StudySpec, rung_steps
from hpo.tracking import TrialObserver
from hpo.workers._cost import measure_trial
from hpo.workers._failures import FailureLog
from hpo.workers._promotion import (
    CONTINUES,
    Continuation,
    Paused,
    Promotion,
    chain_root,
    checkpoint_folder,
    continuation_of,
)
from hpo.workers._stop import stop_requested
from storage import redact
from training.batches import load_data
from training.config import RunConfig, apply_overrides
from training.cv import Fold, FoldResult, cross_validate, out_of_fold
from training.loop import DivergedError, EpochStats
from training.metrics import macro_f1
from training.optim import peak_lr_epoch

__all__ = ["Objective", "root_trial_number"]

log = logging.getLogger(__name__)


def root_trial_number(trial: optuna.Trial) -> int:
    """The first trial of a retry chain (heartbeat or interrupt), or the paused trial a continuation
    continues: whose checkpoints the trial resumes."""
    return chain_root(stored_trial(trial))


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
        promotion: Promotion | None = None,
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
        self.pausing = spec.pruner == "asha"
        self.promotion = promotion  # bounds the paused trials' checkpoints; None: keeps them all
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
                # enqueued trials carry theirs (start, warm start, retry) on the stored trial
                "origin": trial_record(stored_trial(trial)).get("origin", SAMPLED),
            },
        )
        frozen = stored_trial(trial)
        if frozen.user_attrs.get("paused"):  # a heartbeat retry copies its failed try's user attrs
            write_trial(trial, {"paused": None})
        root = chain_root(frozen)
        ckpt_dir = checkpoint_folder(self.checkpoint_root, trial.study.study_name, root)
        continued = continuation_of(frozen)
        if continued is not None and not (ckpt_dir / "fold-1" / "last.pt").exists():
            log.warning(
                "trial %d continues trial %d, but its checkpoints in %s are gone; training from epoch 0",
                trial.number,
                continued.trial,
                ckpt_dir,
            )
        self.observer.on_trial_start(trial, config)
        try:
            n_classes, device = load_data(config.data).n_classes, self.base.budget.device
            if over := measure_trial(
                trial, config, limits=self.spec.limits, num_classes=n_classes, device=device
            ):
                raise optuna.TrialPruned(over)  # the config alone breaks a limit: pruned before step 1
            value = self._run_folds(trial, config, ckpt_dir, continued)
        except DivergedError as exc:
            write_trial(trial, {"prune_reason": str(exc)})
            self._end(trial, ckpt_dir, TrialState.PRUNED, None, str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except optuna.TrialPruned as exc:
            write_trial(trial, {"prune_reason": str(exc)})
            # A paused trial keeps its checkpoints for a promotion (unless the disk bound took them).
            self._end(trial, ckpt_dir, TrialState.PRUNED, None, str(exc), keep=isinstance(exc, Paused))
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
        self,
        trial: optuna.Trial,
        ckpt_dir: Path,
        state: TrialState,
        value: float | None,
        reason: str | None,
        *,
        keep: bool = False,
    ) -> None:
        """A finished trial needs its checkpoints no more (an interrupted one keeps them for its retry)."""
        if not keep:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        self.observer.on_trial_end(trial, state, value, reason)

    def _prune(self, trial: optuna.Trial, step: int, rungs: list[int], where: str, value: float) -> None:
        """The pruner said stop: prune, or with asha pause (checkpoints kept for a promotion)."""
        if not self.pausing:
            raise optuna.TrialPruned(f"pruned in {where}: F1 credited so far {value:.4f} is below its peers")
        rung = rungs.index(step) + 1
        write_trial(trial, {"paused": {"rung": rung, "step": step}})
        if self.promotion is not None:
            self.promotion.keep_bound(trial.study, trial.number)
        raise Paused(
            f"paused at rung {rung} (step {step}, {where}): F1 credited so far {value:.4f} is outside the "
            f"top 1/{ETA} of the trials there"
        )

    def _run_folds(
        self, trial: optuna.Trial, config: RunConfig, ckpt_dir: Path, continued: Continuation | None
    ) -> float:
        data = load_data(config.data)
        max_epochs = config.budget.max_epochs
        peak = peak_lr_epoch(config.sched, max_epochs)
        rungs = rung_steps(folds=config.cv.folds, max_epochs=max_epochs) if self.pausing else []
        after = continued.after_step if continued is not None else 0  # the paused trial reported these
        done: list[FoldResult] = []
        fold_best: dict[int, float] = {}  # fold index -> best epoch F1 so far
        last_step = after  # the last step reported (a continuation's predecessor reported up to `after`)

        def credited(fold: Fold) -> float:
            return (sum(r.fit.best_f1 for r in done) + fold_best.get(fold.index, 0.0)) / fold.count

        def report(fold: Fold, step: int, epoch: int, *, judged: bool) -> None:
            nonlocal last_step
            value = credited(fold)
            trial.report(value, step)
            last_step = step
            if judged and trial.should_prune():
                self._prune(trial, step, rungs, f"fold {fold.number} epoch {epoch}", value)

        def on_epoch(fold: Fold, stats: EpochStats) -> None:
            progress = Progress(fold=fold.number, folds=fold.count, epoch=stats.epoch, epochs=max_epochs)
            write_trial(trial, {"progress": progress})
            self.observer.on_epoch(trial, fold, stats)
            if self.fold_level:
                return
            fold_best[fold.index] = max(fold_best.get(fold.index, 0.0), stats.f1)
            step = fold.index * max_epochs + stats.epoch
            if step <= after:  # replayed from the checkpoints of the trial this one continues
                return
            try:
                report(fold, step, stats.epoch, judged=stats.epoch >= peak)
            except optuna.TrialPruned:
                write_trial(trial, {"epochs": [*(len(r.fit.history) for r in done), stats.epoch]})
                raise

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
            fold = result.fold
            fold_best.pop(fold.index, None)  # now in `done`
            # Early stopping ended the fold before some of its rungs: judge it there on what it got.
            end = (fold.index + 1) * max_epochs
            for step in (s for s in rungs if max(last_step, fold.index * max_epochs) < s <= end):
                report(fold, step, len(result.fit.history), judged=True)
            if self.fold_level:
                trial.report(result.fit.best_f1, fold.index)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned after fold {fold.number}: F1 {result.fit.best_f1:.4f} is below its peers"
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
    system_attrs = {"failed_trial": root, "retry_history": history}
    user_attrs = dict(TrialRecord(origin=trial_record(frozen).get("origin", SAMPLED)))
    if CONTINUES in frozen.system_attrs:  # a continuation's retry goes on continuing the same trial
        system_attrs[CONTINUES] = frozen.system_attrs[CONTINUES]
        user_attrs[CONTINUES] = frozen.user_attrs[CONTINUES]
    trial.study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )
    log.info("trial %d interrupted; queued a retry that resumes from its checkpoints", trial.number)
