"""Compensated running sums (Neumaier pairs, Dekker products) behind the O(n) moving-average kernels."""

from __future__ import annotations

import numpy as np
from numba import njit

#: O(n) running sums are recomputed from scratch this often (bars)
_RECOMPUTE_EVERY = 1024


@njit(cache=True, nogil=True)
def _two_sum_add(s: float, c: float, v: float) -> tuple[float, float]:
    """Neumaier step: add v to the compensated sum (s, c)."""
    t = s + v
    if abs(s) >= abs(v):
        c += (s - t) + v
    else:
        c += (v - t) + s
    return t, c


@njit(cache=True, nogil=True)
def _two_product(a: float, b: float) -> tuple[float, float]:
    """Dekker: a*b = p + e exactly (barring overflow), without FMA."""
    p = a * b
    t = 134217729.0 * a
    ah = t - (t - a)
    al = a - ah
    t = 134217729.0 * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@njit(cache=True, nogil=True)
def _rolling_sum_kernel(v: np.ndarray, length: int) -> np.ndarray:
    """Sum of the last `length` values; NaN until `length` values or when the window holds a NaN.

    Neumaier-compensated running sum, recomputed directly every _RECOMPUTE_EVERY bars; a window
    of zeros gives exactly 0.
    """
    n = v.shape[0]
    L = length
    out = np.empty(n, dtype=np.float64)
    out[:] = np.nan
    if L <= 0 or n < L:
        return out
    last_nan = -1
    valid = False
    since = 0
    s = 0.0
    c = 0.0
    nonzero = 0  # non-zero values in the window (kept while valid)
    for i in range(n):
        x = v[i]
        if x != x:
            last_nan = i
        if i < L - 1:
            continue
        if last_nan > i - L:
            valid = False
            continue
        if valid and since < _RECOMPUTE_EVERY:
            old = v[i - L]
            s, c = _two_sum_add(s, c, x)
            s, c = _two_sum_add(s, c, -old)
            if x != 0.0:
                nonzero += 1
            if old != 0.0:
                nonzero -= 1
            since += 1
        else:
            s = 0.0
            c = 0.0
            nonzero = 0
            for j in range(i - L + 1, i + 1):
                s, c = _two_sum_add(s, c, v[j])
                if v[j] != 0.0:
                    nonzero += 1
            valid = True
            since = 0
        out[i] = (s + c) if nonzero > 0 else 0.0
    return out
