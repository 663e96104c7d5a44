"""Metrics and composite score against hand computations of the spec's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merlin_kit.metrics import compute_metrics, month_starts
from merlin_kit.scoring import ScoreConfig, minmax_score, percentile_scores
from merlin_kit.strategies import StrategyOutput

DAY = 86400
JAN1_2025 = 1735689600


def output(net_pnl, balance, equity=None, capital=100.0):
    net = np.asarray(net_pnl, dtype=float)
    n = len(net)
    bal = np.asarray(balance, dtype=float)
    return StrategyOutput(
        np.ones(n, np.int8), np.zeros(n, np.int64), np.zeros(n, np.int64), np.ones(n), np.ones(n), np.ones(n),
        net, net.copy(), bal, np.asarray(equity if equity is not None else balance, dtype=float), capital,
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-4_000_000_000, 6_000_000_000), min_size=0, max_size=200))
def test_month_starts_match_numpy_calendar(raw):
    t = np.sort(np.asarray(raw, dtype=np.int64))
    if len(t) == 0:
        assert len(month_starts(t)) == 0
        return
    months = t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    expected = np.concatenate(([0], np.flatnonzero(np.diff(months) != 0) + 1))
    np.testing.assert_array_equal(month_starts(t), expected)


def test_drawdown_romad_recovery_and_trade_stats():
    bal = [100, 110, 99, 120, 90, 130]
    m = compute_metrics(output([10, -11, 21, -30, 40], bal), np.array([0]))
    assert m["net_profit_pct"] == pytest.approx(30.0)
    assert m["max_drawdown_pct"] == pytest.approx(25.0)  # 120 -> 90
    assert m["max_drawdown"] == pytest.approx(0.25 * 130)  # % of the highest balance
    assert m["romad"] == pytest.approx(30 / 25)
    assert m["recovery_factor"] == pytest.approx(30 / 32.5)
    assert (m["total_trades"], m["winning_trades"], m["losing_trades"]) == (5, 3, 2)
    assert m["win_rate"] == pytest.approx(60.0)
    assert m["profit_factor"] == pytest.approx(71 / 41)
    assert m["max_consecutive_losses"] == 1
    assert m["sqn"] is None  # needs >= 30 trades


def plain_curve_stats(balance, equity):
    """The spec's per-bar formulas, written out: drawdown at every bar, ulcer over the equity."""
    peak, max_dd = balance[0], 0.0
    for b in balance:
        peak = max(peak, b)
        if peak > 0:
            max_dd = max(max_dd, (peak - b) / peak * 100.0)
    eq_peak, sq = equity[0], 0.0
    for e in equity:
        eq_peak = max(eq_peak, e)
        sq += (e / eq_peak - 1.0) ** 2
    return max_dd, max(balance), math.sqrt(sq / len(equity)) * 100.0


# few distinct levels: ties, repeated troughs and new peaks at equal values all occur
level = st.sampled_from([50.0, 80.5, 99.0, 100.0, 100.0, 101.25, 120.0, 0.5, 333.3])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(level, level), min_size=1, max_size=120))
def test_one_pass_drawdown_and_ulcer_equal_the_per_bar_formulas(bars):
    balance = np.array([b for b, _ in bars])
    equity = np.array([e for _, e in bars])
    m = compute_metrics(output([], balance, equity), np.array([0]))
    max_dd, max_balance, ulcer = plain_curve_stats(balance.tolist(), equity.tolist())
    assert m["max_drawdown_pct"] == max_dd  # exactly: evaluated only at new lows, same expression
    assert m["max_drawdown"] == max_dd / 100.0 * max_balance
    assert m["ulcer_index"] == ulcer


def test_profit_factor_edge_cases_and_none_without_trades():
    assert compute_metrics(output([5, 3], [100, 105, 108]), np.array([0]))["profit_factor"] == 999.0
    assert compute_metrics(output([0.0], [100, 100]), np.array([0]))["profit_factor"] == 1.0
    m = compute_metrics(output([], [100, 100, 100]), np.array([0]))
    assert m["profit_factor"] is None and m["win_rate"] is None and m["sharpe_ratio"] is None
    assert m["romad"] == 0.0  # no drawdown and no profit: 0 x 100
    assert m["recovery_factor"] is None


def test_romad_without_drawdown_and_consecutive_losses():
    m = compute_metrics(output([2, 3], [100, 102, 105]), np.array([0]))
    assert m["max_drawdown_pct"] == 0.0 and m["romad"] == pytest.approx(500.0)
    m = compute_metrics(output([-1, 0, -2, 1, -1], [100, 99, 99, 97, 98, 97]), np.array([0]))
    assert m["max_consecutive_losses"] == 3  # net <= 0 counts as a loss in a row


