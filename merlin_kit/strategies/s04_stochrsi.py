"""S04 StochRSI: swing entries after a StochRSI K/D cross in oversold/overbought, swing stops.

The bar loop follows ``specs/S04_STOCHRSI.md`` step by step (setup flags, swing
tracking, exits, entries, curves -- the order matters for exactness) and runs as
one numba kernel. The kernel takes the precomputed series (K, D, lowestLow,
highestHigh) as inputs, so it can also be driven with hand-made arrays.

Readings of the spec where it leaves room:

* Commission is in percent: ``price * size * commissionPct / 100`` at entry and
  at exit. The realised balance changes only at an exit, by the trade's net P&L
  (gross minus both commissions). The entry commission is counted as paid at
  entry ("Commission = ... at entry and at exit"), so while a trade is open the
  equity curve is ``balance + (mark-to-market gross P&L - entry commission)``;
  only the exit commission is left out ("no exit commission deducted"). The
  equity curve is therefore continuous at an exit bar (equity == balance there).
* "long-setup flag and long-trend flag and a swing low -> long ...; else
  short-...": the *else* belongs to the long condition, so when the long
  condition holds but opens nothing (stop distance <= 0 or zero size), no short
  is tried on that bar.
* Crosses and resets need K, D, K[prev] and D[prev] present; otherwise they are
  all false on that bar and the setup flags keep their values.
* A missing lowestLow/highestHigh (only where the whole lookback window of
  lows/highs is missing) leaves the swing state unchanged; comparisons with a
  missing swing value are false.
* profit % of a trade = net / (entry price * size) * 100 (as in S01).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from numba import njit

from ..data import PreparedData
from ..indicators import rolling_max, rolling_min, rsi, sma, stoch_rsi
from ._trades import kernel_result, log_trade, new_trade_log
from .base import IndicatorCache, Param, Strategy, StrategyOutput, output_from_kernel


@njit(cache=True, nogil=True)
def s04_kernel(
    high, low, close, k, d, lowest_low, highest_high, trade_start_idx,
    ob_level, os_level, confirm_bars, risk_per_trade, contract_size, commission_pct, initial_capital,
):  # pragma: no cover - compiled
    """The S04 bar loop on precomputed series; returns the kernel tuple of ``output_from_kernel``."""
    n = close.shape[0]
    trades = new_trade_log(n)
    balance_curve = np.empty(n, np.float64)
    equity_curve = np.empty(n, np.float64)

    balance = initial_capital
    position = 0
    prev_position = 0
    size = 0.0
    entry_price = math.nan
    stop = math.nan
    entry_idx = 0
    entry_commission = 0.0
    long_setup = False
    short_setup = False
    swing_low = math.nan
    swing_low_count = 0
    long_trend = False
    swing_high = math.nan
    swing_high_count = 0
    short_trend = False
    n_trades = 0

    for i in range(n):
        c = close[i]
        h = high[i]
        lo = low[i]

        # 1. crosses, resets and setup flags
        bull_cross_os = False
        bear_cross_ob = False
        if i > 0:
            kc = k[i]
            dc = d[i]
            kp = k[i - 1]
            dp = d[i - 1]
            if not (math.isnan(kc) or math.isnan(dc) or math.isnan(kp) or math.isnan(dp)):
                bull_cross_os = kc > dc and kp <= dp and kc < os_level and dc < os_level
                bear_cross_ob = kc < dc and kp >= dp and kc > ob_level and dc > ob_level
                reset_os = kc > os_level and kp <= os_level
                reset_ob = kc < ob_level and kp >= ob_level
                if bull_cross_os:
                    long_setup = True
                if reset_os:
                    long_setup = False
                if bear_cross_ob:
                    short_setup = True
                if reset_ob:
                    short_setup = False

        # 2. swing low / swing high tracking
        ll = lowest_low[i]
        if not math.isnan(ll) and (math.isnan(swing_low) or ll != swing_low):
            swing_low = ll
            swing_low_count = 0
            long_trend = False
        if lo > swing_low:
            swing_low_count += 1
            if swing_low_count >= confirm_bars:
                long_trend = True
        elif lo < swing_low:
            swing_low = lo
            swing_low_count = 0
            long_trend = False
        hh = highest_high[i]
        if not math.isnan(hh) and (math.isnan(swing_high) or hh != swing_high):
            swing_high = hh
            swing_high_count = 0
            short_trend = False
        if h < swing_high:
            swing_high_count += 1
            if swing_high_count >= confirm_bars:
                short_trend = True
        elif h > swing_high:
            swing_high = h
            swing_high_count = 0
            short_trend = False

        # 3. exits
        exit_price = math.nan
        if position == 1:
            if lo <= stop:
                exit_price = stop
            elif bear_cross_ob:
                exit_price = c
        elif position == -1:
            if h >= stop:
                exit_price = stop
            elif bull_cross_os:
                exit_price = c
        if position != 0 and not math.isnan(exit_price):
            if position == 1:
                gross = (exit_price - entry_price) * size
            else:
                gross = (entry_price - exit_price) * size
            exit_commission = exit_price * size * commission_pct / 100.0
            net = gross - entry_commission - exit_commission
            balance += net
            n_trades = log_trade(trades, n_trades, position, entry_idx, i, entry_price, exit_price, size, net)
            position = 0
            size = 0.0
            entry_price = math.nan
            stop = math.nan
            entry_commission = 0.0

        # 4. entries
        if position == 0 and prev_position == 0 and i >= trade_start_idx:
            direction = 0
            new_stop = math.nan
            distance = 0.0
            if long_setup and long_trend and not math.isnan(swing_low):
                direction = 1
                new_stop = swing_low
                distance = c - swing_low
            elif short_setup and short_trend and not math.isnan(swing_high):
                direction = -1
                new_stop = swing_high
                distance = swing_high - c
            if direction != 0 and distance > 0:
                qty = math.floor(balance * risk_per_trade / 100.0 / distance / contract_size) * contract_size
                if qty > 0:
                    position = direction
                    size = qty
                    entry_price = c
                    stop = new_stop
                    entry_idx = i
                    entry_commission = c * qty * commission_pct / 100.0

        # 5. curves
        balance_curve[i] = balance
        if position == 1:
            equity_curve[i] = balance + ((c - entry_price) * size - entry_commission)
        elif position == -1:
            equity_curve[i] = balance + ((entry_price - c) * size - entry_commission)
        else:
            equity_curve[i] = balance
        prev_position = position

    return kernel_result(trades, n_trades, balance_curve, equity_curve)


class S04StochRSI(Strategy):
    """S04 StochRSI (see ``specs/S04_STOCHRSI.md``)."""

    id = "s04_stochrsi"
    name = "S04 StochRSI"
    params = (
        Param("rsiLen", "int", 16, 1, 200, 4, 50, 2, optimize=True, description="RSI length (Wilder)"),
        Param("stochLen", "int", 16, 1, 200, 4, 50, 2, optimize=True, description="Stochastic lookback over the RSI"),
        Param("kLen", "int", 3, 1, 50, 1, 50, 1, optimize=True, description="K: SMA length of the StochRSI"),
        Param("dLen", "int", 3, 1, 50, 1, 50, 1, optimize=True, description="D: SMA length of K"),
        Param("obLevel", "float", 75.0, 0, 100, 60, 90, 1, optimize=True, description="Overbought level"),
        Param("osLevel", "float", 15.0, 0, 100, 5, 30, 1, optimize=True, description="Oversold level"),
        Param("extLookback", "int", 23, 2, 200, 5, 60, 1, optimize=True, description="Swing low/high lookback, bars"),
        Param("confirmBars", "int", 14, 1, 200, 2, 40, 1, optimize=True, description="Bars beyond the swing to confirm the trend"),
        Param("riskPerTrade", "float", 2.0, 0, 10, description="Risk per trade, % of balance"),
        Param("contractSize", "float", 0.01, 0.0001, 1e6, description="Contract size (sizes are floored to a multiple)"),
        Param("initialCapital", "float", 100.0, 1e-9, None, description="Initial capital"),
        Param("commissionPct", "float", 0.05, 0, 1, description="Commission, % of notional, at entry and at exit"),
    )

    def initial_capital(self, params: Mapping[str, Any]) -> float:
        return float(params["initialCapital"])

    def run(self, data: PreparedData, params: Mapping[str, Any], cache: IndicatorCache | None = None) -> StrategyOutput:
        p = params
        cache = cache if cache is not None else IndicatorCache()
        rsi_len, stoch_len, k_len, d_len = p["rsiLen"], p["stochLen"], p["kLen"], p["dLen"]

        rsi_ = cache.get(("rsi", rsi_len), lambda: rsi(data.close, rsi_len))
        srsi = cache.get(("stoch_rsi", rsi_len, stoch_len), lambda: stoch_rsi(rsi_, stoch_len))
        k = cache.get(("stoch_rsi_k", rsi_len, stoch_len, k_len), lambda: sma(srsi, k_len))
        d = cache.get(("stoch_rsi_d", rsi_len, stoch_len, k_len, d_len), lambda: sma(k, d_len))
        lookback = p["extLookback"]
        lowest = cache.get(("lowest", lookback), lambda: rolling_min(data.low, lookback))
        highest = cache.get(("highest", lookback), lambda: rolling_max(data.high, lookback))
        capital = self.initial_capital(p)
        result = s04_kernel(
            data.high, data.low, data.close, k, d, lowest, highest, data.trade_start_idx,
            float(p["obLevel"]), float(p["osLevel"]), int(p["confirmBars"]),
            float(p["riskPerTrade"]), float(p["contractSize"]), float(p["commissionPct"]), capital,
        )
        return output_from_kernel(result, capital)


__all__ = ["S04StochRSI", "s04_kernel"]
