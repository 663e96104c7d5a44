"""Monte Carlo bootstrap of a backtest's trade sequence: distribution of max drawdown and final return."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..backtest import BacktestResult
from ..errors import ConfigError
from ._sharpe import _as_array

_MC_CHUNK_CELLS = 1 << 22  # paths x trades compounded at once (bounds memory at ~100 MB)


@dataclass(frozen=True)
class MonteCarloResult:
    """Bootstrap of a trade sequence: ``n`` paths of the same number of trades drawn with replacement.

    Arrays are indexed by path.  Drawdowns are on the closed-trade balance
    (``(peak − value) / peak × 100``, the starting capital counting as a peak), as
    ``max_drawdown_pct`` of a backtest.
    """

    #: maximum drawdown (%) of each path
    max_drawdown_pct: np.ndarray
    #: final return (%) of each path: last balance / initial capital − 1
    final_return_pct: np.ndarray
    #: (n, trades) indices into ``trade_returns_pct`` drawn for each path
    indices: np.ndarray
    #: each trade's return on the balance before it (%), in the original order
    trade_returns_pct: np.ndarray
    #: the original sequence's maximum drawdown and final return (%), for comparison
    actual_max_drawdown_pct: float
    actual_return_pct: float
    initial_capital: float
    seed: int | None

    @property
    def n_paths(self) -> int:
        return int(self.max_drawdown_pct.shape[0])

    @property
    def n_trades(self) -> int:
        return int(self.trade_returns_pct.shape[0])

    @property
    def quantiles(self) -> pd.DataFrame:
        """5 / 50 / 95 % quantiles (numpy's linear rule): rows ``max_drawdown_pct`` and ``final_return_pct``."""
        q = [5.0, 50.0, 95.0]
        return pd.DataFrame([np.percentile(self.max_drawdown_pct, q), np.percentile(self.final_return_pct, q)],
                            index=["max_drawdown_pct", "final_return_pct"], columns=["5%", "50%", "95%"])


def _trade_returns(trades_or_backtest: Any, initial_capital: float | None) -> tuple[np.ndarray, float]:
    """Per-trade returns (%) on the balance before each trade, and the capital they compound from."""
    if isinstance(trades_or_backtest, BacktestResult):
        capital = float(trades_or_backtest.output.initial_capital if initial_capital is None else initial_capital)
        trades = trades_or_backtest.trades
    else:
        capital = 100.0 if initial_capital is None else float(initial_capital)
        trades = trades_or_backtest
    if not (math.isfinite(capital) and capital > 0):
        raise ConfigError(f"initial_capital must be a positive number, got {initial_capital!r}",
                          field="initial_capital")
    if isinstance(trades, pd.DataFrame):
        if "net_pnl" not in trades.columns:
            raise ConfigError("a trades table needs a 'net_pnl' column (as BacktestResult.trades)", field="trades")
        if "exit_time" in trades.columns:
            trades = trades.sort_values("exit_time", kind="stable")
        pnl = trades["net_pnl"].to_numpy(dtype=np.float64)
        before = capital + np.concatenate(([0.0], np.cumsum(pnl)[:-1]))
        if np.any(before <= 0):
            raise ConfigError("the balance falls to zero or below during the trades; their returns are undefined",
                              field="trades")
        returns = pnl / before * 100.0
    else:
        returns = _as_array(trades_or_backtest)
        if returns.ndim != 1:
            raise ConfigError("trade returns must be a 1-D sequence of percentages", field="trades")
    if not np.all(np.isfinite(returns)) or np.any(returns <= -100.0):
        raise ConfigError("trade returns must be finite and above -100 %", field="trades")
    return returns, capital


def _paths_stats(growth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max drawdown %, final return %) of paths of per-trade growth factors (rows), starting at 1."""
    balance = np.cumprod(growth, axis=1)
    peak = np.maximum(np.maximum.accumulate(balance, axis=1), 1.0)
    dd = ((peak - balance) / peak).max(axis=1, initial=0.0) * 100.0
    final = (balance[:, -1] - 1.0) * 100.0 if balance.shape[1] else np.zeros(balance.shape[0])
    return dd, final


def monte_carlo(trades_or_backtest: Any, n: int = 1000, seed: int | None = None,
                initial_capital: float | None = None) -> MonteCarloResult:
    """Bootstrap the trade sequence: ``n`` paths, each the same number of trades drawn with replacement.

    ``trades_or_backtest``: a :class:`~merlin_kit.backtest.BacktestResult`, a trades
    table with ``net_pnl`` (as ``BacktestResult.trades``; ordered by ``exit_time``
    when present), or a sequence of per-trade returns in % of the balance.  A trade's
    return is its net P&L ÷ the balance before it (``profit_pct`` is on the
    position's notional, not the account, so it is not used); compounding the
    original sequence from ``initial_capital`` (default: the backtest's, else 100)
    gives the backtest's final balance.  Each path compounds its draws from the
    capital; its maximum drawdown and final return are reported (percentages do not
    depend on the capital's size).  ``seed``: same seed, same paths
    (``numpy.random.default_rng``).  Vectorised over paths.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}", field="n")
    returns, capital = _trade_returns(trades_or_backtest, initial_capital)
    m = returns.shape[0]
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, m, size=(int(n), m)) if m else np.zeros((int(n), 0), dtype=np.int64)
    growth = 1.0 + returns / 100.0
    dd = np.empty(int(n))
    final = np.empty(int(n))
    chunk = max(1, _MC_CHUNK_CELLS // max(m, 1))
    for lo in range(0, int(n), chunk):
        hi = min(int(n), lo + chunk)
        dd[lo:hi], final[lo:hi] = _paths_stats(growth[indices[lo:hi]])
    actual_dd, actual_final = _paths_stats(growth[None, :])
    return MonteCarloResult(max_drawdown_pct=dd, final_return_pct=final, indices=indices, trade_returns_pct=returns,
                            actual_max_drawdown_pct=float(actual_dd[0]), actual_return_pct=float(actual_final[0]),
                            initial_capital=capital, seed=seed)
