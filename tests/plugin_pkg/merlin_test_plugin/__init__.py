"""A minimal strategy plug-in: channel breakout, always in the market, no sizing rules.

Deliberately plain Python/numpy (no numba) so that installing and importing it is instant.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from merlin_kit.indicators import rolling_max, rolling_min
from merlin_kit.strategies import IndicatorCache, Param, Strategy, StrategyOutput


class Breakout(Strategy):
    """Go long on a close above the previous ``length``-bar high, short below the low; reverse on the opposite signal."""

    id = "plugin_breakout"
    name = "Plug-in breakout (test)"
    params = (
        Param("length", "int", 20, 2, 500, 5, 60, 5, optimize=True, description="Channel length, bars"),
        Param("qty", "float", 1.0, 0.0001, 1e6, description="Position size, units"),
    )

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None) -> StrategyOutput:
        cache = cache if cache is not None else IndicatorCache()
        length, qty = params["length"], float(params["qty"])
        hi = cache.get(("highest", length), lambda: rolling_max(data.high, length))
        lo = cache.get(("lowest", length), lambda: rolling_min(data.low, length))
        close = data.close
        n = close.shape[0]
        capital = self.initial_capital(params)
        trades: list[tuple[int, int, int, float, float]] = []
        balance = np.empty(n)
        equity = np.empty(n)
        realised, position, entry_i, entry_px = capital, 0, 0, 0.0
        for i in range(n):
            signal = 0
            if i >= max(1, data.trade_start_idx):
                if close[i] > hi[i - 1]:
                    signal = 1
                elif close[i] < lo[i - 1]:
                    signal = -1
            if signal and signal != position:
                if position:
                    realised += position * (close[i] - entry_px) * qty
                    trades.append((position, entry_i, i, entry_px, close[i]))
                position, entry_i, entry_px = signal, i, close[i]
            balance[i] = realised
            equity[i] = realised + (position * (close[i] - entry_px) * qty if position else 0.0)
        t = np.array(trades, dtype=float).reshape(-1, 5)
        direction = t[:, 0].astype(np.int8)
        entry_price, exit_price = t[:, 3], t[:, 4]
        net = direction * (exit_price - entry_price) * qty
        return StrategyOutput(
            direction, t[:, 1].astype(np.int64), t[:, 2].astype(np.int64), entry_price, exit_price,
            np.full(len(t), qty), net, net / (entry_price * qty) * 100.0, balance, equity, capital,
        )
