"""``fit``: train one fold, validate every epoch, keep the best checkpoint, return history and OOF probs.

The only hook is ``on_epoch``: it sees each epoch's stats and may stop training by returning True
or by raising (the HPO layer raises pruning through it), so this module knows nothing of Optuna.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from training.batches import LoadedData, iterate_batches, load_data
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ConfigError, RunConfig
from training.folds import oversample
from training.losses import build_loss
from training.metrics import macro_f1
from training.models import apply_freeze, build_model, check_image_size, normalization
from training.optim import LRSchedule, build_optimizer, build_scheduler
from training.transforms import Normalizer, build_augment, build_mixup, mix_batch, uses_hflip

if TYPE_CHECKING:
    import albumentations as A
    from timm.data import Mixup

__all__ = ["DivergedError", "EpochStats", "FitResult", "fit", "predict_proba", "resolve_device"]


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the message says when and what to try."""


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    f1: float  # validation macro-F1
    accuracy: float
    lr: float
    seconds: float  # whole epoch, train + validation
    images_per_sec: float  # training throughput


@dataclass(frozen=True)
class FitResult:
    history: list[EpochStats]
    best_epoch: int
    best_f1: float  # macro-F1 at the best epoch (best by ``budget.monitor``)
    oof_probs: np.ndarray  # (len(val_idx), n_classes) validation probabilities at the best epoch
    stop_reason: str
    checkpoint: Path | None  # best weights, loadable with training.checkpoint.load_checkpoint
    resumed_epochs: int = 0  # epochs taken from an earlier interrupted run of the same fold


OnEpoch = Callable[[EpochStats], bool | None]


def resolve_device(name: str, *, where: str = "budget.device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; errors name ``where`` the value came from."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{where}: unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ConfigError(
                f"{where}: '{name}' does not exist (this machine has {count} CUDA device(s)); use auto or cpu"
            )
    return device


def fit(
    config: RunConfig,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    on_epoch: OnEpoch | None = None,
    checkpoint_dir: str | Path | None = None,
    data: LoadedData | None = None,
) -> FitResult:
    """Train on ``train_idx``, validate on ``val_idx``.

    With ``checkpoint_dir``, the best and last states are saved there each epoch, and a run of the
    same config and fold resumes from the last one. With ``budget.ema_decay`` both hold the weight
    average, which is also what validation scores.
    """
    budget = config.budget
    data = data or load_data(config.data)
    labels = data.table.labels
    fit_idx = oversample(train_idx, labels, seed=config.cv.seed) if config.cv.oversample else train_idx
    trainer = _Trainer.build(config, data, fit_idx)

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    fold_key = _fold_key(config, train_idx, val_idx)
    history: list[EpochStats] = []
    best = _Best.none_yet(len(val_idx), data.n_classes)
    last = _resume_state(ckpt_dir, fold_key)
    if last is not None:
        trainer.load_state_dict(last)
        history = [EpochStats(**h) for h in last["history"]]
        best = _Best.from_state(last["best"])
    resumed = len(history)
    # Replay restored epochs so a resumed run reports exactly what the interrupted one would have.
    stopped = on_epoch is not None and any([bool(on_epoch(stats)) for stats in history])

    stop_reason = "stopped_by_callback" if stopped else "max_epochs"
    for epoch in range(len(history) + 1, budget.max_epochs + 1):
        if stopped:
            break
        if _patience_spent(history, best, budget.patience):
            stop_reason = "early_stopping"
            break
        start = time.perf_counter()
        train_loss, n_seen = trainer.train_epoch(data, fit_idx, epoch)
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise DivergedError(
                f"training loss became {train_loss} in epoch {epoch}; "
                "lower optim.lr, set budget.grad_clip, or use a gentler loss"
            )
        probs, val_loss = trainer.validate(data, val_idx)
        if not math.isfinite(val_loss):
            raise DivergedError(f"validation loss became {val_loss} in epoch {epoch}; lower optim.lr")
        trainer.schedule.step_epoch(val_loss)
        y_val = labels[val_idx]
        pred = probs.argmax(axis=1)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            f1=macro_f1(y_val, pred, data.n_classes),
            accuracy=float((pred == y_val).mean()),
            lr=trainer.schedule.lr,
            seconds=time.perf_counter() - start,
            images_per_sec=n_seen / max(train_seconds, 1e-9),
        )
        history.append(stats)
        score = stats.f1 if budget.monitor == "f1" else -stats.val_loss
        if score > best.score:
            best = _Best(epoch=epoch, f1=stats.f1, score=score, probs=probs)
            if ckpt_dir:
                save_checkpoint(ckpt_dir / "best.pt", _best_state(trainer.evaluated, config, data, stats))
        if ckpt_dir:
            save_checkpoint(
                ckpt_dir / "last.pt",
                {
                    "fold_key": fold_key,
                    # its "model" holds the weights to predict with, as in best.pt (retrain --mode full)
                    **trainer.state_dict(),
                    "history": [asdict(h) for h in history],
                    "best": best.state_dict(),
                },
            )
        if on_epoch is not None and on_epoch(stats):
            stop_reason = "stopped_by_callback"
            break

    return FitResult(
        history=history,
        best_epoch=best.epoch,
        best_f1=best.f1,
        oof_probs=best.probs,
        stop_reason=stop_reason,
        checkpoint=ckpt_dir / "best.pt" if ckpt_dir else None,
        resumed_epochs=resumed,
    )


