"""The deterministic synthetic OHLCV series: :func:`sample`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import DataError
from ._load import _NS_PER_S, _build_frame


_SAMPLE_START_S = 1_704_067_200  # 2024-01-01 00:00:00 UTC
_BAR_S = 900


def sample(n_bars: int = 24_000, *, seed: int = 20250501) -> pd.DataFrame:
    """A deterministic synthetic 15-minute OHLCV series starting 2024-01-01 00:00 UTC.

    Structure: regimes of 150-1200 bars that trend up, trend down or range
    (mean-reverting), GARCH(1,1) volatility (clusters), fat-ish wicks that
    always contain open and close, prices on a 0.001 tick in the tens of
    dollars, and volume rising with volatility and at the US/EU session.  Only
    ``numpy.random.default_rng`` streams spawned from ``seed`` and IEEE
    arithmetic (+, -, *, /, sqrt) are used, so the output is identical on every
    call and platform, and ``sample(n)`` is the first ``n`` bars of
    ``sample(m)`` for ``m > n``.  Returned in :func:`load_ohlcv` form.
    """
    if isinstance(n_bars, bool) or not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
        raise DataError(f"n_bars must be an integer >= 1, got {n_bars!r}")
    n = int(n_bars)
    # one independent stream per array, so sample(n) is a prefix of sample(m > n)
    streams = [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(7)]
    n_regimes = n // 150 + 2
    shocks = streams[0].standard_normal(n).tolist()
    reg_len = streams[1].integers(150, 1201, size=n_regimes).tolist()
    reg_pick = streams[2].random(n_regimes).tolist()
    reg_strength = streams[3].uniform(0.00012, 0.00045, size=n_regimes).tolist()
    wick_hi = streams[4].standard_exponential(n)
    wick_lo = streams[5].standard_exponential(n)
    vol_noise = streams[6].gamma(4.0, 0.25, size=n)

    # GARCH(1,1) on 15-minute returns: long-run sigma 0.4 %, persistence 0.97
    alpha, beta, lr_sigma = 0.10, 0.87, 0.004
    omega = lr_sigma * lr_sigma * (1.0 - alpha - beta)
    var = lr_sigma * lr_sigma

    opens = [0.0] * n
    closes = [0.0] * n
    sigmas = [0.0] * n
    price = 22.0
    k = -1
    next_switch = 0
    drift = 0.0
    center = price
    trending = False
    vol_mult = 1.0
    for t in range(n):
        if t == next_switch:
            k += 1
            next_switch = t + reg_len[k]
            p_up, p_down = 0.3, 0.3
            if price > 40.0:
                p_up, p_down = 0.1, 0.55
            elif price < 15.0:
                p_up, p_down = 0.55, 0.1
            u = reg_pick[k]
            if u < p_up:
                trending, drift, vol_mult = True, reg_strength[k], 1.15
            elif u < p_up + p_down:
                trending, drift, vol_mult = True, -reg_strength[k], 1.15
            else:
                trending, drift, vol_mult, center = False, 0.0, 0.8, price
        base = math.sqrt(var)
        eps = base * shocks[t]
        sigma = base * vol_mult
        mu = drift if trending else 0.01 * (center - price) / price
        r = mu + vol_mult * eps
        r = min(0.2, max(-0.2, r))
        opens[t] = price
        price = price * (1.0 + r)
        closes[t] = price
        sigmas[t] = sigma
        var = omega + alpha * eps * eps + beta * var

    o = np.array(opens)
    c = np.array(closes)
    sig = np.array(sigmas)
    z = np.abs(np.array(shocks))
    up = np.maximum(o, c) * (1.0 + 0.35 * sig * wick_hi)
    down = np.minimum(o, c) * (1.0 - np.minimum(0.5, 0.35 * sig * wick_lo))

    hour = (np.arange(n) % 96) / 4.0  # bars start at midnight UTC
    session = 0.7 + 0.6 * np.maximum(0.0, 1.0 - np.abs(hour - 15.0) / 8.0)
    volume = 250_000.0 * session * (sig / lr_sigma) * (0.5 + 0.5 * z) * vol_noise

    values = {
        "open": np.round(o, 3),
        "high": np.round(up, 3),
        "low": np.round(down, 3),
        "close": np.round(c, 3),
        "volume": np.round(volume, 3),
    }
    ns = (np.int64(_SAMPLE_START_S) + np.int64(_BAR_S) * np.arange(n, dtype=np.int64)) * np.int64(_NS_PER_S)
    return _build_frame(ns, values)
