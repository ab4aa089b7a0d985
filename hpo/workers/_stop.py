"""SIGTERM to a trial process: interrupt the running trial once, and remember that a stop was asked for.

The interrupt is a KeyboardInterrupt raised wherever the process happens to be. Inside C++ code (torch
writing a checkpoint) it can surface as another error instead; ``stop_requested`` lets the objective
still hand such a trial back for retry rather than record it as a failure of its configuration.
"""

from __future__ import annotations

import signal

__all__ = ["interrupt_on_sigterm", "stop_requested"]

_requested = False


def interrupt_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _interrupt_once)


def stop_requested() -> bool:
    return _requested


def _interrupt_once(signum, frame) -> None:
    """The first SIGTERM interrupts the trial (it is handed back); later ones must not cut that short."""
    global _requested
    _requested = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
