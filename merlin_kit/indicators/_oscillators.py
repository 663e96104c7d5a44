"""Oscillators of S04: Wilder RSI and StochRSI, their numba kernels, :func:`rsi`, :func:`stoch_rsi`."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._extremes import _rolling_extreme_kernel
from ._inputs import _as_float_array, _as_length


@njit(cache=True, nogil=True)
def _rsi_kernel(close: np.ndarray, length: int) -> np.ndarray:
    n = close.shape[0]
    out = np.empty(n, dtype=np.float64)
    out[:] = np.nan
    avg_gain = 0.0
    avg_loss = 0.0
    last = np.nan
    for i in range(n):
        c = close[i]
        if c != c:
            continue  # missing close: missing RSI, state kept
        gain = 0.0
        loss = 0.0
        if last == last:
            ch = c - last
            if ch > 0.0:
                gain = ch
            elif ch < 0.0:
                loss = -ch
        last = c
        avg_gain = avg_gain + (gain - avg_gain) / length
        avg_loss = avg_loss + (loss - avg_loss) / length
        if i >= length - 1:
            if avg_loss == 0.0:
                out[i] = 100.0 if avg_gain > 0.0 else np.nan
            else:
                out[i] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


@njit(cache=True, nogil=True)
def _stoch_kernel(r: np.ndarray, length: int) -> np.ndarray:
    n = r.shape[0]
    lo = _rolling_extreme_kernel(r, length, False)
    hi = _rolling_extreme_kernel(r, length, True)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        v = r[i]
        rng = hi[i] - lo[i]
        if v != v or rng != rng or rng == 0.0:
            out[i] = 0.0
        else:
            out[i] = (v - lo[i]) / rng * 100.0
    return out


def rsi(close: np.ndarray, length: int) -> np.ndarray:
    """Wilder RSI as in S04: gain/loss of each change (bar 0 is a change of 0), averages
    avg_i = avg_{i-1} + (x_i - avg_{i-1})/length from avg = 0; values from bar length-1 on;
    100 when avgLoss is 0 and avgGain is not, NaN when both are 0.

    A NaN close gives NaN at that bar and is skipped (the next change is measured from the
    last non-NaN close).
    """
    return _rsi_kernel(_as_float_array(close, "close"), _as_length(length, "length", 1))


def stoch_rsi(rsi_values: np.ndarray, length: int) -> np.ndarray:
    """StochRSI as in S04: (RSI - lowest) / (highest - lowest) * 100 over the last ``length``
    RSI values (fewer at the start, NaN values skipped); 0 where the RSI or the range is
    missing or the range is 0 (including the bars before the RSI exists).
    """
    return _stoch_kernel(_as_float_array(rsi_values, "rsi_values"), _as_length(length, "length", 1))
