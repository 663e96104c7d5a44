"""Rolling extremes (lowest/highest of the last N bars): their numba kernels, :func:`rolling_min`, :func:`rolling_max`."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._inputs import _as_float_array, _as_length

#: windows up to this size use a direct scan (faster than the deque for stop lookbacks of 2-10 bars)
_SMALL_WINDOW = 16


@njit(cache=True, nogil=True)
def _rolling_extreme_small(x: np.ndarray, window: int, want_max: bool) -> np.ndarray:
    """Small-window rolling min/max as ``window - 1`` passes, each folding in the bar ``k`` back.

    Each pass is a branch-free compare-and-select over the whole series (it vectorises),
    so a stop lookback of 2 costs one pass instead of a scan per bar. Same values as the
    deque kernel: NaN inputs are skipped, NaN only where the whole window is NaN.
    """
    n = x.shape[0]
    out = x.copy()
    for k in range(1, window):
        if want_max:
            for i in range(k, n):
                v = x[i - k]
                b = out[i]
                out[i] = v if (v > b or b != b) else b
        else:
            for i in range(k, n):
                v = x[i - k]
                b = out[i]
                out[i] = v if (v < b or b != b) else b
    return out


@njit(cache=True, nogil=True)
def _rolling_extreme_kernel(x: np.ndarray, window: int, want_max: bool) -> np.ndarray:
    """Monotone-deque rolling min/max over the last `window` bars, NaN values skipped."""
    n = x.shape[0]
    if window <= _SMALL_WINDOW:
        return _rolling_extreme_small(x, window, want_max)
    out = np.empty(n, dtype=np.float64)
    dq = np.empty(n if n > 0 else 1, dtype=np.int64)
    head = 0
    tail = 0  # deque = dq[head:tail]
    for i in range(n):
        v = x[i]
        if v == v:
            if want_max:
                while tail > head and x[dq[tail - 1]] <= v:
                    tail -= 1
            else:
                while tail > head and x[dq[tail - 1]] >= v:
                    tail -= 1
            dq[tail] = i
            tail += 1
        while tail > head and dq[head] <= i - window:
            head += 1
        out[i] = x[dq[head]] if tail > head else np.nan
    return out


def rolling_min(x: np.ndarray, window: int) -> np.ndarray:
    """Lowest value of the last ``window`` bars including the current one (fewer at the start).

    NaN values are skipped; NaN only where the whole window is NaN.
    """
    return _rolling_extreme_kernel(_as_float_array(x, "x"), _as_length(window, "window", 1), False)


def rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    """Highest value of the last ``window`` bars including the current one (fewer at the start).

    NaN values are skipped; NaN only where the whole window is NaN.
    """
    return _rolling_extreme_kernel(_as_float_array(x, "x"), _as_length(window, "window", 1), True)
