"""What a ``forkserver`` imports once, so that every worker forked from it starts warm.

With the default start method (``auto``: forkserver on Linux and macOS) the
engine asks the server to preload this module: the package, Optuna and numba
are imported and the common kernels are loaded from numba's cache a single
time, in the server.  Each worker is then a fork of that process and begins
its first trial in a fraction of a second instead of the ~1 s a ``spawn``
worker spends importing and loading kernels.  The server lives as long as the
notebook kernel or script that started it, so every run after the first
benefits.

After a fresh install numba's cache is empty and compiling every kernel takes
~10 s on one core.  The kernels fall in independent groups (the strategy and
metrics kernels, the moving averages), so the server then compiles the groups
in forked helper processes, one per CPU, which write numba's on-disk cache;
the server itself loads the results from that cache afterwards.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from ..backtest import backtest
from ..data import PreparedData, load_ohlcv, prepare, sample
from ..indicators import MA_KINDS, moving_average, rolling_max, rolling_min, rsi, stoch_rsi
from ..strategies.s01_trailing_ma import _s01_kernel
from . import _worker  # noqa: F401  (the entry point's module and its imports)

log = logging.getLogger(__name__)


def _strategy_kernels(data: PreparedData) -> None:
    """A tiny S01 backtest (strategy, trade log and metrics kernels), the stop extremes and StochRSI."""
    backtest(data, "s01_trailing_ma")
    for window in (2, 40):  # the small-window and the deque kernel
        rolling_min(data.low, window)
        rolling_max(data.high, window)
    stoch_rsi(rsi(data.close, 14), 14)


def _moving_averages(data: PreparedData) -> None:
    for kind in MA_KINDS:
        moving_average(kind, data.close, 20, high=data.high, low=data.low, volume=data.volume)


#: independent groups of kernels of about equal compile time (the order is the order of the helpers)
WARM_GROUPS: tuple[Callable[[PreparedData], None], ...] = (_strategy_kernels, _moving_averages)


def cache_is_cold() -> bool:
    """Whether numba's on-disk cache lacks the S01 kernel (a fresh install, or a cleared cache)."""
    cache = getattr(_s01_kernel, "_cache", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    return isinstance(index, str) and not os.path.exists(index)


def _compile_in_helpers(data: PreparedData, groups: tuple[Callable[[PreparedData], None], ...]) -> None:
    """Compile ``groups[1:]`` in forked helpers and ``groups[0]`` here, in parallel; wait for the helpers.

    Runs before the server has any thread, so forking is safe; a helper that fails only leaves its kernels
    to be compiled by the server itself afterwards.
    """
    log.info("numba's cache is cold: compiling the kernels in %d processes", len(groups))
    helpers = []
    for group in groups[1:]:
        pid = os.fork()
        if pid == 0:  # the helper: compile (writing numba's cache) and leave at once
            code = 1
            try:
                group(data)
                code = 0
            except Exception:
                log.warning("forkserver compile helper failed", exc_info=True)
            finally:
                os._exit(code)
        helpers.append(pid)
    try:
        groups[0](data)
    finally:
        for pid in helpers:
            os.waitpid(pid, 0)


def _warm_kernels() -> None:
    """Load (or, on a cold cache, compile in parallel) every kernel a common run needs."""
    try:
        data = prepare(load_ohlcv(sample(600)), None, None, 100)
        parallel = min(os.cpu_count() or 1, len(WARM_GROUPS))
        if parallel > 1 and hasattr(os, "fork") and cache_is_cold():
            _compile_in_helpers(data, WARM_GROUPS[:parallel])
        for group in WARM_GROUPS:  # from the cache the helpers wrote: milliseconds
            group(data)
    except Exception:  # only a speed-up: a worker loads what it needs itself anyway
        log.warning("forkserver warm-up failed; workers will load the kernels themselves", exc_info=True)


_warm_kernels()
