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


@njit(cache=True, nogil=True)
def _days_from_civil(y, m, d):  # pragma: no cover - compiled
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, nogil=True)
def _civil_year_month(days):  # pragma: no cover - compiled
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    return y, m


@njit(cache=True, nogil=True)
def _month_starts_kernel(time):  # pragma: no cover - compiled
    n = time.shape[0]
    out = np.empty(n, np.int64)
    k = 0
    next_start = np.iinfo(np.int64).min
    for i in range(n):
        if time[i] >= next_start:
            out[k] = i
            k += 1
            y, m = _civil_year_month(time[i] // 86400)
            if m == 12:
                y += 1
                m = 1
            else:
                m += 1
            next_start = _days_from_civil(y, m, 1) * 86400
    return out[:k].copy()


def month_starts(time: np.ndarray) -> np.ndarray:
    """Indices of the first bar of each calendar month (UTC) in ``time`` (UNIX seconds, sorted)."""
    return _month_starts_kernel(np.ascontiguousarray(time, dtype=np.int64))


@njit(cache=True, nogil=True)
def _curve_stats(balance, equity, starts):  # pragma: no cover - compiled
    """Max drawdown % of the balance, its peak, the ulcer index of the equity and monthly returns.

    One pass. The drawdown ``(peak - b) / peak * 100`` is evaluated only at a new low
    since the last peak: for a fixed peak it can only grow as ``b`` falls (rounding is
    monotone), so the maximum is the same number the per-bar formula gives.
    """
    n = balance.shape[0]
    peak = balance[0] if n > 0 else 0.0
    trough = peak
    max_dd_pct = 0.0
    eq_peak = equity[0] if n > 0 else 0.0
    sq = 0.0
    for i in range(n):
        b = balance[i]
        if b > peak:
            peak = b
            trough = b
        elif b < trough:
            trough = b
            if peak > 0:
                dd = (peak - b) / peak * 100.0
                if dd > max_dd_pct:
                    max_dd_pct = dd
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
    return max_dd_pct, peak, ulcer, monthly  # the last peak is the highest balance


def monthly_returns(equity: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Monthly returns in % of a mark-to-market equity curve (spec "Monthly returns").

    ``starts`` comes from :func:`month_starts`.  The same kernel as
    :func:`compute_metrics`, so the returns behind ``sharpe_ratio`` are exactly
    these (the spec's "only when there is at least one trade" is the caller's).
    """
    eq = np.ascontiguousarray(equity, dtype=np.float64)
    return _curve_stats(eq, eq, np.ascontiguousarray(starts, dtype=np.int64))[3]


@njit(cache=True, nogil=True)
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
