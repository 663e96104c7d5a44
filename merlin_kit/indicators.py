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
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numba import njit

from .errors import ParameterError

__all__ = [
    "MA_KINDS", "moving_average", "atr", "rolling_min", "rolling_max", "rsi", "stoch_rsi", "sma", "ema", "wma",
]

#: the moving-average kinds accepted by :func:`moving_average`, canonical spelling
MA_KINDS: tuple[str, ...] = ("SMA", "EMA", "WMA", "VWMA", "VWAP", "HMA", "ALMA", "DEMA", "KAMA", "TMA", "T3")

#: O(n) running sums are recomputed from scratch this often (bars)
_RECOMPUTE_EVERY = 1024
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
# Running window sums (VWMA, KAMA)


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
# ATR, rolling extremes, RSI, StochRSI


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


# ----------------------------------------------------------------------------------------------
# Python API


def _as_float_array(x: object, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if arr.ndim != 1:
        raise ParameterError(f"{name} must be a 1-D array, got {arr.ndim} dimensions")
    return arr


def _as_length(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        ivalue = int(value)
    else:
        fvalue = float(value)
        if not fvalue.is_integer():
            raise ParameterError(f"{name} must be an integer, got {value!r}")
        ivalue = int(fvalue)
    if ivalue < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {ivalue}")
    return ivalue


def _same_length(n: int, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ParameterError(f"{name} has {arr.shape[0]} values but close has {n}")


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
