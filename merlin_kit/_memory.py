"""Keep freed curve-sized buffers in the process instead of returning them to the OS.

A backtest allocates a handful of bar-sized float64 arrays (indicators, balance
and equity curves): 8 MB each on 1,000,000 bars. With glibc's default tuning,
freeing a few of them at once shrinks the heap (the top-of-heap trim threshold
is only twice the largest freed block), so the next backtest maps the same
memory again and pays one page fault per 4 KiB page -- 20-30 ms on 1M bars on a
virtual machine, more than all the indicator kernels together. Raising the
trim threshold (and pinning the mmap threshold at glibc's maximum, since
setting one switches off glibc's dynamic adjustment of both) lets repeated
backtests and optimisation trials reuse the heap.

Only glibc (Linux) has ``mallopt``; elsewhere this is a no-op. Set
``MERLIN_KIT_MALLOC_TUNING=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap (glibc's maximum on 64-bit systems)
MMAP_THRESHOLD = 32 * 2**20
#: free memory at the top of the heap is returned to the OS only beyond this
TRIM_THRESHOLD = 512 * 2**20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the allocator tuning once per process; ``True`` if it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("MERLIN_KIT_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):  # no mallopt: nothing to tune
        log.debug("mallopt not available; allocator left as it is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc allocator tuning %s", "applied" if _applied else "refused")
    return _applied
