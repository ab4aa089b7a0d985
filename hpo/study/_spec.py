"""What a study is, as stored in its attrs: space, base config, data fingerprint, sampler, pruner, seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpo.errors import UserError
from hpo.space import SearchSpace
from training.config import RunConfig
from training.data import ImageTable

__all__ = ["StudySpec"]


@dataclass(frozen=True)
class StudySpec:
    """What a study is: space, base config, data fingerprint, sampler and pruner names, seed."""

    space: SearchSpace
    base: RunConfig
    data_fingerprint: str
    sampler: str
    pruner: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "base_config": self.base.to_dict(),
            "data_fingerprint": self.data_fingerprint,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "seed": self.seed,
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
        )

    def check_data(self, table: ImageTable, source: str) -> None:
        """Refuse data other than the study's: trials on it would not be comparable."""
        if (found := table.fingerprint()) != self.data_fingerprint:
            raise UserError(
                f"data at {source} differs from the study's (fingerprint {found} != "
                f"{self.data_fingerprint}); pass --data with the dataset the study was created on"
            )
