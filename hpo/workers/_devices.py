"""``--devices`` -> one slot per worker process: which device it trains on and what it is called."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import UserError

__all__ = ["Slot", "gpu_count", "parse_devices", "visible_gpus"]


def gpu_count() -> int:
    """CUDA devices this process may use (torch honours CUDA_VISIBLE_DEVICES).

    A Linux machine without GPU device nodes (NVIDIA's ``/dev/nvidia*``, ROCm's ``/dev/kfd``) has none,
    and is answered without importing torch: seconds that the trial processes spend anyway, and the
    pool process of a CPU worker never needs torch.
    """
    if sys.platform == "linux" and not _has_gpu_device_nodes():
        return 0
    import torch

    return torch.cuda.device_count()


def _has_gpu_device_nodes() -> bool:
    dev = Path("/dev")
    return any(dev.glob("nvidia*")) or (dev / "kfd").exists()


def visible_gpus() -> list[str] | None:
    """The GPUs CUDA_VISIBLE_DEVICES names (indices or UUIDs), as SLURM or Kubernetes set it; None: unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Slot:
    device: str  # what training uses: "cpu" or "cuda" (the one GPU the process sees)
    visible: str  # CUDA_VISIBLE_DEVICES for the process ("" hides every GPU)
    label: str  # the device in status and trial attrs: "cpu#1", "cuda:3" (the GPU's own id)
    threads: int | None = None  # torch threads of a GPU process; CPU processes share the host's cores


def parse_devices(devices: str) -> list[Slot]:
    """``auto`` | ``cpu`` | ``cpu:N`` | ``0,1,...`` -> one Slot per worker process.

    GPU indices count the GPUs this process sees: under CUDA_VISIBLE_DEVICES=3,5 (a SLURM or
    Kubernetes assignment) ``auto`` and ``0,1`` mean GPUs 3 and 5, and each worker process gets
    exactly its one.
    """
    if devices == "cpu" or devices.startswith("cpu:"):
        count_text = devices.partition(":")[2] or "1"
        if not count_text.isdigit() or int(count_text) < 1:
            raise UserError(f"--devices: '{devices}' needs a positive process count, e.g. cpu:2")
        return [Slot("cpu", "", f"cpu#{i}") for i in range(int(count_text))]
    gpus = gpu_count()
    if devices == "auto":
        if not gpus:
            return parse_devices("cpu")
        devices = ",".join(str(i) for i in range(gpus))
    ids = [part.strip() for part in devices.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise UserError(f"--devices: '{devices}' is not auto, cpu, cpu:N or a list of GPU indices like 0,1")
    missing = [i for i in ids if int(i) >= gpus]
    if missing:
        raise UserError(
            f"--devices: GPU {', '.join(missing)} does not exist (this process sees {gpus} CUDA device(s)"
            f"{_visible_note()}); use indices below that, auto, or cpu"
        )
    assigned = visible_gpus()
    physical = [assigned[int(i)] if assigned else i for i in ids]
    threads = max(1, (os.cpu_count() or 1) // len(ids))  # the CPU side of each GPU process
    return [Slot("cuda", p, f"cuda:{p}", threads) for p in physical]


def _visible_note() -> str:
    assigned = visible_gpus()
    return f", CUDA_VISIBLE_DEVICES={','.join(assigned)}" if assigned is not None else ""
