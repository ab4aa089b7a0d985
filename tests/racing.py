"""Start the same call in two forked processes at one instant (for concurrency tests)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

__all__ = ["race"]


def race(target: Callable[..., Any], *args: Any) -> list[Any]:
    """Run ``target(*args)`` in two forked processes released by one barrier; return both results."""
    ctx = multiprocessing.get_context("fork")  # fork: children skip re-importing the test's modules
    barrier, results = ctx.Barrier(2), ctx.Queue()

    def racer() -> None:
        barrier.wait()
        try:
            results.put(("ok", target(*args)))
        except BaseException as exc:
            results.put(("error", repr(exc)))

    procs = [ctx.Process(target=racer) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [status for status, _ in outcomes] == ["ok", "ok"], outcomes
    return [value for _, value in outcomes]
