"""The closed-trade log shared by the strategy kernels (numba).

A kernel records each closed trade with :func:`log_trade` and returns
:func:`kernel_result`, the tuple that :func:`~merlin_kit.strategies.base.output_from_kernel`
wraps, so every strategy reports trades and P&L % the same way.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def new_trade_log(n_bars):  # pragma: no cover - compiled
    """Buffers for at most one trade per two bars (an entry and an exit never share a bar)."""
    cap = n_bars // 2 + 1
    return (
        np.empty(cap, np.int8), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.float64),
        np.empty(cap, np.float64), np.empty(cap, np.float64), np.empty(cap, np.float64), np.empty(cap, np.float64),
    )


@njit(cache=True, nogil=True)
def log_trade(log, k, direction, entry_idx, exit_idx, entry_price, exit_price, size, net):  # pragma: no cover
    """Record trade ``k``; profit % is net P&L over the entry notional. Returns ``k + 1``."""
    log[0][k] = direction
    log[1][k] = entry_idx
    log[2][k] = exit_idx
    log[3][k] = entry_price
    log[4][k] = exit_price
    log[5][k] = size
    log[6][k] = net
    log[7][k] = net / (entry_price * size) * 100.0
    return k + 1


@njit(cache=True, nogil=True)
def kernel_result(log, k, balance, equity):  # pragma: no cover - compiled
    """(direction, entry_idx, exit_idx, entry_price, exit_price, size, net_pnl, profit_pct, balance, equity)."""
    return (
        log[0][:k].copy(), log[1][:k].copy(), log[2][:k].copy(), log[3][:k].copy(),
        log[4][:k].copy(), log[5][:k].copy(), log[6][:k].copy(), log[7][:k].copy(), balance, equity,
    )
