"""Wilder's Average True Range: its numba kernel and :func:`atr`."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._inputs import _as_float_array, _as_length, _same_length


@njit(cache=True, nogil=True)
def _atr_kernel(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    n = close.shape[0]
    out = np.empty(n, dtype=np.float64)
    y = np.nan
    prev_close = np.nan
    for i in range(n):
        hl = high[i] - low[i]
        if prev_close == prev_close:
            hc = abs(high[i] - prev_close)
            lc = abs(low[i] - prev_close)
            tr = hl
            if hc > tr:
                tr = hc
            if lc > tr:
                tr = lc
            if hc != hc or lc != lc:
                tr = np.nan
        else:
            tr = hl  # first bar (or no previous close): high - low
        prev_close = close[i]
        if tr != tr:
            out[i] = np.nan  # missing bar: state kept
            continue
        if y != y:
            y = tr
        else:
            y = y + (tr - y) / period
        out[i] = y
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Wilder ATR: TR0 = high0 - low0, then max(h-l, |h-prev close|, |l-prev close|);
    y0 = TR0, y_i = y_{i-1} + (TR_i - y_{i-1}) / period.

    A bar whose true range is missing gives NaN and leaves the average unchanged (a missing
    previous close makes the true range high - low, as for the first bar).
    """
    p = _as_length(period, "period", 1)
    c = _as_float_array(close, "close")
    h = _as_float_array(high, "high")
    lo = _as_float_array(low, "low")
    _same_length(c.shape[0], high=h, low=lo)
    return _atr_kernel(h, lo, c, p)
