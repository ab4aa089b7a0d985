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

import numpy as np
import torch
from torch import nn

from training.batches import LoadedData, iterate_batches, load_data
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ConfigError, RunConfig
from training.folds import oversample
from training.losses import build_loss
from training.metrics import macro_f1
from training.models import apply_freeze, build_model, check_image_size, normalization
from training.optim import build_optimizer, build_scheduler
from training.transforms import Normalizer, build_augment, uses_hflip

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
    same config and fold resumes from the last one.
    """
    budget = config.budget
    data = data or load_data(config.data)
    device = resolve_device(budget.device)
    torch.manual_seed(budget.seed)

    model = build_model(config.model, data.n_classes)
    check_image_size(model, config.model.name, config.data.image_size)
    apply_freeze(model, config.model.freeze)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(*normalization(model), device)

    labels = data.table.labels
    fit_idx = oversample(train_idx, labels, seed=config.cv.seed) if config.cv.oversample else train_idx
    criterion = build_loss(config.loss, np.bincount(labels[fit_idx], minlength=data.n_classes)).to(device)
    optimizer = build_optimizer(config.optim, model)  # trainable params only; no decay on norms/biases
    steps_per_epoch = math.ceil(math.ceil(len(fit_idx) / budget.batch_size) / budget.accum_steps)
    schedule = build_scheduler(
        config.sched, optimizer, epochs=budget.max_epochs, steps_per_epoch=steps_per_epoch
    )
    amp_dtype = _amp_dtype(device, budget.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    augment = build_augment(config.augment, config.data.image_size)

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    fold_key = _fold_key(config, train_idx, val_idx)
    history: list[EpochStats] = []
    best = {"epoch": 0, "f1": -1.0, "score": -math.inf}
    best_probs = np.zeros((len(val_idx), data.n_classes), dtype=np.float32)
    last = _resume_state(ckpt_dir, fold_key)
    if last is not None:
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        schedule.load_state_dict(last["schedule"])
        scaler.load_state_dict(last["scaler"])
        history = [EpochStats(**h) for h in last["history"]]
        best = last["best"]
        best_probs = last["best_probs"].numpy()
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
        train_loss, n_seen = _train_epoch(
            model,
            criterion,
            optimizer,
            schedule,
            scaler,
            data,
            fit_idx,
            config,
            epoch,
            augment,
            normalizer,
            amp_dtype,
        )
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise DivergedError(
                f"training loss became {train_loss} in epoch {epoch}; "
                "lower optim.lr, set budget.grad_clip, or use a gentler loss"
            )
        probs, val_loss = _validate(model, criterion, data, val_idx, budget, normalizer, amp_dtype)
        if not math.isfinite(val_loss):
            raise DivergedError(f"validation loss became {val_loss} in epoch {epoch}; lower optim.lr")
        schedule.step_epoch(val_loss)
        y_val = labels[val_idx]
        pred = probs.argmax(axis=1)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            f1=macro_f1(y_val, pred, data.n_classes),
            accuracy=float((pred == y_val).mean()),
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - start,
            images_per_sec=n_seen / max(train_seconds, 1e-9),
        )
        history.append(stats)
        score = stats.f1 if budget.monitor == "f1" else -stats.val_loss
        if score > best["score"]:
            best = {"epoch": epoch, "f1": stats.f1, "score": score}
            best_probs = probs
            if ckpt_dir:
                save_checkpoint(ckpt_dir / "best.pt", _best_state(model, config, data, stats))
        if ckpt_dir:
            save_checkpoint(
                ckpt_dir / "last.pt",
                {
                    "fold_key": fold_key,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": [asdict(h) for h in history],
                    "best": best,
                    "best_probs": torch.from_numpy(best_probs),
                },
            )
        if on_epoch is not None and on_epoch(stats):
            stop_reason = "stopped_by_callback"
            break

    return FitResult(
        history=history,
        best_epoch=int(best["epoch"]),
        best_f1=float(best["f1"]),
        oof_probs=best_probs,
        stop_reason=stop_reason,
        checkpoint=ckpt_dir / "best.pt" if ckpt_dir else None,
        resumed_epochs=resumed,
    )


def _train_epoch(
    model, criterion, optimizer, schedule, scaler, data, idx, config, epoch, augment, normalizer, amp_dtype
) -> tuple[float, int]:
    budget = config.budget
    model.train()
    rng = np.random.default_rng([budget.seed, epoch])  # per-epoch stream: a resumed run shuffles identically
    if augment is not None:  # albumentations draws from its own generator, seeded from the OS unless set
        augment.set_random_seed(budget.seed * 10_000 + epoch)
    total = torch.zeros((), device=normalizer.device)  # summed on device: no host sync per step
    n_seen = 0
    batches = iterate_batches(
        data.images,
        data.table.labels,
        idx,
        batch_size=budget.batch_size,
        shuffle=True,
        rng=rng,
        augment=augment,
        hflip=uses_hflip(config.augment),
        num_workers=budget.num_workers,
        prefetch=normalizer.device.type == "cuda",
        pin_memory=normalizer.device.type == "cuda",
    )
    n_batches = math.ceil(len(idx) / budget.batch_size)
    optimizer.zero_grad(set_to_none=True)
    for step, (x, y) in enumerate(batches, start=1):
        x, y = normalizer(x), y.to(normalizer.device, non_blocking=True)
        with _autocast(normalizer.device, amp_dtype):
            loss = criterion(model(x), y)
        scaler.scale(loss / budget.accum_steps).backward()
        total += loss.detach() * len(y)
        n_seen += len(y)
        if step % budget.accum_steps == 0 or step == n_batches:
            if budget.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), budget.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step_batch()
    return float(total) / max(n_seen, 1), n_seen


@torch.no_grad()
def _validate(model, criterion, data, idx, budget, normalizer, amp_dtype) -> tuple[np.ndarray, float]:
    model.eval()
    device = normalizer.device
    probs, total = [], torch.zeros((), device=device)
    batches = iterate_batches(
        data.images,
        data.table.labels,
        idx,
        batch_size=budget.batch_size,
        shuffle=False,
        prefetch=device.type == "cuda",
        pin_memory=device.type == "cuda",
    )
    for x, y in batches:
        with _autocast(device, amp_dtype):
            logits = model(normalizer(x)).float()
        total += criterion(logits, y.to(device, non_blocking=True)) * len(y)
        probs.append(logits.softmax(dim=1))
    return torch.cat(probs).cpu().numpy(), float(total) / max(len(idx), 1)


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


def _patience_spent(history: list[EpochStats], best: dict, patience: int | None) -> bool:
    return patience is not None and bool(history) and history[-1].epoch - best["epoch"] >= patience


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
