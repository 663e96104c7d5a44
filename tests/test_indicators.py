"""Indicator kernels against plain reference implementations written from the spec text.

The references below are deliberately naive (explicit loops, direct window sums); SMA's
reference is pandas ``Series.rolling(L).mean()`` and must match bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merlin_kit.errors import ParameterError
from merlin_kit.indicators import (
    MA_KINDS,
    atr,
    ema,
    moving_average,
    rolling_max,
    rolling_min,
    rsi,
    sma,
    stoch_rsi,
    wma,
)

NAN = float("nan")
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# reference implementations (from the spec text, no cleverness)


def ref_sma(x, L):
    if L == 0:
        return np.full(len(x), NAN)
    return pd.Series(np.asarray(x, dtype=float)).rolling(L).mean().to_numpy()


def ref_ema(x, L):
    out = np.full(len(x), NAN)
    if L == 0:
        return out
    a = 2.0 / (L + 1)
    y = None
    for i, v in enumerate(x):
        if math.isnan(v):
            continue
        y = v if y is None else a * v + (1 - a) * y
        out[i] = y
    return out


def ref_weighted(x, weights):
    """sum(w[k] * x[i-L+1+k]) / sum(w), k = 0 oldest; missing until L values or with a NaN in the window."""
    L = len(weights)
    out = np.full(len(x), NAN)
    if L == 0:
        return out
    for i in range(L - 1, len(x)):
        window = x[i - L + 1: i + 1]
        if any(math.isnan(v) for v in window):
            continue
        s = 0.0
        for k in range(L):
            s += weights[k] * window[k]
        out[i] = s / sum(weights)
    return out


def ref_wma(x, L):
    return ref_weighted(x, [float(k) for k in range(1, L + 1)])


def ref_alma(x, L):
    if L == 0:
        return np.full(len(x), NAN)
    m = 0.85 * (L - 1)
    s = L / 6
    return ref_weighted(x, [math.exp(-((k - m) ** 2) / (2 * s * s)) for k in range(L)])


def ref_vwma(c, v, L):
    out = np.full(len(c), NAN)
    if L == 0:
        return out
    for i in range(L - 1, len(c)):
        num = sum(c[j] * v[j] for j in range(i - L + 1, i + 1))
        den = sum(v[j] for j in range(i - L + 1, i + 1))
        out[i] = num / den if den != 0 else NAN
    return out


def ref_vwap(h, l, c, v):
    out = np.full(len(c), NAN)
    spv = sv = 0.0
    for i in range(len(c)):
        typical = (h[i] + l[i] + c[i]) / 3
        spv += typical * v[i]
        sv += v[i]
        out[i] = spv / sv if sv != 0 else NAN
    return out


def ref_hma(x, L):
    if L == 0:
        return np.full(len(x), NAN)
    inner = 2 * ref_wma(x, max(1, L // 2)) - ref_wma(x, L)
    return ref_wma(inner, max(1, int(math.floor(math.sqrt(L)))))


def ref_dema(x, L):
    e = ref_ema(x, L)
    return 2 * e - ref_ema(e, L)


def ref_kama(x, L):
    n = len(x)
    out = np.full(n, NAN)
    if L == 0 or n == 0:
        return out
    out[0] = x[0]
    for i in range(1, n):
        if i < L:
            out[i] = out[i - 1]
            continue
        change = abs(x[i] - x[i - L])
        volatility = sum(abs(x[j] - x[j - 1]) for j in range(i - L + 1, i + 1))
        er = change / volatility if volatility != 0 else 0.0
        alpha = (er * (2 / 3 - 2 / 31) + 2 / 31) ** 2
        out[i] = alpha * x[i] + (1 - alpha) * out[i - 1]
    return out


def ref_tma(x, L):
    if L == 0:
        return np.full(len(x), NAN)
    return ref_sma(ref_sma(x, math.ceil(L / 2)), L // 2 + 1)


def ref_t3(x, L):
    def gd(s):
        e = ref_ema(s, L)
        return e * 1.7 - ref_ema(e, L) * 0.7

    return gd(gd(gd(np.asarray(x, dtype=float))))


def ref_ma(kind, h, l, c, v, L):
    return {
        "SMA": lambda: ref_sma(c, L),
        "EMA": lambda: ref_ema(c, L),
        "WMA": lambda: ref_wma(c, L),
        "VWMA": lambda: ref_vwma(c, v, L),
        "VWAP": lambda: ref_vwap(h, l, c, v),
        "HMA": lambda: ref_hma(c, L),
        "ALMA": lambda: ref_alma(c, L),
        "DEMA": lambda: ref_dema(c, L),
        "KAMA": lambda: ref_kama(c, L),
        "TMA": lambda: ref_tma(c, L),
        "T3": lambda: ref_t3(c, L),
    }[kind]()


def ref_atr(h, l, c, period):
    out = np.full(len(c), NAN)
    for i in range(len(c)):
        if i == 0:
            tr = h[0] - l[0]
            out[0] = tr
        else:
            tr = max(h[i] - l[i], abs(h[i] - c[i - 1]), abs(l[i] - c[i - 1]))
            out[i] = out[i - 1] + (tr - out[i - 1]) / period
    return out


def ref_rolling(x, window, fn):
    out = np.full(len(x), NAN)
    for i in range(len(x)):
        vals = [v for v in x[max(0, i - window + 1): i + 1] if not math.isnan(v)]
        if vals:
            out[i] = fn(vals)
    return out


def ref_rsi(c, L):
    out = np.full(len(c), NAN)
    ag = al = 0.0
    for i in range(len(c)):
        ch = 0.0 if i == 0 else c[i] - c[i - 1]
        gain = ch if ch > 0 else 0.0
        loss = -ch if ch < 0 else 0.0
        ag = ag + (gain - ag) / L
        al = al + (loss - al) / L
        if i >= L - 1:
            if al == 0:
                out[i] = 100.0 if ag > 0 else NAN
            else:
                out[i] = 100 - 100 / (1 + ag / al)
    return out


def ref_stoch(r, L):
    out = np.zeros(len(r))
    for i in range(len(r)):
        vals = [v for v in r[max(0, i - L + 1): i + 1] if not math.isnan(v)]
        if math.isnan(r[i]) or not vals:
            continue
        lo, hi = min(vals), max(vals)
        if hi - lo != 0:
            out[i] = (r[i] - lo) / (hi - lo) * 100
    return out


# ----------------------------------------------------------------------------------------------
# helpers and data


def assert_close(actual, expected, rtol=1e-9, atol=1e-12):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN positions differ")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def assert_same(actual, expected):
    assert np.asarray(actual).dtype == np.float64
    assert np.array_equal(actual, expected, equal_nan=True), (actual, expected)


price = st.floats(min_value=0.01, max_value=1e4, allow_nan=False, allow_subnormal=False)
vol = st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e6, allow_subnormal=False))


@st.composite
def ohlcv(draw, min_size=1, max_size=120):
    """Random positive OHLCV: a wild uniform mix, a random walk, or a few price levels (ties, flat runs)."""
    n = draw(st.integers(min_size, max_size))
    style = draw(st.sampled_from(["wild", "walk", "levels"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if style == "wild":
        close = np.exp(rng.uniform(np.log(0.01), np.log(1e4), n))
    elif style == "walk":
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    else:
        close = rng.choice([10.0, 10.5, 11.0, 0.1], n)
    high = close * (1 + rng.uniform(0, 0.05, n) * (rng.uniform(size=n) > 0.2))
    low = close * (1 - rng.uniform(0, 0.05, n) * (rng.uniform(size=n) > 0.2))
    volume = np.exp(rng.uniform(np.log(1e-3), np.log(1e6), n)) * (rng.uniform(size=n) > draw(st.sampled_from([0.0, 0.3, 0.9])))
    return high, low, close, volume


def walk(n, seed, scale=100.0):
    rng = np.random.default_rng(seed)
    c = scale * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    h = c * (1 + rng.uniform(0, 0.01, n))
    l = c * (1 - rng.uniform(0, 0.01, n))
    v = rng.uniform(0, 1e6, n) * (rng.uniform(0, 1, n) > 0.02)  # some zero volumes
    return h, l, c, v


lengths = st.one_of(st.integers(0, 5), st.integers(0, 60), st.integers(100, 200))


# ----------------------------------------------------------------------------------------------
# moving averages against the references


@pytest.mark.parametrize("kind", MA_KINDS)
@SETTINGS
@given(data=ohlcv(), length=lengths)
def test_moving_average_matches_reference(kind, data, length):
    h, l, c, v = data
    got = moving_average(kind, c, length, high=h, low=l, volume=v)
    want = ref_ma(kind, h, l, c, v, length)
    if kind in ("SMA", "TMA"):
        assert_same(got, want)
    else:
        assert_close(got, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(MA_KINDS),
    rows=st.lists(st.tuples(price, vol), min_size=1, max_size=80),
    length=st.one_of(st.integers(0, 5), st.integers(30, 50)),
)
def test_moving_average_matches_reference_on_hypothesis_floats(kind, rows, length):
    # hypothesis' own float choices (repeats, round numbers, extremes of the range)
    c = np.array([r[0] for r in rows])
    v = np.array([r[1] for r in rows])
    h, l = c * 1.01, c * 0.99
    got = moving_average(kind, c, length, high=h, low=l, volume=v)
    want = ref_ma(kind, h, l, c, v, length)
    if kind in ("SMA", "TMA"):
        assert_same(got, want)
    else:
        assert_close(got, want)


@pytest.mark.parametrize("kind", MA_KINDS)
@pytest.mark.parametrize("length", [1, 2, 33, 300, 500])
def test_moving_average_long_random_walk(kind, length):
    h, l, c, v = walk(2000, seed=length)
    got = moving_average(kind, c, length, high=h, low=l, volume=v)
    want = ref_ma(kind, h, l, c, v, length)
    if kind in ("SMA", "TMA"):
        assert_same(got, want)
    else:
        assert_close(got, want, rtol=1e-11)


@pytest.mark.parametrize("kind", MA_KINDS)
def test_length_zero(kind):
    h, l, c, v = walk(50, seed=1)
    got = moving_average(kind, c, 0, high=h, low=l, volume=v)
    if kind == "VWAP":
        assert_close(got, ref_vwap(h, l, c, v))
        assert not np.isnan(got).any()
    else:
        assert np.isnan(got).all() and got.shape == (50,)


@pytest.mark.parametrize("kind", MA_KINDS)
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_length_longer_than_data(kind, n):
    h, l, c, v = walk(n, seed=2)
    got = moving_average(kind, c, 10, high=h, low=l, volume=v)
    assert got.shape == (n,)
    if kind in ("SMA", "WMA", "VWMA", "HMA", "ALMA", "TMA"):
        assert np.isnan(got).all()
    else:  # EMA, DEMA, T3, KAMA start at bar 0; VWAP ignores the length
        assert not np.isnan(got).any()
    assert_close(got, ref_ma(kind, h, l, c, v, 10))


def test_length_one_is_identity_for_window_kinds():
    h, l, c, v = walk(40, seed=3)
    v[v == 0] = 1.0  # VWMA(1) of a zero-volume bar is 0/0: missing
    for kind in ("SMA", "EMA", "WMA", "VWMA", "HMA", "ALMA", "DEMA", "TMA", "T3"):
        got = moving_average(kind, c, 1, high=h, low=l, volume=v)
        assert_close(got, c, rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# SMA: bit-identical to pandas


finite_or_nan = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
    st.sampled_from([0.0, -0.0, 1.0, 0.1, 0.3, 1e-9]),
    st.just(NAN),
)


@SETTINGS
@given(x=st.lists(finite_or_nan, min_size=0, max_size=200), length=st.integers(0, 40))
def test_sma_bit_identical_to_pandas_with_nan_and_ties(x, length):
    x = np.array(x, dtype=float)
    assert_same(sma(x, length), ref_sma(x, length))


@pytest.mark.parametrize("length", [1, 2, 3, 7, 45, 160, 300, 1000])
def test_sma_bit_identical_to_pandas_long(length):
    rng = np.random.default_rng(length)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 100_000)))
    x[5000:5400] = x[5000]  # a flat stretch: pandas' same-value rule
    x[7000] = NAN
    x[9000] = np.inf  # pandas treats +-inf as NaN
    x[20000:20050] = np.round(x[20000:20050], 1)
    assert_same(sma(x, length), ref_sma(x, length))


def test_sma_of_stochrsi_like_series_matches_pandas():
    # K = SMA(StochRSI, kLen), D = SMA(K, dLen): exact ties matter for S04 crosses
    _, _, c, _ = walk(5000, seed=11)
    s = stoch_rsi(rsi(c, 16), 16)
    k = sma(s, 3)
    assert_same(k, ref_sma(s, 3))
    assert_same(sma(k, 3), ref_sma(k, 3))


# ----------------------------------------------------------------------------------------------
# EMA / WMA / ALMA details


def test_ema_starts_at_first_non_nan():
    x = np.array([NAN, NAN, 3.0, 4.0, NAN, 6.0])
    got = ema(x, 3)
    assert np.isnan(got[:2]).all() and np.isnan(got[4])
    assert got[2] == 3.0
    assert got[3] == 0.5 * 4.0 + 0.5 * 3.0
    assert got[5] == 0.5 * 6.0 + 0.5 * got[3]
    assert_close(got, ref_ema(x, 3))


@pytest.mark.parametrize("length", [3, 33, 120])
def test_wma_window_with_nan(length):
    _, _, c, _ = walk(1500, seed=length)
    c[[0, 400, 401, 900]] = NAN
    c[1200:1200 + length + 5] = NAN
    got = wma(c, length)
    assert_close(got, ref_wma(c, length), rtol=1e-11)
    assert_close(moving_average("ALMA", c, length), ref_alma(c, length), rtol=1e-11)


@pytest.mark.parametrize("length", [33, 64, 250, 500])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e5])
def test_wma_running_sum_stays_exact(length, scale):
    # the O(n) formulation against the direct formula on a long series (drift < 1e-12)
    _, _, c, _ = walk(20_000, seed=length, scale=scale)
    got = wma(c, length)
    w = np.arange(1, length + 1, dtype=float)
    direct = np.full(len(c), NAN)
    windows = np.lib.stride_tricks.sliding_window_view(c, length)
    direct[length - 1:] = windows @ w / w.sum()
    assert_close(got, direct, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["WMA", "VWMA", "KAMA", "HMA"])
@pytest.mark.parametrize("length", [33, 40, 100])
def test_running_sums_survive_huge_values_leaving_the_window(kind, length):
    # large values then tiny ones: a plain running sum would keep an absolute error of
    # ~eps * 1e10 and be wrong in the 6th digit once only the tiny values are left
    rng = np.random.default_rng(length)
    c = np.concatenate([rng.uniform(5e3, 1e4, 150), rng.uniform(0.01, 0.02, 300), rng.uniform(5e3, 1e4, 50)])
    v = np.concatenate([rng.uniform(5e5, 1e6, 150), rng.uniform(1e-3, 2e-3, 300), rng.uniform(5e5, 1e6, 50)])
    h, l = c * 1.01, c * 0.99
    assert_close(moving_average(kind, c, length, volume=v), ref_ma(kind, h, l, c, v, length), rtol=1e-12)


@pytest.mark.parametrize("kind", ["VWMA", "KAMA"])
def test_running_sums_stay_exact_on_long_series(kind):
    h, l, c, v = walk(6000, seed=5)
    v[100:400] = 0.0  # zero-volume stretch: VWMA missing where the whole window has no volume
    c[5000:5400] = c[5000]  # flat stretch: KAMA's ER is 0 there
    got = moving_average(kind, c, 200, volume=v)
    if kind == "VWMA":
        num = np.convolve(c * v, np.ones(200), "valid")
        den = np.convolve(v, np.ones(200), "valid")
        assert np.isnan(got[199:399]).sum() >= 1
        want = np.full(len(c), NAN)
        with np.errstate(invalid="ignore"):
            want[199:] = np.where(den != 0, num / np.where(den != 0, den, 1), NAN)
        assert_close(got, want, rtol=1e-11)
    else:
        assert_close(got, ref_kama(c, 200), rtol=1e-11)


def test_vwma_window_with_nan():
    h, l, c, v = walk(300, seed=6)
    v[50] = NAN
    c[120] = NAN
    got = moving_average("VWMA", c, 10, volume=v)
    assert_close(got, ref_vwma(c, v, 10))
    assert np.isnan(got[50:60]).all() and np.isnan(got[120:130]).all() and not np.isnan(got[60:120]).any()


# ----------------------------------------------------------------------------------------------
# VWAP


def test_vwap_ignores_length_and_starts_at_first_bar_of_given_arrays():
    h, l, c, v = walk(500, seed=7)
    full = moving_average("VWAP", c, 0, high=h, low=l, volume=v)
    for length in (1, 45, 10_000):
        assert_same(moving_average("VWAP", c, length, high=h, low=l, volume=v), full)
    start = 200
    part = moving_average("VWAP", c[start:], 45, high=h[start:], low=l[start:], volume=v[start:])
    assert_close(part, ref_vwap(h[start:], l[start:], c[start:], v[start:]))
    typical = (h[start] + l[start] + c[start]) / 3
    assert part[0] == pytest.approx(typical, rel=1e-15)
    assert not np.allclose(part, full[start:])


# ----------------------------------------------------------------------------------------------
# errors and dispatch


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ParameterError) as info:
        moving_average("ZLEMA", np.ones(10), 5)
    message = str(info.value)
    assert "ZLEMA" in message
    for kind in MA_KINDS:
        assert kind in message


def test_kind_is_case_insensitive():
    _, _, c, _ = walk(100, seed=8)
    assert_same(moving_average("ema", c, 10), moving_average("EMA", c, 10))
    assert_same(moving_average("Hma", c, 10), moving_average("HMA", c, 10))


@pytest.mark.parametrize("kind", MA_KINDS)
def test_negative_length_is_an_error(kind):
    h, l, c, v = walk(20, seed=9)
    with pytest.raises(ParameterError):
        moving_average(kind, c, -1, high=h, low=l, volume=v)


@pytest.mark.parametrize("length", [2.5, "10", None, True])
def test_non_integer_length_is_an_error(length):
    with pytest.raises(ParameterError):
        moving_average("SMA", np.ones(10), length)


def test_integral_float_and_numpy_lengths_are_accepted():
    _, _, c, _ = walk(100, seed=10)
    assert_same(moving_average("SMA", c, 10.0), moving_average("SMA", c, np.int64(10)))


def test_missing_volume_is_an_error():
    h, l, c, _ = walk(20, seed=12)
    with pytest.raises(ParameterError, match="volume"):
        moving_average("VWMA", c, 5)
    with pytest.raises(ParameterError, match="missing: volume"):
        moving_average("VWAP", c, 5, high=h, low=l)
    with pytest.raises(ParameterError, match="missing: high, low"):
        moving_average("VWAP", c, 5, volume=np.ones(20))


def test_mismatched_lengths_are_an_error():
    h, l, c, v = walk(20, seed=13)
    with pytest.raises(ParameterError):
        moving_average("VWMA", c, 5, volume=v[:-1])
    with pytest.raises(ParameterError):
        atr(h, l[:-1], c, 14)


def test_other_parameter_errors():
    x = np.ones(10)
    for call in (lambda: atr(x, x, x, 0), lambda: rolling_min(x, 0), lambda: rolling_max(x, -1),
                 lambda: rsi(x, 0), lambda: stoch_rsi(x, 0), lambda: sma(x, -3), lambda: ema(x, -1),
                 lambda: wma(x, -2)):
        with pytest.raises(ParameterError):
            call()


def test_inputs_are_not_modified_and_lists_accepted():
    h, l, c, v = walk(100, seed=14)
    copy = c.copy()
    for kind in MA_KINDS:
        moving_average(kind, c, 20, high=h, low=l, volume=v)
    assert_same(c, copy)
    assert_same(sma(list(c), 5), sma(c, 5))


# ----------------------------------------------------------------------------------------------
# ATR, rolling extremes


@SETTINGS
@given(data=ohlcv(), period=st.integers(1, 30))
def test_atr_matches_reference(data, period):
    h, l, c, _ = data
    assert_close(atr(h, l, c, period), ref_atr(h, l, c, period))


def test_atr_first_bar_is_high_minus_low():
    h, l, c, _ = walk(30, seed=15)
    got = atr(h, l, c, 14)
    assert got[0] == h[0] - l[0]
    assert_close(got, ref_atr(h, l, c, 14), rtol=1e-14)


@SETTINGS
@given(x=st.lists(price, min_size=0, max_size=150), window=st.integers(1, 60))
def test_rolling_min_max_match_reference(x, window):
    x = np.array(x, dtype=float)
    lo, hi = rolling_min(x, window), rolling_max(x, window)
    assert_same(lo, ref_rolling(x, window, min))
    assert_same(hi, ref_rolling(x, window, max))
    assert not np.isnan(lo).any() and not np.isnan(hi).any()


def test_rolling_min_max_skip_nan():
    x = np.array([NAN, 3.0, NAN, NAN, NAN, 1.0, 2.0])
    assert_same(rolling_min(x, 2), ref_rolling(x, 2, min))
    assert_same(rolling_max(x, 3), ref_rolling(x, 3, max))
    assert np.isnan(rolling_min(x, 2)[[0, 3, 4]]).all()


def test_rolling_window_one_is_identity():
    _, l, _, _ = walk(100, seed=16)
    assert_same(rolling_min(l, 1), l)
    assert_same(rolling_max(l, 1), l)


# ----------------------------------------------------------------------------------------------
# RSI, StochRSI


flat_or_price = st.one_of(price, st.sampled_from([10.0, 10.5, 11.0]))


@SETTINGS
@given(c=st.lists(flat_or_price, min_size=1, max_size=150), length=st.integers(1, 40))
def test_rsi_matches_reference(c, length):
    c = np.array(c, dtype=float)
    assert_close(rsi(c, length), ref_rsi(c, length))


def test_rsi_special_values():
    up = np.arange(1.0, 21.0)
    r = rsi(up, 5)
    assert np.isnan(r[:4]).all() and (r[4:] == 100.0).all()
    flat = np.full(20, 7.0)
    assert np.isnan(rsi(flat, 5)).all()
    down = up[::-1].copy()
    assert (rsi(down, 5)[4:] == 0.0).all()


@SETTINGS
@given(c=st.lists(flat_or_price, min_size=1, max_size=150), rsi_len=st.integers(1, 30), length=st.integers(1, 40))
def test_stoch_rsi_matches_reference(c, rsi_len, length):
    c = np.array(c, dtype=float)
    r = rsi(c, rsi_len)
    got = stoch_rsi(r, length)
    assert_close(got, ref_stoch(r, length))
    assert not np.isnan(got).any()
    assert (got[: rsi_len - 1] == 0.0).all()


def test_stoch_rsi_skips_missing_values():
    r = np.array([NAN, NAN, 50.0, NAN, 70.0, 60.0, NAN, 40.0])
    assert_same(stoch_rsi(r, 4), ref_stoch(r, 4))
    assert_same(stoch_rsi(r, 4), np.array([0, 0, 0, 0, 100, 50, 0, 0], dtype=float))


def test_s04_k_and_d_on_reference_like_data():
    _, _, c, _ = walk(4000, seed=17)
    r = rsi(c, 16)
    assert_close(r, ref_rsi(c, 16), rtol=1e-12)
    s = stoch_rsi(r, 16)
    assert_close(s, ref_stoch(r, 16), rtol=1e-12)
    k = sma(s, 3)
    d = sma(k, 3)
    assert_same(k, ref_sma(s, 3))
    assert_same(d, ref_sma(k, 3))
