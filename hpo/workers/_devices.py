"""``--devices`` -> one slot per worker process: which device it trains on and how many threads it takes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpo.errors import UserError

__all__ = ["Slot", "gpu_count", "parse_devices"]


def gpu_count() -> int:
    import torch  # lazy: `hpo --help` should not pay for importing torch

    return torch.cuda.device_count()


@dataclass(frozen=True)
class Slot:
    device: str  # what training uses: "cpu" or "cuda" (the one GPU the process sees)
    visible: str  # CUDA_VISIBLE_DEVICES for the process ("" hides every GPU)
    label: str  # shown in status and trial attrs: "cpu#1", "cuda:3"
    threads: int  # torch intra-op threads


def parse_devices(devices: str) -> list[Slot]:
    """``auto`` | ``cpu`` | ``cpu:N`` | ``0,1,...`` -> one Slot per worker process."""
    cores = os.cpu_count() or 1
    gpus = gpu_count()
    if devices == "auto":
        devices = ",".join(str(i) for i in range(gpus)) if gpus else "cpu"
    if devices == "cpu" or devices.startswith("cpu:"):
        count_text = devices.partition(":")[2] or "1"
        if not count_text.isdigit() or int(count_text) < 1:
            raise UserError(f"--devices: '{devices}' needs a positive process count, e.g. cpu:2")
        n = int(count_text)
        return [Slot("cpu", "", f"cpu#{i}", max(1, cores // n)) for i in range(n)]
    ids = [part.strip() for part in devices.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise UserError(f"--devices: '{devices}' is not auto, cpu, cpu:N or a list of GPU indices like 0,1")
    missing = [i for i in ids if int(i) >= gpus]
    if missing:
        raise UserError(
            f"--devices: GPU {', '.join(missing)} does not exist (this machine has {gpus} CUDA device(s)); "
            "use indices below that, auto, or cpu"
        )
    return [Slot("cuda", i, f"cuda:{i}", max(1, cores // len(ids))) for i in ids]
