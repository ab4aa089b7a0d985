"""Labels, folds and groups: typos, classes too thin for the folds, groups that mix classes."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Mapping

import numpy as np

from training.config import ConfigError
from training.layouts import Entry, Problem, plural

__all__ = ["fold_findings", "group_split", "label_typos"]

_INTEGER = re.compile(r"-?\d+")
_PURE_GROUPS = 0.8  # groups count as "meant to hold one class" when this share of them do


def label_typos(entries: list[Entry]) -> list[Problem]:
    counts = Counter(e.label for e in entries)
    out = []
    for a, b in itertools.combinations(sorted(counts), 2):
        rare, common = (a, b) if (counts[a], b) < (counts[b], a) else (b, a)
        pair = f"'{rare}' ({plural(counts[rare], 'image')}) and '{common}' ({counts[common]})"
        if _norm_label(a) == _norm_label(b):
            out.append(
                Problem(
                    "label_typo",
                    f"label '{rare}'",
                    f"labels {pair} differ only in case, spaces or separators; they are two classes "
                    f"now; relabel '{rare}' as '{common}'",
                )
            )
        elif _typo_pair(rare, common) and counts[rare] * 4 <= counts[common]:
            out.append(
                Problem(
                    "label_typo",
                    f"label '{rare}'",
                    f"labels {pair} are one typo apart; if '{rare}' means '{common}', relabel it",
                    "warning",
                )
            )
        if len(out) > 200:
            break
    return out


def _norm_label(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label.casefold()).strip()


def _typo_pair(a: str, b: str) -> bool:
    """Within one edit (two for long names), not numbers, not names that differ only in digits."""
    shortest = min(len(a), len(b))
    if shortest < 4 or re.sub(r"\d", "", a) == re.sub(r"\d", "", b):  # class1/class2, 0/1
        return False
    limit = 2 if shortest >= 8 else 1
    return abs(len(a) - len(b)) <= limit and _edit_distance(a.casefold(), b.casefold(), limit) <= limit


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, stopping early once every path exceeds ``limit``."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def fold_findings(
    entries: list[Entry], folds: int, has_groups: bool, names: Mapping[str, str] | None = None
) -> list[Problem]:
    """Classes (and the dataset) with fewer images or groups than folds; ``names``: label -> how the
    findings name it (mask layout: "4 wear/female/30-59")."""
    labels = [e.label for e in entries]
    classes = sorted(set(labels), key=lambda c: (0, int(c)) if _INTEGER.fullmatch(c) else (1, c))
    names = names or {}
    if len(classes) < 2:
        return [
            Problem(
                "few_classes",
                "dataset",
                f"{len(classes)} class(es) ({', '.join(classes) or 'none'}); a classifier needs images "
                "of at least two",
            )
        ]
    out = []
    if has_groups:
        n_groups = len({e.group for e in entries})
        if n_groups < folds:
            out.append(
                Problem(
                    "few_samples",
                    "dataset",
                    f"{plural(n_groups, 'group')} but {folds} folds; "
                    f"lower the folds to {max(n_groups, 2)} or fewer, or add groups",
                )
            )
    members: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        members[e.label].append(e)
    for label in classes:
        count = len(members[label])
        n_groups = len({e.group for e in members[label]})
        if count < folds:
            out.append(
                Problem(
                    "few_samples",
                    f"class '{names.get(label, label)}'",
                    f"{plural(count, 'image')} but {folds} folds; "
                    "add images of this class, merge or drop it, or lower the folds",
                )
            )
        elif has_groups and n_groups < folds:
            out.append(
                Problem(
                    "few_samples",
                    f"class '{names.get(label, label)}'",
                    f"its {count} images come from {plural(n_groups, 'group')} but {folds} folds; add images "
                    "from other groups or lower the folds",
                )
            )
    if not out and folds >= 2:
        from training.folds import make_folds

        index = {c: i for i, c in enumerate(classes)}
        groups = np.array([e.group for e in entries], dtype=object) if has_groups else None
        try:
            make_folds(np.array([index[c] for c in labels]), groups, folds, seed=0, classes=classes)
        except ConfigError as exc:
            out.append(Problem("few_samples", "dataset", str(exc)))
    return out


def group_split(entries: list[Entry]) -> list[Problem]:
    """Groups spanning classes, reported only when the other groups each hold one class."""
    labels_of: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        labels_of[e.group][e.label] += 1
    multi = {g: c for g, c in labels_of.items() if sum(c.values()) > 1}
    mixed = {g: c for g, c in multi.items() if len(c) > 1}
    if len(multi) < 3 or not mixed or 1 - len(mixed) / len(multi) < _PURE_GROUPS:
        return []  # groups mix classes by design (e.g. one person, several expressions)
    return [
        Problem(
            "group_split",
            f"group '{g}'",
            "images of classes "
            + ", ".join(f"'{label}' ({n})" for label, n in sorted(c.items()))
            + f", while {len(multi) - len(mixed)} of {len(multi)} groups hold one class; check the labels",
            "warning",
        )
        for g, c in sorted(mixed.items())
    ]
