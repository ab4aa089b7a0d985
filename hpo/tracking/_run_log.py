"""One MLflow run written through an ``MlflowClient`` by its id, as the trial observer writes its runs.

The run is named explicitly rather than being MLflow's "active run" (a process global), so code that
logs to it, and to another run beside it (the study's), reads the same either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunLog"]


@dataclass(frozen=True)
class RunLog:
    client: Any  # MlflowClient
    run_id: str

    def log_metrics(self, values: dict[str, float], *, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_params(self, values: dict[str, str]) -> None:
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in values.items()]
        for i in range(0, len(params), 100):  # and at most 100 params
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def set_tags(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, v)

    def log_dict(self, value: dict, path: str) -> None:
        self.client.log_dict(self.run_id, value, path)

    def log_text(self, value: str, path: str) -> None:
        self.client.log_text(self.run_id, value, path)

    def log_figure(self, figure: Any, path: str) -> None:
        self.client.log_figure(self.run_id, figure, path)

    def log_files(self, paths: list[Path], *, under: str) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path=under)

    def artifacts(self) -> list[str]:
        """The run's top-level artifact paths, sorted."""
        return sorted(a.path for a in self.client.list_artifacts(self.run_id))
