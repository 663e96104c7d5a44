"""Indicator kernels: moving averages, ATR, rolling extremes, RSI and StochRSI.

Every series is a 1-D float64 array; NaN means "missing". The definitions are
those of ``shared/specs/METRICS_AND_INDICATORS.md`` (moving averages),
``S01_TRAILING_MA.md`` (ATR, lowest/highest) and ``S04_STOCHRSI.md`` (RSI,
StochRSI, K, D), which reproduce TradingView's reference results. They are
followed literally, operation by operation where the order matters:

* ``sma`` is a numba port of pandas' ``roll_mean`` (Kahan-compensated running
  sum with separate add/remove compensations, the negative-count clamp and the
  "all values in the window are equal -> that value" rule), so it is
  bit-identical to ``Series.rolling(L).mean()``. A different summation can
  differ in the last bit and flip an exact tie between two SMAs (S04's K/D
  crosses).
* the other kernels compute the spec's formulas in the spec's order; O(n)
  running sums (VWMA, KAMA, large-window WMA) are Neumaier-compensated pairs,
  recomputed (compensated) every ``_RECOMPUTE_EVERY`` bars, so they stay within
  a few ulps of the direct definition even after huge values leave the window.

The kernels are compiled with ``@njit(cache=True, nogil=True)`` (nogil: independent
indicators of one backtest can run on threads) and without ``fastmath``:
IEEE semantics (no reassociation, no FMA contraction) keep results
reproducible, and the on-disk cache makes later processes (optimisation
workers) start without recompiling.

A cached kernel's cache entry is checked against its own file only: after
editing a kernel that a kernel in another module calls (``_sums``, ``_extremes``),
delete the ``__pycache__`` folder so the callers are recompiled.

The public names live here; the modules behind them are private, one job each:
``_moving_averages`` (the eleven moving averages), ``_sums`` (compensated
running sums), ``_atr`` (ATR), ``_extremes`` (rolling min/max), ``_oscillators``
(RSI, StochRSI) and ``_inputs`` (argument checks).
"""

from ._atr import atr
from ._extremes import rolling_max, rolling_min
from ._moving_averages import MA_KINDS, ema, moving_average, sma, wma
from ._oscillators import rsi, stoch_rsi

__all__ = [
    "MA_KINDS", "moving_average", "atr", "rolling_min", "rolling_max", "rsi", "stoch_rsi", "sma", "ema", "wma",
]
