"""What a study is, as stored in its attrs: space, base config, data fingerprint, sampler, pruner, seed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import UserError
from hpo.space import SearchSpace
from training.config import RunConfig
from training.data import ImageTable

__all__ = ["KEEP_PAUSED", "StudySpec", "spec_differences"]

# Paused trials (--pruner asha) that keep their checkpoints. A paused trial holds about 16 bytes per
# model parameter per fold it reached (docs/pruning.md): 0.45 GB per fold for convnext_tiny, so 20 of
# them take about 9 GB when paused in fold 1 (most are) and at most 36 GB on the 5-fold GPU spaces.
KEEP_PAUSED = 20

_SHOWN = 3  # space settings named in a conflict; the rest are counted


@dataclass(frozen=True)
class StudySpec:
    """What a study is: space, base config, data fingerprint, sampler and pruner names, seed, and the
    limits on what its models may cost (metric -> maximum, hpo.study._limits)."""

    space: SearchSpace
    base: RunConfig
    data_fingerprint: str
    sampler: str
    pruner: str
    seed: int
    # --pruner asha: paused trials whose checkpoints are kept at most (the worst-ranked go first)
    keep_paused: int = KEEP_PAUSED
    limits: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "base_config": self.base.to_dict(),
            "data_fingerprint": self.data_fingerprint,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "seed": self.seed,
            "keep_paused": self.keep_paused,
            "limits": dict(self.limits),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str) -> StudySpec:
        return cls(
            space=SearchSpace.from_dict(raw["space"], where=where),
            base=RunConfig.from_dict(raw["base_config"], where=where),
            data_fingerprint=raw["data_fingerprint"],
            sampler=raw["sampler"],
            pruner=raw["pruner"],
            seed=int(raw["seed"]),
            keep_paused=int(raw.get("keep_paused", KEEP_PAUSED)),  # studies made before the option
            limits={k: float(v) for k, v in raw.get("limits", {}).items()},  # none before studies had limits
        )

    def check_data(self, table: ImageTable, source: str) -> None:
        """Refuse data other than the study's: trials on it would not be comparable."""
        if (found := table.fingerprint()) != self.data_fingerprint:
            raise UserError(
                f"data at {source} differs from the study's (fingerprint {found} != "
                f"{self.data_fingerprint}); pass --data with the dataset the study was created on"
            )


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each input that differs between two ``StudySpec.to_dict()``, as ``"cv.folds 5 (now 3)"``.

    The run config is named by its settings; a setting the space fixes or searches is named through
    the space, except ``cv.folds`` (``--folds`` or the space's: the folds the trials run), and
    ``cv.seed`` through the seed. The data path may differ between machines and is
    left out: the fingerprint is what must match.
    """
    out = []
    if old["data_fingerprint"] != new["data_fingerprint"]:
        out.append(f"other data (fingerprint {old['data_fingerprint']}, now {new['data_fingerprint']})")
    old_space, new_space = old["space"], new["space"]
    in_space = []
    for section in ("fixed", "params"):
        for key in sorted({*old_space[section], *new_space[section]}):
            a, b = old_space[section].get(key), new_space[section].get(key)
            if a != b and (section, key) != ("fixed", "cv.folds"):  # folds: named by the run config below
                in_space.append(f"{section}.{key} {_shown(a)} (now {_shown(b)})")
    if in_space:
        more = f", and {len(in_space) - _SHOWN} more" if len(in_space) > _SHOWN else ""
        out.append(f"another space ({', '.join(in_space[:_SHOWN])}{more})")
    elif old_space.get("description") != new_space.get("description"):
        out.append("another space description")
    by_space = {*old_space["fixed"], *old_space["params"], *new_space["fixed"], *new_space["params"]}
    old_base, new_base = _leaves(old["base_config"]), _leaves(new["base_config"])
    for path in sorted({*old_base, *new_base} - (by_space - {"cv.folds"}) - {"data.source", "cv.seed"}):
        if old_base.get(path) != new_base.get(path):
            out.append(f"{path} {_shown(old_base.get(path))} (now {_shown(new_base.get(path))})")
    for key in ("sampler", "pruner", "seed"):
        if old[key] != new[key]:
            out.append(f"{key} {_shown(old[key])} (now {_shown(new[key])})")
    if (kept := old.get("keep_paused", KEEP_PAUSED)) != new.get("keep_paused", KEEP_PAUSED):
        out.append(f"keep_paused {kept} (now {new.get('keep_paused', KEEP_PAUSED)})")
    if (old_limits := old.get("limits") or None) != (new_limits := new.get("limits") or None):
        out.append(f"limits {_shown(old_limits)} (now {_shown(new_limits)})")
    return out


def _leaves(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": v for section, values in config.items() for key, v in values.items()}


def _shown(value: Any, limit: int = 60) -> str:
    if value is None:
        return "unset"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
