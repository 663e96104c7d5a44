"""The stitched out-of-sample result (``merlin_kit.walkforward._stitch``) on hand-made windows: equity
chaining, drawdown, trade counts, WFE and OOS win rate, and the trade list, each checked by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from merlin_kit.walkforward._stitch import TRADE_COLUMNS, stitch, stitched_trades, walk_forward_efficiency


def window(number, equity, *, oos_profit=None, is_profit=None, trades=0, trade_rows=None):
    idx = pd.date_range("2025-01-01", periods=len(equity), freq="D", tz="UTC") + pd.Timedelta(days=10 * number)
    frame = pd.DataFrame(trade_rows or [], columns=list(TRADE_COLUMNS))
    return SimpleNamespace(
        number=number,
        oos_equity=pd.Series(equity, index=idx, dtype=float),
        oos_metrics={"net_profit_pct": oos_profit, "total_trades": trades},
        is_metrics=None if is_profit is None else {"net_profit_pct": is_profit},
        oos_trades=frame,
    )


def test_equity_is_chained_from_100_and_metrics_follow_it():
    w1 = window(0, [1000.0, 1100.0, 990.0], oos_profit=-1.0, is_profit=10.0, trades=2)  # 100 -> 110 -> 99
    w2 = window(1, [50.0, 60.0], oos_profit=20.0, is_profit=5.0, trades=3)                # 99 -> 118.8
    r = stitch([w1, w2], is_days=30, oos_days=10)
    assert r.equity.name == "equity"
    assert r.equity.tolist() == pytest.approx([100.0, 110.0, 99.0, 118.8])  # the second window's first point dropped
    m = r.metrics
    assert m["net_profit_pct"] == pytest.approx(18.8)
    assert m["max_drawdown_pct"] == pytest.approx((110.0 - 99.0) / 110.0 * 100.0)
    assert m["total_trades"] == 5
    assert m["oos_win_rate"] == 50.0  # one window of two made money
    # WFE: OOS mean 9.5 % per 10 days, IS mean 7.5 % per 30 days, annualised
    assert m["wfe"] == pytest.approx((9.5 * 365 / 10) / (7.5 * 365 / 30) * 100.0)


def test_empty_windows_are_skipped_and_no_window_is_flat():
    w1 = window(0, [], oos_profit=0.0, is_profit=1.0)
    w2 = window(1, [10.0, 12.0], oos_profit=20.0, is_profit=1.0, trades=1)
    r = stitch([w1, w2], is_days=10, oos_days=10)
    assert r.equity.tolist() == pytest.approx([100.0, 120.0])
    assert r.metrics["oos_win_rate"] == 50.0 and r.metrics["total_trades"] == 1
    flat = stitch([], is_days=10, oos_days=10)
    assert flat.equity.tolist() == [100.0]
    assert flat.metrics == {"net_profit_pct": 0.0, "max_drawdown_pct": 0.0, "total_trades": 0, "wfe": 0.0,
                            "oos_win_rate": 0.0}


def test_missing_metrics_count_as_zero():
    w = window(0, [1.0, 1.0], oos_profit=None, is_profit=None, trades=None)
    r = stitch([w], is_days=5, oos_days=5)
    assert r.metrics["total_trades"] == 0 and r.metrics["oos_win_rate"] == 0.0 and r.metrics["wfe"] == 0.0
    assert r.metrics["max_drawdown_pct"] == 0.0 and r.metrics["net_profit_pct"] == 0.0


def test_walk_forward_efficiency_by_hand():
    assert walk_forward_efficiency([10.0, 20.0], [3.0, 1.0], is_days=60, oos_days=20) == pytest.approx(
        (2.0 * 365 / 20) / (15.0 * 365 / 60) * 100.0)
    assert walk_forward_efficiency([-10.0], [5.0], is_days=10, oos_days=10) == pytest.approx(-50.0)
    # an IS figure of 0: 0 when OOS <= 0, else 100
    assert walk_forward_efficiency([0.0], [0.0], is_days=10, oos_days=10) == 0.0
    assert walk_forward_efficiency([0.0], [-1.0], is_days=10, oos_days=10) == 0.0
    assert walk_forward_efficiency([0.0], [1.0], is_days=10, oos_days=10) == 100.0
    assert walk_forward_efficiency([], [], is_days=10, oos_days=10) == 0.0
    assert walk_forward_efficiency([], [2.0], is_days=10, oos_days=10) == 100.0
    assert walk_forward_efficiency([2.0], [], is_days=10, oos_days=10) == 0.0


def _trade(entry: str, pnl: float) -> dict:
    t = pd.Timestamp(entry, tz="UTC")
    return {"direction": "long", "entry_time": t, "exit_time": t + pd.Timedelta(hours=1), "entry_price": 1.0,
            "exit_price": 1.0 + pnl, "size": 1.0, "net_pnl": pnl, "profit_pct": pnl * 100}


def test_stitched_trades_in_time_order_with_their_window():
    w0 = window(0, [1.0], trade_rows=[_trade("2025-01-03", 1.0), _trade("2025-01-01", 2.0)])
    w1 = window(1, [1.0], trade_rows=[_trade("2025-01-02", 3.0), _trade("2025-01-01", 4.0)])
    w2 = window(2, [1.0])  # no trades
    t = stitched_trades([w1, w0, w2])
    assert list(t.columns) == ["window", *TRADE_COLUMNS]
    # by entry time, then by window number on equal entry times
    assert t["net_pnl"].tolist() == [2.0, 4.0, 3.0, 1.0]
    assert t["window"].tolist() == [0, 1, 1, 0]
    empty = stitched_trades([w2])
    assert len(empty) == 0 and list(empty.columns) == [*TRADE_COLUMNS, "window"]
    assert str(empty["entry_time"].dtype) == "datetime64[ns, UTC]" and empty["direction"].dtype == object
    assert empty["net_pnl"].dtype == float


def test_missing_is_profit_counts_zero_in_the_wfe_and_small_gains_are_wins():
    # no IS metrics (or no IS profit) is an IS profit of 0: WFE 100 when the OOS made money
    for is_metrics in (None, {"net_profit_pct": None}):
        w = window(0, [1.0, 1.05], oos_profit=5.0, trades=1)
        w.is_metrics = is_metrics
        assert stitch([w], is_days=5, oos_days=5).metrics["wfe"] == 100.0
    # a window that gained half a percent is a winning window
    small = window(0, [1.0, 1.005], oos_profit=0.5, is_profit=1.0, trades=1)
    loss = window(1, [1.0, 0.99], oos_profit=-1.0, is_profit=1.0, trades=1)
    assert stitch([small, loss], is_days=5, oos_days=5).metrics["oos_win_rate"] == 50.0
    # an annualised IS figure of exactly 1 % is an ordinary ratio
    assert walk_forward_efficiency([1.0], [2.0], is_days=365, oos_days=365) == pytest.approx(200.0)


def test_wfe_with_no_is_profit_and_a_small_oos_gain_is_100():
    assert walk_forward_efficiency([0.0], [0.5], is_days=365, oos_days=365) == 100.0  # OOS 0.5 %/year > 0
