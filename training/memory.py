"""Keep batch-sized blocks of freed memory for reuse on the CPU (glibc malloc settings).

glibc serves a block above its mmap threshold with a fresh ``mmap`` and returns it to the kernel on
``free``. The threshold adapts to freed blocks, but only up to 32 MB, and a float batch of
64 x 3 x 224 x 224 is 38.5 MB: every batch came back as ~9,400 zero-filled pages faulted in one by
one, half the CPU time of normalizing it. Raising the cap serves such blocks from the heap, where
the next batch reuses them.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_freed_blocks"]

logger = logging.getLogger(__name__)

# Blocks up to this size come from the heap: a float batch of 64 x 3 x 384 x 384 is 113 MB.
MMAP_THRESHOLD = 256 << 20
# Free memory kept at the top of the heap before it goes back to the kernel: twice the mmap
# threshold, as glibc's own adaptive rule sets it.
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache
def reuse_freed_blocks() -> bool:
    """Apply the thresholds once per process. False where the C library has no glibc ``mallopt``,
    or where the environment sets malloc thresholds itself (those win)."""
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):  # no such symbol (macOS), no CDLL(None) (Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    )
    if not applied:
        logger.debug("mallopt refused the thresholds; large CPU batches stay mmapped")
    return applied