def test_monthly_sharpe_sortino_consistency_ulcer():
    # four months of 10 bars each; equity at month starts 100, 110, 99, 108.9, last 119.79
    t = np.array([JAN1_2025 + d * DAY for d in list(range(0, 10)) + list(range(31, 41)) + list(range(59, 69)) + list(range(90, 100))])
    eq = np.concatenate([np.linspace(100, 109, 10), np.linspace(110, 100, 10), np.linspace(99, 108, 10), np.linspace(108.9, 119.79, 10)])
    m = compute_metrics(output([19.79], eq, eq), month_starts(t))
    r = np.array([10.0, -10.0, 10.0, 10.0])
    rf = 2 / 12
    assert m["sharpe_ratio"] == pytest.approx((r.mean() - rf) / r.std())
    down = r[r < rf] - rf
    assert m["sortino_ratio"] is None  # a single downside month has std 0
    assert m["consistency_score"] == pytest.approx(75.0)
    peak = np.maximum.accumulate(eq)
    assert m["ulcer_index"] == pytest.approx(math.sqrt(np.mean((eq / peak - 1) ** 2)) * 100)
    assert len(down) == 1


def test_sqn_with_30_trades():
    rng = np.random.default_rng(1)
    net = rng.normal(0.5, 2, 30)
    bal = 100 + np.concatenate([[0], np.cumsum(net)])
    m = compute_metrics(output(net, bal), np.array([0]))
    assert m["sqn"] == pytest.approx(math.sqrt(30) * net.mean() / net.std(ddof=1))


def test_minmax_score_bounds_inversion_and_missing():
    metrics = {"romad": 5.0, "sharpe_ratio": 1.0, "profit_factor": 10.0, "ulcer_index": 5.0, "sqn": None, "consistency_score": 60.0}
    # romad 50, sharpe 50, pf clamped 100, ulcer inverted 75, sqn missing 50, consistency 60
    expected = (0.25 * 50 + 0.20 * 50 + 0.20 * 100 + 0.15 * 75 + 0.10 * 50 + 0.10 * 60) / 1.0
    assert minmax_score(metrics) == pytest.approx(expected)
    only = ScoreConfig(weights={"romad": 1.0})
    assert minmax_score({"romad": 20.0}, only) == 100.0
    assert minmax_score({"romad": -3.0}, only) == 0.0


def test_percentile_scores():
    rows = [{"romad": v} for v in (1.0, 2.0, 3.0, None)]
    cfg = ScoreConfig(weights={"romad": 1.0}, normalization="percentile")
    assert percentile_scores(rows, cfg) == [0.0, pytest.approx(100 / 3), pytest.approx(200 / 3), 50.0]


def test_month_starts_across_century_and_leap_days():
    """Every day around 1900, 2000 and 2100 (century years: leap only in 2000) and a 400-year cycle edge:
    the month boundaries are numpy's. Random timestamps rarely land on these days."""
    days = []
    for year in (1900, 2000, 2100, 2096, 2004):
        start = np.datetime64(f"{year - 1}-12-01", "s").astype(np.int64)
        days.extend(start + DAY * np.arange(0, 130))
    for t in (np.array(sorted(set(days)), dtype=np.int64), np.array(days[130:260], dtype=np.int64)):
        months = t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
        expected = np.concatenate(([0], np.flatnonzero(np.diff(months) != 0) + 1))
        np.testing.assert_array_equal(month_starts(t), expected)


def test_trade_counts_without_losses_and_break_even_trades():
    m = compute_metrics(output([1, 2, 3], [100, 101, 103, 106]), np.array([0]))
    assert m["max_consecutive_losses"] == 0 and m["losing_trades"] == 0 and m["profit_factor"] == 999.0
    flat = compute_metrics(output([0.0, 0.0], [100, 100, 100]), np.array([0]))
    assert flat["profit_factor"] == 1.0  # no gross win, no gross loss
    assert flat["winning_trades"] == 0 and flat["losing_trades"] == 0 and flat["max_consecutive_losses"] == 2
    one = compute_metrics(output([5.0], [100, 105]), np.array([0]))
    assert one["win_rate"] == 100.0 and one["profit_factor"] == 999.0 and one["total_trades"] == 1
    small = compute_metrics(output([0.25, 0.5], [100, 100.25, 100.75]), np.array([0]))
    assert small["profit_factor"] == 999.0  # any gross win without a loss, however small


def test_monthly_ratios_need_a_trade_and_consistency_needs_three_months():
    t = np.array([JAN1_2025 + d * DAY for d in (0, 5, 31, 36, 59, 64)])  # three months, two bars each
    eq = np.array([100.0, 100.2, 100.4, 100.6, 100.5, 100.0])  # +0.4 %, +0.1 %, -0.5 %
    starts = month_starts(t)
    none = compute_metrics(output([], eq, eq), starts)  # the same curve without a trade
    assert none["sharpe_ratio"] is None and none["sortino_ratio"] is None and none["consistency_score"] is None
    m = compute_metrics(output([0.0], eq, eq), starts)
    # two of three months gained (by less than 1 % each): consistency counts any gain
    assert m["consistency_score"] == pytest.approx(200.0 / 3)
    assert m["sharpe_ratio"] is not None
    two = compute_metrics(output([0.0], eq[:4], eq[:4]), month_starts(t[:4]))
    assert two["consistency_score"] is None and two["sharpe_ratio"] is not None