@dataclass(frozen=True)
class _Best:
    """The best epoch so far by ``budget.monitor``."""

    epoch: int  # 0: none yet
    f1: float
    score: float  # what budget.monitor compares: F1, or the negated validation loss
    probs: np.ndarray  # (len(val_idx), n_classes) validation probabilities at that epoch

    @classmethod
    def none_yet(cls, n_val: int, n_classes: int) -> _Best:
        return cls(0, -1.0, -math.inf, np.zeros((n_val, n_classes), dtype=np.float32))

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "f1": self.f1,
            "score": self.score,
            "probs": torch.from_numpy(self.probs),
        }

    @classmethod
    def from_state(cls, state: dict) -> _Best:
        return cls(int(state["epoch"]), float(state["f1"]), float(state["score"]), state["probs"].numpy())


@dataclass(frozen=True)
class _Trainer:
    """One fold's model and everything that steps with it, built from the run config."""

    config: RunConfig
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    normalizer: Normalizer
    amp_dtype: torch.dtype | None
    augment: A.Compose | None
    mixup: Mixup | None  # batch mixing (mixup/cutmix): soft targets for the training loss
    ema: ModelEmaV3 | None  # the weight average, updated after every optimizer step
    steps_per_epoch: int  # optimizer steps, counting a partial accumulation at the end

    @classmethod
    def build(cls, config: RunConfig, data: LoadedData, fit_idx: np.ndarray) -> _Trainer:
        budget = config.budget
        device = resolve_device(budget.device)
        torch.manual_seed(budget.seed)
        model = build_model(config.model, data.n_classes)
        check_image_size(model, config.model.name, config.data.image_size)
        apply_freeze(model, config.model.freeze)
        model.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        counts = np.bincount(data.table.labels[fit_idx], minlength=data.n_classes)
        optimizer = build_optimizer(config.optim, model)  # trainable params only; no decay on norms/biases
        steps_per_epoch = math.ceil(math.ceil(len(fit_idx) / budget.batch_size) / budget.accum_steps)
        amp_dtype = _amp_dtype(device, budget.amp)
        # Warmup: the average follows the weights closely at first, so it is not stuck near the initial
        # weights in a short run; power 3/4 is timm's advice for shorter training (0.999 after 10k steps).
        ema = None
        if budget.ema_decay > 0:
            ema = ModelEmaV3(model, decay=budget.ema_decay, use_warmup=True, warmup_power=0.75)
        return cls(
            config=config,
            model=model,
            criterion=build_loss(config.loss, counts).to(device),
            optimizer=optimizer,
            schedule=build_scheduler(
                config.sched, optimizer, epochs=budget.max_epochs, steps_per_epoch=steps_per_epoch
            ),
            scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
            normalizer=Normalizer(*normalization(model), device),
            amp_dtype=amp_dtype,
            augment=build_augment(config.augment, config.data.image_size),
            mixup=build_mixup(config.augment, data.n_classes),
            ema=ema,
            steps_per_epoch=steps_per_epoch,
        )

    @property
    def evaluated(self) -> nn.Module:
        """What validation scores and checkpoints keep: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def train_epoch(self, data: LoadedData, idx: np.ndarray, epoch: int) -> tuple[float, int]:
        """One pass over ``idx``: (mean training loss, images seen)."""
        budget, device = self.config.budget, self.normalizer.device
        self.model.train()
        rng = np.random.default_rng(
            [budget.seed, epoch]
        )  # per-epoch stream: a resumed run shuffles identically
        if (
            self.augment is not None
        ):  # albumentations draws from its own generator, seeded from the OS unless set
            self.augment.set_random_seed(budget.seed * 10_000 + epoch)
        if self.mixup is not None:  # timm's Mixup draws from numpy's global generator
            np.random.seed(budget.seed * 10_000 + epoch)
        total = torch.zeros((), device=device)  # summed on device: no host sync per step
        n_seen = 0
        batches = iterate_batches(
            data.images,
            data.table.labels,
            idx,
            batch_size=budget.batch_size,
            shuffle=True,
            rng=rng,
            augment=self.augment,
            hflip=uses_hflip(self.config.augment),
            num_workers=budget.num_workers,
            prefetch=device.type == "cuda",
            pin_memory=device.type == "cuda",
        )
        n_batches = math.ceil(len(idx) / budget.batch_size)
        optimizer_steps = (epoch - 1) * self.steps_per_epoch  # the EMA's warmup counts these
        self.optimizer.zero_grad(set_to_none=True)
        for step, (x, y) in enumerate(batches, start=1):
            x, y = self.normalizer(x), y.to(device, non_blocking=True)
            targets = mix_batch(self.mixup, x, y) if self.mixup is not None else y
            with _autocast(device, self.amp_dtype):
                loss = self.criterion(self.model(x), targets)
            self.scaler.scale(loss / budget.accum_steps).backward()
            total += loss.detach() * len(y)
            n_seen += len(y)
            if step % budget.accum_steps == 0 or step == n_batches:
                if budget.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), budget.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.schedule.step_batch()
                optimizer_steps += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=optimizer_steps)
        return float(total) / max(n_seen, 1), n_seen

    @torch.no_grad()
    def validate(self, data: LoadedData, idx: np.ndarray) -> tuple[np.ndarray, float]:
        """Probabilities of :attr:`evaluated` for ``idx`` and its mean loss on the true labels."""
        model, device = self.evaluated, self.normalizer.device
        model.eval()
        probs, total = [], torch.zeros((), device=device)
        batches = iterate_batches(
            data.images,
            data.table.labels,
            idx,
            batch_size=self.config.budget.batch_size,
            shuffle=False,
            prefetch=device.type == "cuda",
            pin_memory=device.type == "cuda",
        )
        for x, y in batches:
            with _autocast(device, self.amp_dtype):
                logits = model(self.normalizer(x)).float()
            total += self.criterion(logits, y.to(device, non_blocking=True)) * len(y)
            probs.append(logits.softmax(dim=1))
        return torch.cat(probs).cpu().numpy(), float(total) / max(len(idx), 1)

    def state_dict(self) -> dict:
        """What resuming needs, in plain tensors and containers; ``model`` holds :attr:`evaluated`."""
        state = {
            "model": self.evaluated.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if self.ema is not None:
            state["train_model"] = self.model.state_dict()  # the weights the optimizer moves
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None:
            self.model.load_state_dict(state["train_model"])
            self.ema.module.load_state_dict(state["model"])
        else:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int = 128,
    hflip: bool = False,
) -> np.ndarray:
    """Softmax probabilities for uint8 NHWC ``images``; ``hflip`` averages with the mirrored view (TTA)."""
    model.eval().to(device)
    normalizer = Normalizer(mean, std, device)
    out = []
    for start in range(0, len(images), batch_size):
        x = normalizer(torch.from_numpy(np.asarray(images[start : start + batch_size])))
        p = model(x).float().softmax(dim=1)
        if hflip:
            p = (p + model(x.flip(dims=[3])).float().softmax(dim=1)) / 2
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _patience_spent(history: list[EpochStats], best: _Best, patience: int | None) -> bool:
    return patience is not None and bool(history) and history[-1].epoch - best.epoch >= patience


def _fold_key(config: RunConfig, train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    """Identifies (config, fold) so a checkpoint is only resumed by exactly the same work."""
    h = hashlib.sha256(repr(sorted(config.to_dict().items())).encode())
    h.update(np.asarray(train_idx, dtype=np.int64).tobytes())
    h.update(np.asarray(val_idx, dtype=np.int64).tobytes())
    return h.hexdigest()


def _resume_state(ckpt_dir: Path | None, fold_key: str) -> dict | None:
    path = ckpt_dir / "last.pt" if ckpt_dir else None
    if path is None or not path.exists():
        return None
    state = load_checkpoint(path)
    return state if state.get("fold_key") == fold_key else None


def _best_state(model: nn.Module, config: RunConfig, data: LoadedData, stats: EpochStats) -> dict:
    """Everything needed to rebuild the model and preprocess images for it, in plain types."""
    mean, std = normalization(model)
    return {
        "model": model.state_dict(),
        "config": config.to_dict(),
        "classes": list(data.table.classes),
        "mean": list(mean),
        "std": list(std),
        "epoch": stats.epoch,
        "f1": stats.f1,
    }
