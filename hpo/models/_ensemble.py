"""An ensemble of bundle members: every member x every TTA view -> probabilities -> soft or hard vote."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hpo.errors import UserError
from hpo.models._bundle import TTA_MODES, VOTES, Bundle, build_member_model
from training.loop import predict_proba, resolve_device

__all__ = ["Ensemble", "combine", "tta_view", "tta_views"]

_CHUNK = 1024  # images per TTA/member pass: bounds memory for flipped copies


def tta_view(images: np.ndarray, view: str) -> np.ndarray:
    """One TTA view of uint8 NHWC ``images`` (contiguous, so torch can take it)."""
    if view == "identity":
        return np.ascontiguousarray(images)
    if view == "hflip":
        return np.ascontiguousarray(images[:, :, ::-1])
    if view == "vflip":
        return np.ascontiguousarray(images[:, ::-1])
    if view == "hvflip":
        return np.ascontiguousarray(images[:, ::-1, ::-1])
    raise ValueError(f"unknown TTA view {view!r}")


def combine(member_probs: np.ndarray, vote: str) -> np.ndarray:
    """(members, N, C) probabilities -> (N, C).

    ``soft``: the mean of the members' probabilities. ``hard``: each member votes for its argmax and
    the result is the vote share, with ties broken by the soft mean (a 1e-6 nudge, renormalized),
    so ``argmax`` of the result is always the ensemble's answer.
    """
    soft = member_probs.mean(axis=0)
    if vote == "soft":
        return soft
    if vote != "hard":
        raise ValueError(f"unknown vote {vote!r}")
    n_members = len(member_probs)
    votes = np.zeros_like(soft)
    for probs in member_probs:
        votes[np.arange(len(probs)), probs.argmax(axis=1)] += 1.0 / n_members
    nudged = votes + 1e-6 * soft
    return nudged / nudged.sum(axis=1, keepdims=True)


class Ensemble:
    """A bundle's members on one device; ``predict(images_at, tta=..., vote=...)``."""

    def __init__(self, bundle: Bundle, *, device: str = "auto", batch_size: int = 128) -> None:
        self.bundle = bundle
        self.device = resolve_device(device, where="--device")
        self.batch_size = batch_size
        self.models = [build_member_model(m, len(bundle.classes)).to(self.device) for m in bundle.members]

    def member_probs(self, images_at: Callable[[int], np.ndarray], *, tta: str) -> np.ndarray:
        """(members, N, C): each member's probabilities, averaged over the TTA views.

        ``images_at(size)`` returns the uint8 NHWC images decoded at ``size`` (a memmap is fine).
        """
        views = tta_views(tta)
        out: list[np.ndarray | None] = [None] * len(self.models)
        for size in self.bundle.image_sizes:
            images = images_at(size)
            for i, (member, model) in enumerate(zip(self.bundle.members, self.models, strict=True)):
                if member.image_size != size:
                    continue
                chunks = []
                for start in range(0, len(images), _CHUNK):
                    chunk = np.array(images[start : start + _CHUNK])  # a writable copy torch can take
                    p = sum(
                        predict_proba(
                            model,
                            tta_view(chunk, view),
                            mean=member.mean,
                            std=member.std,
                            device=self.device,
                            batch_size=self.batch_size,
                        )
                        for view in views
                    )
                    chunks.append(p / len(views))
                out[i] = np.concatenate(chunks) if chunks else np.zeros((0, len(self.bundle.classes)))
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]

    def predict(self, images_at: Callable[[int], np.ndarray], *, tta: str, vote: str) -> np.ndarray:
        if vote not in VOTES:
            raise UserError(f"--vote: unknown '{vote}'; use one of: {', '.join(VOTES)}")
        return combine(self.member_probs(images_at, tta=tta), vote)


def tta_views(tta: str) -> tuple[str, ...]:
    if tta not in TTA_MODES:
        raise UserError(f"--tta: unknown '{tta}'; use one of: {', '.join(TTA_MODES)}")
    return TTA_MODES[tta]
