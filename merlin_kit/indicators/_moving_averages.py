"""The eleven moving averages: their numba kernels, :data:`MA_KINDS`, :func:`moving_average`, ``sma``/``ema``/``wma``."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..errors import ParameterError
from ._inputs import _as_float_array, _as_length, _same_length
from ._sums import _RECOMPUTE_EVERY, _rolling_sum_kernel, _two_product, _two_sum_add

#: the moving-average kinds accepted by :func:`moving_average`, canonical spelling
MA_KINDS: tuple[str, ...] = ("SMA", "EMA", "WMA", "VWMA", "VWAP", "HMA", "ALMA", "DEMA", "KAMA", "TMA", "T3")

#: outputs computed together by the blocked weighted-window kernel (fits in L1)
_BLOCK = 1024
#: WMA windows up to this length use the direct O(n*L) formula, longer ones the running sums
_WMA_DIRECT_MAX = 32


# ----------------------------------------------------------------------------------------------
# SMA: pandas roll_mean, bit for bit


@njit(cache=True, nogil=True)
def _sma_kernel(x: np.ndarray, length: int) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    if length <= 0:
        out[:] = np.nan
        return out
    nobs = 0
    neg_ct = 0
    ncs = 0  # num_consecutive_same_value
    sum_x = 0.0
    comp_add = 0.0
    comp_rem = 0.0
    prev_value = np.nan
    for i in range(n):
        s = i + 1 - length
        if s < 0:
            s = 0
        # pandas: a fresh setup when i == 0 or the new window does not overlap the previous one
        if i == 0 or s >= i:
            comp_add = 0.0
            comp_rem = 0.0
            sum_x = 0.0
            nobs = 0
            neg_ct = 0
            ncs = 0
            v0 = x[s]
            prev_value = v0 if (v0 - v0) == 0.0 else np.nan  # pandas turns +-inf into NaN
            for j in range(s, i + 1):
                val = x[j]
                if (val - val) == 0.0:  # finite
                    nobs += 1
                    y = val - comp_add
                    t = sum_x + y
                    comp_add = t - sum_x - y
                    sum_x = t
                    if math.copysign(1.0, val) < 0.0:
                        neg_ct += 1
                    if val == prev_value:
                        ncs += 1
                    else:
                        ncs = 1
                    prev_value = val
        else:
            # removes (the window start moves by at most one bar), then the add
            ps = i - length
            if ps < 0:
                ps = 0
            for j in range(ps, s):
                val = x[j]
                if (val - val) == 0.0:
                    nobs -= 1
                    y = -val - comp_rem
                    t = sum_x + y
                    comp_rem = t - sum_x - y
                    sum_x = t
                    if math.copysign(1.0, val) < 0.0:
                        neg_ct -= 1
            val = x[i]
            if (val - val) == 0.0:
                nobs += 1
                y = val - comp_add
                t = sum_x + y
                comp_add = t - sum_x - y
                sum_x = t
                if math.copysign(1.0, val) < 0.0:
                    neg_ct += 1
                if val == prev_value:
                    ncs += 1
                else:
                    ncs = 1
                prev_value = val
        if nobs >= length and nobs > 0:
            result = sum_x / nobs
            if ncs >= nobs:
                result = prev_value
            elif neg_ct == 0 and result < 0.0:
                result = 0.0
            elif neg_ct == nobs and result > 0.0:
                result = 0.0
            out[i] = result
        else:
            out[i] = np.nan
    return out


# ----------------------------------------------------------------------------------------------
# EMA


@njit(cache=True, nogil=True)
def _ema_kernel(x: np.ndarray, length: int) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    out[:] = np.nan
    if length <= 0:
        return out
    alpha = 2.0 / (length + 1.0)
    beta = 1.0 - alpha
    started = False
    y = 0.0
    for i in range(n):
        v = x[i]
        if v != v:
            continue  # missing input: missing output, state kept
        if started:
            y = alpha * v + beta * y
        else:
            y = v
            started = True
        out[i] = y
    return out


# ----------------------------------------------------------------------------------------------
# Weighted windows (WMA, ALMA)


@njit(cache=True, nogil=True)
def _weighted_window_kernel(x: np.ndarray, w: np.ndarray, wsum: float) -> np.ndarray:
    """out[i] = sum_k w[k] * x[i-L+1+k] / wsum (k = 0 oldest), summed in k order; NaN until L values."""
    n = x.shape[0]
    L = w.shape[0]
    out = np.empty(n, dtype=np.float64)
    out[:] = np.nan
    if L == 0 or n < L:
        return out
    acc = np.empty(_BLOCK, dtype=np.float64)
    for b0 in range(L - 1, n, _BLOCK):
        m = min(_BLOCK, n - b0)
        for j in range(m):
            acc[j] = 0.0
        for k in range(L):
            wk = w[k]
            xs = x[b0 - L + 1 + k: b0 - L + 1 + k + m]
            for j in range(m):
                acc[j] += wk * xs[j]
        for j in range(m):
            out[b0 + j] = acc[j] / wsum
    return out


@njit(cache=True, nogil=True)
def _wma_running_kernel(x: np.ndarray, length: int) -> np.ndarray:
    """WMA in O(n): numerator N_i = N_{i-1} + L*x_i - S_{i-1}, window sum S_i = S_{i-1} + x_i - x_{i-L}.

    Both sums are kept as Neumaier-compensated pairs (L*x_i through an exact Dekker product), so
    they carry ~eps**2 error, and are recomputed every _RECOMPUTE_EVERY bars and whenever the
    window becomes free of NaN again; a window containing NaN gives NaN.
    """
    n = x.shape[0]
    L = length
    out = np.empty(n, dtype=np.float64)
    out[:] = np.nan
    if L <= 0 or n < L:
        return out
    denom = L * (L + 1) / 2.0
    last_nan = -1
    valid = False  # running sums describe the window ending at i-1
    since = 0
    S = 0.0
    cS = 0.0
    N = 0.0
    cN = 0.0
    for i in range(n):
        v = x[i]
        if v != v:
            last_nan = i
        if i < L - 1:
            continue
        if last_nan > i - L:
            valid = False
            continue
        if valid and since < _RECOMPUTE_EVERY:
            # N_i = N_{i-1} + L*x_i - S_{i-1}
            p, e = _two_product(float(L), v)
            N, cN = _two_sum_add(N, cN, p)
            N, cN = _two_sum_add(N, cN, e)
            N, cN = _two_sum_add(N, cN, -S)
            N, cN = _two_sum_add(N, cN, -cS)
            S, cS = _two_sum_add(S, cS, v)
            S, cS = _two_sum_add(S, cS, -x[i - L])
            since += 1
        else:
            S = 0.0
            cS = 0.0
            N = 0.0
            cN = 0.0
            base = i - L + 1
            for k in range(L):
                xv = x[base + k]
                S, cS = _two_sum_add(S, cS, xv)
                p, e = _two_product(float(k + 1), xv)
                N, cN = _two_sum_add(N, cN, p)
                N, cN = _two_sum_add(N, cN, e)
            valid = True
            since = 0
        out[i] = (N + cN) / denom
    return out


@njit(cache=True, nogil=True)
def _wma_kernel(x: np.ndarray, length: int) -> np.ndarray:
    if length <= 0:
        out = np.empty(x.shape[0], dtype=np.float64)
        out[:] = np.nan
        return out
    if length <= _WMA_DIRECT_MAX:
        w = np.arange(1, length + 1).astype(np.float64)
        return _weighted_window_kernel(x, w, length * (length + 1) / 2.0)
    return _wma_running_kernel(x, length)


@njit(cache=True, nogil=True)
def _alma_kernel(x: np.ndarray, length: int) -> np.ndarray:
    if length <= 0:
        out = np.empty(x.shape[0], dtype=np.float64)
        out[:] = np.nan
        return out
    m = 0.85 * (length - 1)
    s = length / 6.0
    w = np.empty(length, dtype=np.float64)
    norm = 0.0
    for k in range(length):
        w[k] = math.exp(-((k - m) ** 2) / (2.0 * s * s))
        norm += w[k]
    return _weighted_window_kernel(x, w, norm)


# ----------------------------------------------------------------------------------------------
# Volume-weighted (VWMA, VWAP) and adaptive (KAMA)


@njit(cache=True, nogil=True)
def _vwma_kernel(src: np.ndarray, volume: np.ndarray, length: int) -> np.ndarray:
    n = src.shape[0]
    pv = np.empty(n, dtype=np.float64)
    for i in range(n):
        pv[i] = src[i] * volume[i]
    num = _rolling_sum_kernel(pv, length)
    den = _rolling_sum_kernel(volume, length)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        d = den[i]
        out[i] = num[i] / d if d != 0.0 else np.nan
    return out


@njit(cache=True, nogil=True)
def _vwap_kernel(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    n = close.shape[0]
    out = np.empty(n, dtype=np.float64)
    spv = 0.0
    sv = 0.0
    for i in range(n):
        typical = (high[i] + low[i] + close[i]) / 3.0
        vol = volume[i]
        if typical != typical or vol != vol:
            out[i] = np.nan  # missing bar: left out of the cumulative sums
            continue
        spv += typical * vol
        sv += vol
        out[i] = spv / sv if sv != 0.0 else np.nan
    return out


@njit(cache=True, nogil=True)
def _kama_kernel(src: np.ndarray, length: int) -> np.ndarray:
    n = src.shape[0]
    out = np.empty(n, dtype=np.float64)
    out[:] = np.nan
    if length <= 0 or n == 0:
        return out
    L = length
    absd = np.empty(n, dtype=np.float64)
    absd[0] = np.nan
    for i in range(1, n):
        absd[i] = abs(src[i] - src[i - 1])
    den = _rolling_sum_kernel(absd[1:], L)  # den[i-1] = sum of |change| over bars i-L+1..i
    fast = 2.0 / (2.0 + 1.0)
    slow = 2.0 / (30.0 + 1.0)
    prev = src[0]
    out[0] = prev
    for i in range(1, n):
        if i >= L:
            d = den[i - 1]
            num = abs(src[i] - src[i - L])
            if d == d and num == num:  # alpha exists
                er = num / d if d != 0.0 else 0.0
                sc = er * (fast - slow) + slow
                alpha = sc * sc
                if prev != prev:
                    prev = src[i]  # no value yet (missing first bars): start here
                else:
                    prev = alpha * src[i] + (1.0 - alpha) * prev
        out[i] = prev
    return out


# ----------------------------------------------------------------------------------------------
# Python API


def sma(x: np.ndarray, length: int) -> np.ndarray:
    """Simple moving average, bit-identical to pandas ``Series.rolling(length).mean()``.

    Missing until ``length`` values exist; a window holding a NaN (or +-inf, which pandas
    treats as NaN) is NaN. ``length`` 0 gives all NaN.
    """
    return _sma_kernel(_as_float_array(x, "x"), _as_length(length, "length"))


def ema(x: np.ndarray, length: int) -> np.ndarray:
    """Exponential moving average: alpha = 2/(length+1), y0 = x0 (no SMA seed).

    Leading NaNs are skipped: the average starts (y = x) at the first non-NaN value. A NaN
    after that gives NaN at that bar and leaves the average unchanged. ``length`` 0 gives all NaN.
    """
    return _ema_kernel(_as_float_array(x, "x"), _as_length(length, "length"))


def wma(x: np.ndarray, length: int) -> np.ndarray:
    """Linearly weighted moving average (weights 1..length, newest heaviest, divided by their sum).

    Missing until ``length`` values exist and wherever the window holds a NaN.
    """
    return _wma_kernel(_as_float_array(x, "x"), _as_length(length, "length"))


def moving_average(
    kind: str,
    close: np.ndarray,
    length: int,
    *,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    volume: np.ndarray | None = None,
) -> np.ndarray:
    """Moving average of ``close`` of one of :data:`MA_KINDS` (case-insensitive).

    ``length`` 0 gives an all-NaN series for every kind except VWAP, which ignores the length
    (cumulative from the first bar of the given arrays) and needs ``high``, ``low`` and
    ``volume``; VWMA needs ``volume``. Raises :class:`ParameterError` on an unknown kind, a
    negative length or a missing array.
    """
    if not isinstance(kind, str) or kind.strip().upper() not in MA_KINDS:
        raise ParameterError(f"unknown moving-average kind {kind!r}; valid kinds: {', '.join(MA_KINDS)}")
    k = kind.strip().upper()
    L = _as_length(length, "length")
    src = _as_float_array(close, "close")
    n = src.shape[0]

    if k in ("VWMA", "VWAP"):
        needed = {"volume": volume} if k == "VWMA" else {"high": high, "low": low, "volume": volume}
        missing = [name for name, arr in needed.items() if arr is None]
        if missing:
            raise ParameterError(f"{k} needs {', '.join(needed)}; missing: {', '.join(missing)}")
        arrays = {name: _as_float_array(arr, name) for name, arr in needed.items()}
        _same_length(n, **arrays)
        if k == "VWAP":
            return _vwap_kernel(arrays["high"], arrays["low"], src, arrays["volume"])
        if L == 0:
            return np.full(n, np.nan)
        return _vwma_kernel(src, arrays["volume"], L)

    if L == 0:
        return np.full(n, np.nan)
    if k == "SMA":
        return _sma_kernel(src, L)
    if k == "EMA":
        return _ema_kernel(src, L)
    if k == "WMA":
        return _wma_kernel(src, L)
    if k == "HMA":
        inner = 2.0 * _wma_kernel(src, max(1, L // 2)) - _wma_kernel(src, L)
        return _wma_kernel(inner, max(1, math.isqrt(L)))
    if k == "ALMA":
        return _alma_kernel(src, L)
    if k == "DEMA":
        e1 = _ema_kernel(src, L)
        return 2.0 * e1 - _ema_kernel(e1, L)
    if k == "KAMA":
        return _kama_kernel(src, L)
    if k == "TMA":
        return _sma_kernel(_sma_kernel(src, (L + 1) // 2), L // 2 + 1)
    # T3
    out = src
    for _ in range(3):
        e1 = _ema_kernel(out, L)
        out = e1 * 1.7 - _ema_kernel(e1, L) * 0.7
    return out
