"""Per-run metrics, exactly as defined in ``specs/METRICS_AND_INDICATORS.md``.

Metrics are computed for every trial of an optimisation, so the curve work
(drawdown, ulcer, monthly returns) is one numba pass and the month boundaries
are computed once per window (:func:`month_starts`).  Values are plain Python
``float``/``int`` or ``None`` where a metric is undefined, never numpy scalars,
so they serialise to JSON and Optuna user attrs as they are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from .strategies.base import StrategyOutput

RISK_FREE_MONTHLY_PCT = 2.0 / 12.0
METRIC_NAMES: tuple[str, ...] = (
    "net_profit_pct", "max_drawdown_pct", "max_drawdown", "total_trades", "winning_trades", "losing_trades",
    "win_rate", "max_consecutive_losses", "profit_factor", "romad", "recovery_factor", "sharpe_ratio",
    "sortino_ratio", "consistency_score", "ulcer_index", "sqn",
)
#: Metrics for which a lower value is better (an optimiser minimises them).
LOWER_IS_BETTER: frozenset[str] = frozenset({"max_drawdown_pct", "max_drawdown", "ulcer_index", "losing_trades", "max_consecutive_losses"})


def month_starts(time: np.ndarray) -> np.ndarray:
    """Indices of the first bar of each calendar month (UTC) in ``time`` (UNIX seconds, sorted)."""
    if time.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    months = time.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return np.concatenate(([0], np.flatnonzero(np.diff(months) != 0) + 1)).astype(np.int64)


@njit(cache=True)
def _curve_stats(balance, equity, starts):  # pragma: no cover - compiled
    n = balance.shape[0]
    peak = balance[0]
    max_dd_pct = 0.0
    max_balance = balance[0]
    for i in range(n):
        b = balance[i]
        if b > peak:
            peak = b
        if b > max_balance:
            max_balance = b
        if peak > 0:
            dd = (peak - b) / peak * 100.0
            if dd > max_dd_pct:
                max_dd_pct = dd
    eq_peak = equity[0]
    sq = 0.0
    for i in range(n):
        e = equity[i]
        if e > eq_peak:
            eq_peak = e
        r = e / eq_peak - 1.0
        sq += r * r
    ulcer = math.sqrt(sq / n) * 100.0 if n > 0 else math.nan
    m = starts.shape[0]
    monthly = np.empty(m, np.float64)
    for k in range(m):
        first = equity[starts[k]]
        last = equity[starts[k + 1]] if k + 1 < m else equity[n - 1]
        monthly[k] = (last / first - 1.0) * 100.0
    return max_dd_pct, max_balance, ulcer, monthly


@njit(cache=True)
def _trade_stats(net):  # pragma: no cover - compiled
    wins = 0
    losses = 0
    gross_win = 0.0
    gross_loss = 0.0
    run = 0
    max_run = 0
    total = 0.0
    for x in net:
        total += x
        if x > 0:
            wins += 1
            gross_win += x
        elif x < 0:
            losses += 1
            gross_loss += x
        if x <= 0:
            run += 1
            if run > max_run:
                max_run = run
        else:
            run = 0
    return wins, losses, gross_win, gross_loss, max_run


def _population_std(x: np.ndarray) -> float:
    return float(np.std(x)) if x.shape[0] else math.nan


def compute_metrics(output: StrategyOutput, starts: np.ndarray) -> dict[str, Any]:
    """Every metric of the spec for one run; ``starts`` comes from :func:`month_starts`."""
    capital = float(output.initial_capital)
    balance, equity = output.balance, output.equity
    n_trades = output.n_trades
    max_dd_pct, max_balance, ulcer, monthly = _curve_stats(balance, equity, starts)
    last_balance = float(balance[-1]) if balance.shape[0] else capital
    net_profit_cash = last_balance - capital
    net_profit_pct = net_profit_cash / capital * 100.0
    max_dd_cash = max_dd_pct / 100.0 * max_balance

    wins, losses, gross_win, gross_loss, max_consec = _trade_stats(output.net_pnl)
    if n_trades == 0:
        profit_factor = None
        win_rate = None
    else:
        win_rate = wins / n_trades * 100.0
        if losses == 0:
            profit_factor = 999.0 if gross_win > 0 else 1.0
        else:
            profit_factor = gross_win / abs(gross_loss)

    if max_dd_pct < 1e-9:
        romad = net_profit_pct * 100.0 if net_profit_pct >= 0 else 0.0
    else:
        romad = net_profit_pct / max_dd_pct
    recovery_factor = net_profit_cash / max_dd_cash if max_dd_cash > 0 else None

    sharpe = sortino = consistency = None
    if n_trades > 0 and monthly.shape[0] > 0:
        excess = monthly - RISK_FREE_MONTHLY_PCT
        mean_excess = float(np.mean(monthly)) - RISK_FREE_MONTHLY_PCT
        if monthly.shape[0] >= 2:
            std = _population_std(monthly)
            if std != 0:
                sharpe = mean_excess / std
            downside = excess[monthly < RISK_FREE_MONTHLY_PCT]
            if downside.shape[0] > 0:
                dstd = _population_std(downside)
                if dstd != 0:
                    sortino = mean_excess / dstd
        if monthly.shape[0] >= 3:
            consistency = float(np.count_nonzero(monthly > 0)) / monthly.shape[0] * 100.0

    sqn = None
    if n_trades >= 30:
        sd = float(np.std(output.net_pnl, ddof=1))
        if sd != 0:
            sqn = math.sqrt(n_trades) * float(np.mean(output.net_pnl)) / sd

    return {
        "net_profit_pct": float(net_profit_pct),
        "max_drawdown_pct": float(max_dd_pct),
        "max_drawdown": float(max_dd_cash),
        "total_trades": int(n_trades),
        "winning_trades": int(wins),
        "losing_trades": int(losses),
        "win_rate": None if win_rate is None else float(win_rate),
        "max_consecutive_losses": int(max_consec),
        "profit_factor": None if profit_factor is None else float(profit_factor),
        "romad": float(romad),
        "recovery_factor": None if recovery_factor is None else float(recovery_factor),
        "sharpe_ratio": None if sharpe is None else float(sharpe),
        "sortino_ratio": None if sortino is None else float(sortino),
        "consistency_score": consistency,
        "ulcer_index": float(ulcer) if not math.isnan(ulcer) else None,
        "sqn": None if sqn is None else float(sqn),
    }
