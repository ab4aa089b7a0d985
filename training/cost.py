"""What a model costs to serve: parameters, forward FLOPs, batch-1 latency and batch throughput.

``static_cost`` needs only the architecture (built on the meta device: no memory, no weights), so a
config can be judged before anything is trained. ``measure_cost`` adds the timed figures on a real
device with a freshly initialised model: the time of a forward pass depends on the architecture, the
input size and the device, not on the values of the weights.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs
(a matmul of (m, k) @ (k, n) is 2·m·k·n) and counts only matmuls and convolutions (normalisation,
activations and pooling are not counted).

    >>> static_cost(ModelConfig(name="test_resnet"), num_classes=10, image_size=32)  # doctest: +SKIP
    StaticCost(params_m=0.37, gflops=0.02)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from training.config import ModelConfig, RunConfig
from training.loop import resolve_device
from training.models import build_model

__all__ = ["ModelCost", "StaticCost", "device_name", "measure_cost", "static_cost"]

# Few passes, because every trial pays for them; the latency is a median, robust to a stray slow pass.
_WARMUP = 3  # untimed batch-1 passes first (allocator, kernel selection, caches); the first counts FLOPs
_LATENCY_PASSES = 10
_THROUGHPUT_PASSES = 2  # at the training batch size; the faster counts (the first pays for allocation)


@dataclass(frozen=True)
class StaticCost:
    """What the architecture alone decides."""

    params_m: float  # parameters, millions
    gflops: float  # forward FLOPs of one image at the input size, billions (multiply-add = 2)


@dataclass(frozen=True)
class ModelCost:
    """Static cost plus the timed figures on ``device``."""

    params_m: float
    gflops: float
    latency_ms: float  # median batch-1 forward time after warm-up
    throughput: float  # images/s of forward passes at ``batch_size``
    batch_size: int
    device: str  # where the time was measured: "cpu (2 threads)", "cuda:0 (NVIDIA H100 80GB HBM3)"


def static_cost(model: ModelConfig, *, num_classes: int, image_size: int) -> StaticCost:
    """Parameters and forward FLOPs of one ``image_size`` image, from the architecture on the meta device."""
    meta = model.model_copy(update={"pretrained": False})  # weights do not change the count
    with torch.device("meta"):
        net = build_model(meta, num_classes).eval()
        x = torch.empty(1, 3, image_size, image_size)
    with torch.no_grad():
        return StaticCost(params_m=_params_m(net), gflops=_gflops(net, x))


def measure_cost(config: RunConfig, *, num_classes: int, device: str | None = None) -> ModelCost:
    """Static cost plus median batch-1 latency and throughput at ``config.budget.batch_size``.

    Timed in eval mode under ``torch.inference_mode`` on ``device`` (default ``config.budget.device``),
    in the precision training validates with (autocast on CUDA when ``budget.amp``). A CPU figure
    depends on the threads torch may use, so the device name carries their number. Parameters and
    FLOPs are counted on the same model (its first warm-up pass counts the FLOPs).
    """
    target = resolve_device(device or config.budget.device)
    net = build_model(config.model.model_copy(update={"pretrained": False}), num_classes).eval().to(target)
    size, batch = config.data.image_size, config.budget.batch_size
    one = torch.randn(1, 3, size, size, device=target)
    many = torch.randn(batch, 3, size, size, device=target)
    if target.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
        one, many = (t.contiguous(memory_format=torch.channels_last) for t in (one, many))
    amp = target.type == "cuda" and config.budget.amp
    with torch.inference_mode(), torch.autocast(target.type, enabled=amp):
        gflops = _gflops(net, one)
        for _ in range(_WARMUP - 1):
            net(one)
        latency = statistics.median(_timed(lambda: net(one), target) for _ in range(_LATENCY_PASSES))
        seconds = min(_timed(lambda: net(many), target) for _ in range(_THROUGHPUT_PASSES))
    return ModelCost(
        params_m=_params_m(net),
        gflops=gflops,
        latency_ms=round(latency * 1e3, 4),
        throughput=round(batch / max(seconds, 1e-9), 1),
        batch_size=batch,
        device=device_name(target),
    )


def device_name(device: torch.device) -> str:
    """The device a time was measured on, as a person compares it: the GPU model, or the CPU threads."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"


def _params_m(net: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in net.parameters()) / 1e6, 4)


def _gflops(net: torch.nn.Module, x: torch.Tensor) -> float:
    """Forward FLOPs of ``x`` through ``net``, billions (one forward pass)."""
    counter = FlopCounterMode(display=False)
    with counter:
        net(x)
    return round(counter.get_total_flops() / 1e9, 5)


def _timed(forward: Callable[[], object], device: torch.device) -> float:
    """Seconds of one forward pass; CUDA runs asynchronously, so wait for it on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    forward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
