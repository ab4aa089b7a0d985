"""Duplicates across groups: the same picture on both sides of a split inflates validation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hpo.data._images import ImageInfo
from training.layouts import Entry, Problem, examples

__all__ = ["NEAR_SIMILARITY", "duplicates"]

NEAR_SIMILARITY = 0.99  # default: correlation of two thumbnails at which they count as near duplicates
# Measured on the built-in sample (1797 digits): re-encoded JPEG copies (quality 70-90, resized,
# brightness +8%) correlate >= 0.992 with their original, distinct digits at most 0.986.
_COARSE_MARGIN = 0.04  # first pass on 8x8 thumbnails keeps pairs within this of the threshold
_FLAT_STD = 2.0  # thumbnails this flat are noise after normalising; exact duplicates still count
_BLOCK = 512  # rows per block of the all-pairs similarity (memory: a few _BLOCK x N floats)


def duplicates(entries: list[Entry], images: list[ImageInfo], similarity: float) -> list[Problem]:
    ok = [i for i, im in enumerate(images) if im.problem is None]
    group = [e.group if e.group is not None else f"\0{e.path}" for e in entries]  # no groups: one each

    def describe(members: list[int]) -> str:
        shown = [
            f"{entries[i].path} ({entries[i].label}"
            + (f", group {entries[i].group})" if entries[i].group is not None else ")")
            for i in members
        ]
        return examples(shown, 4)

    out = []
    by_hash: dict[bytes, list[int]] = defaultdict(list)
    for i in ok:
        by_hash[images[i].pixel_hash].append(i)  # type: ignore[index]
    for members in by_hash.values():
        if len({group[i] for i in members}) < 2:
            continue
        conflicting = len({entries[i].label for i in members}) > 1
        out.append(
            Problem(
                "duplicate_image",
                entries[members[0]].where,
                f"identical pixels in {len(members)} images: {describe(members)}; "
                + (
                    "with different labels: keep one and fix its label"
                    if conflicting
                    else "in different groups they leak between folds: drop the copies or give them one group"
                ),
                "error" if conflicting else "warning",
            )
        )

    # One representative per exact-duplicate set, then near pairs between them.
    reps = [members[0] for members in by_hash.values()]
    for members in _near_clusters(reps, images, similarity):
        expanded = sorted(i for r in members for i in by_hash[images[r].pixel_hash])  # type: ignore[index]
        if len({group[i] for i in expanded}) < 2:
            continue
        out.append(
            Problem(
                "near_duplicate",
                entries[expanded[0]].where,
                f"{len(expanded)} near-identical images: {describe(expanded)}; in different groups they "
                "leak between folds: drop the copies or give them one group",
                "warning",
            )
        )
    return out


def _near_clusters(reps: list[int], images: list[ImageInfo], similarity: float) -> list[list[int]]:
    """Clusters of images whose thumbnails correlate at ``similarity`` or more (each channel centred
    on its mean: re-encoding, resizing and brightness/contrast changes keep it near 1, a colour
    cast shared by a whole dataset does not make images alike).

    All pairs are compared on 8x8 thumbnails in blocks (one matrix product each), and the rows
    with pairs within a margin of the threshold are confirmed on the 16x16 ones.
    """
    if similarity > 1 or len(reps) < 2:
        return []
    fine = np.stack([images[i].thumb for i in reps]).astype(np.float32)  # type: ignore[misc]
    fine -= fine.mean(axis=(1, 2), keepdims=True)  # per channel: a shared colour cast is no likeness
    n, side = len(reps), fine.shape[1]
    coarse = fine.reshape(n, side // 2, 2, side // 2, 2, 3).mean(axis=(2, 4))
    keep = np.flatnonzero(fine.reshape(n, -1).std(axis=1) >= _FLAT_STD)
    if len(keep) < 2:
        return []
    coarse, fine = _unit_rows(coarse[keep]), _unit_rows(fine[keep])
    parent = np.arange(len(keep))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    columns = np.arange(len(keep))
    for start in range(0, len(keep), _BLOCK):
        rows = np.arange(start, min(start + _BLOCK, len(keep)))
        near = (coarse[rows] @ coarse.T >= similarity - _COARSE_MARGIN) & (columns > rows[:, None])
        candidates = np.flatnonzero(near.any(axis=1))
        if not len(candidates):
            continue
        # Confirm on the fine thumbnails with one matrix product: memory stays a few blocks of N
        # floats even when most pairs of look-alike images (portraits) pass the coarse pass.
        near = near[candidates] & (fine[rows[candidates]] @ fine.T >= similarity)
        for r, c in zip(*np.nonzero(near), strict=True):
            parent[find(int(rows[candidates[r]]))] = find(int(c))
    clusters: dict[int, list[int]] = defaultdict(list)
    for k in range(len(keep)):
        clusters[find(k)].append(reps[keep[k]])
    return [sorted(members) for members in clusters.values() if len(members) > 1]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Each (channel-centred) image as a unit-length vector: dot products are correlations."""
    x = x.reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
