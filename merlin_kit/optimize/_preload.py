"""What a ``forkserver`` imports once, so that every worker forked from it starts warm.

With ``start_method="forkserver"`` the engine asks the server to preload this
module: the package, Optuna and numba are imported and the common kernels are
loaded from numba's cache a single time, in the server.  Each worker is then a
fork of that process and begins its first trial in a fraction of a second
instead of the ~1 s a ``spawn`` worker spends importing and loading kernels.
The server lives as long as the notebook kernel or script that started it, so
every run after the first benefits.
"""

from __future__ import annotations

import logging

from ..backtest import backtest
from ..data import load_ohlcv, prepare, sample
from ..indicators import MA_KINDS, moving_average, rolling_max, rolling_min, rsi, stoch_rsi
from . import _worker  # noqa: F401  (the entry point's module and its imports)

log = logging.getLogger(__name__)


def _warm_kernels() -> None:
    """Every moving average and stop indicator once, and a tiny S01 backtest (strategy and metrics kernels)."""
    try:
        data = prepare(load_ohlcv(sample(600)), None, None, 100)
        for kind in MA_KINDS:
            moving_average(kind, data.close, 20, high=data.high, low=data.low, volume=data.volume)
        for window in (2, 40):  # the small-window and the deque kernel
            rolling_min(data.low, window)
            rolling_max(data.high, window)
        stoch_rsi(rsi(data.close, 14), 14)
        backtest(data, "s01_trailing_ma")
    except Exception:  # only a speed-up: a worker loads what it needs itself anyway
        log.warning("forkserver warm-up failed; workers will load the kernels themselves", exc_info=True)


_warm_kernels()
