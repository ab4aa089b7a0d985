"""An ensemble of bundle members: every member x every TTA view -> probabilities -> soft or hard vote
(weighted by the members' weights) -> the bundle's class bias, unless switched off."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hpo.errors import UserError
from hpo.models._bundle import TTA_MODES, VOTES, Bundle, build_member_model
from training.ensembling import apply_bias
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


def combine(member_probs: np.ndarray, vote: str, weights: list[float] | None = None) -> np.ndarray:
    """(members, N, C) probabilities -> (N, C).

    ``soft``: the (weighted) mean of the members' probabilities. ``hard``: each member votes for its
    argmax with its weight and the result is the vote share, with ties broken by the soft mean (a
    1e-6 nudge, renormalized), so ``argmax`` of the result is always the ensemble's answer.
    ``weights`` (summing to 1) default to equal shares.
    """
    n_members = len(member_probs)
    w = np.full(n_members, 1.0 / n_members) if weights is None else np.asarray(weights, dtype=np.float64)
    soft = np.tensordot(w, member_probs, axes=1).astype(member_probs.dtype)
    if vote == "soft":
        return soft
    if vote != "hard":
        raise ValueError(f"unknown vote {vote!r}")
    votes = np.zeros_like(soft)
    for share, probs in zip(w, member_probs, strict=True):
        votes[np.arange(len(probs)), probs.argmax(axis=1)] += share
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

    def predict(
        self, images_at: Callable[[int], np.ndarray], *, tta: str, vote: str, bias: bool = True
    ) -> np.ndarray:
        """The vote's probabilities; with ``bias`` (and a bundle that has one) shifted by the class bias."""
        if vote not in VOTES:
            raise UserError(f"--vote: unknown '{vote}'; use one of: {', '.join(VOTES)}")
        probs = combine(self.member_probs(images_at, tta=tta), vote, self.bundle.weights)
        if bias and self.bundle.bias is not None:
            return apply_bias(probs, self.bundle.bias).astype(np.float32)
        return probs


def tta_views(tta: str) -> tuple[str, ...]:
    if tta not in TTA_MODES:
        raise UserError(f"--tta: unknown '{tta}'; use one of: {', '.join(TTA_MODES)}")
    return TTA_MODES[tta]
