"""S04 StochRSI: hand-checked scenarios per rule, plus a pure-Python re-implementation cross-check.

The hand scenarios drive the numba kernel directly with hand-made K/D/lowestLow/highestHigh
arrays, so every cross and every swing update is exactly where the test puts it. Defaults of
those scenarios: close 100, low 95, high 105, lowestLow 90, highestHigh 110, capital 1000,
risk 1 %, contract size 0.5, no commission -> a long entered at 100 has stop 90, distance 10,
risk cash 10, size floor(1.0 / 0.5) * 0.5 = 1.0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import merlin_kit
from merlin_kit import backtest, get_strategy, list_strategies
from merlin_kit.data import PreparedData, load_ohlcv, prepare, sample
from merlin_kit.errors import ParameterError
from merlin_kit.strategies import S04StochRSI
from merlin_kit.strategies.s04_stochrsi import s04_kernel
from tests.conftest import LINK_CSV

NAN = float("nan")
REL = 1e-9


# ----------------------------------------------------------------------------------------------
# helpers for hand-made scenarios


def series(n: int, base: float, changes: dict[int, float] | None = None) -> np.ndarray:
    """``n`` copies of ``base`` with single-bar ``changes`` {bar: value}."""
    a = np.full(n, float(base))
    for i, v in (changes or {}).items():
        a[i] = v
    return a


def kd(n: int, points: dict[int, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """K and D series: from each bar in ``points`` on, (K, D) holds that value until the next point.

    Bars before the first point are (50, 50): no cross, no reset with the default levels.
    """
    k = np.full(n, 50.0)
    d = np.full(n, 50.0)
    marks = sorted(points)
    for j, start in enumerate(marks):
        stop = marks[j + 1] if j + 1 < len(marks) else n
        k[start:stop], d[start:stop] = points[start]
    return k, d


def bull_cross_at(n: int, b: int, then: tuple[float, float] = (10.0, 8.0)) -> tuple[np.ndarray, np.ndarray]:
    """A bull cross in oversold on bar ``b`` (K 5 -> 10 through D 8), K/D staying at ``then``."""
    return kd(n, {b - 1: (5.0, 8.0), b: then})


def bear_cross_at(n: int, b: int, then: tuple[float, float] = (80.0, 85.0)) -> tuple[np.ndarray, np.ndarray]:
    """A bear cross in overbought on bar ``b`` (K 90 -> 80 through D 85), K/D staying at ``then``."""
    return kd(n, {b - 1: (90.0, 85.0), b: then})


class Run:
    """Kernel result with named fields."""

    def __init__(self, result: tuple[np.ndarray, ...]) -> None:
        (self.direction, self.entry_idx, self.exit_idx, self.entry_price, self.exit_price, self.size,
         self.net_pnl, self.profit_pct, self.balance, self.equity) = result

    @property
    def n(self) -> int:
        return int(self.direction.shape[0])

    def trades(self) -> list[tuple[int, int, int]]:
        return [(int(a), int(b), int(c)) for a, b, c in zip(self.direction, self.entry_idx, self.exit_idx)]


def kern(
    k, d, *, close=None, low=None, high=None, ll=None, hh=None, n=None, tsi=0, ob=75.0, os_=15.0, confirm=1,
    risk=1.0, cs=0.5, comm=0.0, cap=1000.0,
) -> Run:
    n = len(k) if n is None else n
    close = series(n, 100.0) if close is None else np.asarray(close, dtype=np.float64)
    low = series(n, 95.0) if low is None else np.asarray(low, dtype=np.float64)
    high = series(n, 105.0) if high is None else np.asarray(high, dtype=np.float64)
    ll = series(n, 90.0) if ll is None else np.asarray(ll, dtype=np.float64)
    hh = series(n, 110.0) if hh is None else np.asarray(hh, dtype=np.float64)
    return Run(
        s04_kernel(high, low, close, np.asarray(k, float), np.asarray(d, float), ll, hh, tsi, ob, os_, confirm, risk, cs, comm, cap)
    )


LONG, SHORT = 1, -1


# ----------------------------------------------------------------------------------------------
# 1. setup flags


def test_bull_cross_in_oversold_sets_long_setup():
    n = 10
    k, d = bull_cross_at(n, 3)
    r = kern(k, d, low=series(n, 95, {8: 80}))  # stop hit on bar 8
    assert r.trades() == [(LONG, 3, 8)]  # entered on the cross bar, not before
    assert r.entry_price[0] == 100.0 and r.exit_price[0] == 90.0 and r.size[0] == 1.0
    assert r.net_pnl[0] == pytest.approx(-10.0, rel=1e-12)


def test_touching_then_crossing_counts_as_cross():
    n = 10
    k, d = kd(n, {2: (8.0, 8.0), 3: (10.0, 8.0)})  # K[prev] == D[prev]
    assert kern(k, d, low=series(n, 95, {8: 80})).trades() == [(LONG, 3, 8)]


@pytest.mark.parametrize(
    "points",
    [
        {0: (10.0, 8.0)},  # K above D all along: no cross
        {2: (20.0, 25.0), 3: (30.0, 25.0)},  # cross above osLevel
        {2: (5.0, 14.0), 3: (15.0, 14.0)},  # K == osLevel is not "K < osLevel"
        {2: (5.0, 8.0), 3: (8.0, 8.0)},  # K == D is not "K > D"
    ],
)
def test_no_long_setup_without_a_strict_bull_cross_in_oversold(points):
    n = 10
    k, d = kd(n, points)
    r = kern(k, d, low=series(n, 95, {8: 80}))
    assert r.n == 0
    np.testing.assert_array_equal(r.balance, 1000.0)
    np.testing.assert_array_equal(r.equity, 1000.0)


def test_bear_cross_in_overbought_sets_short_setup():
    n = 10
    k, d = bear_cross_at(n, 3)
    r = kern(k, d, high=series(n, 105, {8: 120}))  # short stop hit on bar 8
    assert r.trades() == [(SHORT, 3, 8)]
    assert r.entry_price[0] == 100.0 and r.exit_price[0] == 110.0 and r.size[0] == 1.0
    assert r.net_pnl[0] == pytest.approx(-10.0, rel=1e-12)


@pytest.mark.parametrize(
    "points",
    [
        {2: (70.0, 60.0), 3: (65.0, 70.0)},  # cross below obLevel
        {2: (90.0, 75.0), 3: (75.0, 76.0)},  # K == obLevel is not "K > obLevel"
    ],
)
def test_no_short_setup_outside_overbought(points):
    n = 10
    k, d = kd(n, points)
    assert kern(k, d, high=series(n, 105, {8: 120})).n == 0


def test_reset_os_clears_long_setup():
    n = 10
    # trend confirmed only on bar 5 (confirmBars 6: counts 1..6 on bars 0..5)
    k, d = bull_cross_at(n, 3)
    assert kern(k, d, confirm=6, low=series(n, 95, {8: 80})).trades() == [(LONG, 5, 8)]
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 4: (20.0, 8.0)})  # K leaves oversold on bar 4
    assert kern(k, d, confirm=6, low=series(n, 95, {8: 80})).n == 0
    # K exactly at osLevel is not a reset; rising above it from there is
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 4: (15.0, 8.0)})
    assert kern(k, d, confirm=6, low=series(n, 95, {8: 80})).trades() == [(LONG, 5, 8)]
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 4: (15.0, 8.0), 5: (15.5, 8.0)})
    assert kern(k, d, confirm=6, low=series(n, 95, {8: 80})).n == 0


def test_reset_ob_clears_short_setup():
    n = 10
    k, d = bear_cross_at(n, 3)
    assert kern(k, d, confirm=6, high=series(n, 105, {8: 120})).trades() == [(SHORT, 5, 8)]
    k, d = kd(n, {2: (90.0, 85.0), 3: (80.0, 85.0), 4: (70.0, 85.0)})  # K leaves overbought on bar 4
    assert kern(k, d, confirm=6, high=series(n, 105, {8: 120})).n == 0


def test_setup_survives_until_reset_and_a_new_cross_sets_it_again():
    n = 14
    # cross on 3, reset on 5, a new cross on 9: trend confirmed from bar 0, so entries on 3 and 9
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 5: (20.0, 8.0), 8: (5.0, 8.0), 9: (10.0, 8.0)})
    low = series(n, 95, {4: 80, 12: 80})
    r = kern(k, d, low=low)
    assert r.trades() == [(LONG, 3, 4), (LONG, 9, 12)]


def test_missing_k_or_d_means_no_cross():
    n = 10
    k, d = bull_cross_at(n, 3)
    k[2] = NAN  # K[prev] missing on the cross bar
    assert kern(k, d, low=series(n, 95, {8: 80})).n == 0
    k, d = bull_cross_at(n, 3)
    d[3] = NAN
    assert kern(k, d, low=series(n, 95, {8: 80})).n == 0
    # leading missing values (warm-up of K/D) are fine once both bars exist
    k, d = bull_cross_at(n, 3)
    k[:2] = NAN
    d[:2] = NAN
    assert kern(k, d, low=series(n, 95, {8: 80})).trades() == [(LONG, 3, 8)]


# ----------------------------------------------------------------------------------------------
# 2. swing low / swing high tracking


def test_swing_low_confirmed_after_confirm_bars_higher_lows():
    n = 10
    k, d = bull_cross_at(n, 1)  # long setup from bar 1
    # swing low 90 from bar 0; lows 95 > 90 count 1, 2, 3 on bars 0, 1, 2
    r = kern(k, d, confirm=3, low=series(n, 95, {8: 80}))
    assert r.trades() == [(LONG, 2, 8)]
    # a low equal to the swing low does not count
    r = kern(k, d, confirm=3, low=series(n, 95, {1: 90, 8: 80}))
    assert r.trades() == [(LONG, 3, 8)]


def test_low_below_swing_low_resets_count():
    n = 10
    k, d = bull_cross_at(n, 1)
    # bar 1: low 85 < swing 90 -> swing 85, count 0; bar 2: lowestLow 90 differs -> swing 90, count 0,
    # then 95 > 90 -> 1; bars 3, 4 -> 2, 3: trend confirmed on bar 4
    r = kern(k, d, confirm=3, low=series(n, 95, {1: 85, 8: 80}))
    assert r.trades() == [(LONG, 4, 8)]
    assert r.exit_price[0] == 90.0


def test_new_lowest_low_resets_count_and_becomes_the_stop():
    n = 10
    k, d = bull_cross_at(n, 1)
    ll = series(n, 90.0)
    ll[2:] = 92.0  # lowestLow changes on bar 2: swing 92, count 0 -> 1 (bar 2), 2, 3 (bar 4)
    r = kern(k, d, confirm=3, ll=ll, low=series(n, 95, {8: 80}))
    assert r.trades() == [(LONG, 4, 8)]
    assert r.exit_price[0] == 92.0  # stop = swing low at entry
    assert r.size[0] == 1.0  # risk 10 / distance 8 = 1.25 units -> floor(2.5) * 0.5


def test_swing_high_mirrors_swing_low():
    n = 10
    k, d = bear_cross_at(n, 1)
    r = kern(k, d, confirm=3, high=series(n, 105, {8: 120}))
    assert r.trades() == [(SHORT, 2, 8)]
    r = kern(k, d, confirm=3, high=series(n, 105, {1: 115, 8: 120}))  # high above the swing high resets
    assert r.trades() == [(SHORT, 4, 8)]
    hh = series(n, 110.0)
    hh[2:] = 108.0
    r = kern(k, d, confirm=3, hh=hh, high=series(n, 105, {8: 120}))
    assert r.trades() == [(SHORT, 4, 8)]
    assert r.exit_price[0] == 108.0


def test_trend_flag_needs_the_swing_on_the_same_side():
    # long setup but the trend is never confirmed (every low equals the swing low): no trade
    n = 10
    k, d = bull_cross_at(n, 3)
    assert kern(k, d, low=series(n, 90.0), confirm=1).n == 0


# ----------------------------------------------------------------------------------------------
# 3. entries and exits


def test_long_entry_at_close_with_stop_at_swing_low():
    n = 10
    k, d = bull_cross_at(n, 3)
    close = series(n, 100.0, {3: 101.5})
    r = kern(k, d, close=close, low=series(n, 95, {7: 89}))
    assert r.trades() == [(LONG, 3, 7)]
    assert r.entry_price[0] == 101.5
    assert r.exit_price[0] == 90.0  # the stop, not the low (89)
    # distance 11.5, risk cash 10 -> 0.8696 units -> floor(1.739) * 0.5 = 0.5
    assert r.size[0] == 0.5
    assert r.net_pnl[0] == pytest.approx((90.0 - 101.5) * 0.5, rel=1e-12)
    assert r.profit_pct[0] == pytest.approx((90.0 - 101.5) * 0.5 / (101.5 * 0.5) * 100.0, rel=1e-12)


def test_short_entry_at_close_with_stop_at_swing_high():
    n = 10
    k, d = bear_cross_at(n, 3)
    close = series(n, 100.0, {3: 98.0})
    r = kern(k, d, close=close, high=series(n, 105, {7: 130}))
    assert r.trades() == [(SHORT, 3, 7)]
    assert r.entry_price[0] == 98.0 and r.exit_price[0] == 110.0
    assert r.size[0] == 0.5  # risk 10 / distance 12 = 0.833 -> floor(1.67) * 0.5
    assert r.net_pnl[0] == pytest.approx(-6.0, rel=1e-12)


def test_stop_exit_when_low_touches_stop():
    n = 10
    k, d = bull_cross_at(n, 3)
    r = kern(k, d, low=series(n, 95, {6: 90.0}))  # low == stop
    assert r.trades() == [(LONG, 3, 6)]
    assert r.exit_price[0] == 90.0
    k, d = bear_cross_at(n, 3)
    r = kern(k, d, high=series(n, 105, {6: 110.0}))  # high == stop
    assert r.trades() == [(SHORT, 3, 6)]
    assert r.exit_price[0] == 110.0


def test_long_exits_at_close_on_bear_cross_in_overbought():
    n = 12
    # long from the bull cross on 3; K rallies (bar 6) and crosses down in overbought on bar 7
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (90.0, 85.0), 7: (80.0, 85.0), 8: (50.0, 50.0)})
    close = series(n, 100.0, {7: 104.0})
    r = kern(k, d, close=close)
    assert r.trades() == [(LONG, 3, 7)]
    assert r.exit_price[0] == 104.0
    assert r.net_pnl[0] == pytest.approx(4.0, rel=1e-12)


def test_short_exits_at_close_on_bull_cross_in_oversold():
    n = 12
    k, d = kd(n, {2: (90.0, 85.0), 3: (80.0, 85.0), 6: (5.0, 8.0), 7: (10.0, 8.0), 8: (50.0, 50.0)})
    close = series(n, 100.0, {7: 96.0})
    r = kern(k, d, close=close)
    assert r.trades() == [(SHORT, 3, 7)]
    assert r.exit_price[0] == 96.0
    assert r.net_pnl[0] == pytest.approx(4.0, rel=1e-12)


def test_cross_outside_the_zone_does_not_exit():
    n = 12
    # long open; K crosses down through D at 60 (below obLevel): no exit, the position stays open
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (65.0, 55.0), 7: (60.0, 62.0)})
    r = kern(k, d)
    assert r.n == 0
    # a bull cross in oversold while long is not an exit either
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (5.0, 8.0), 7: (10.0, 8.0)})
    assert kern(k, d).n == 0


def test_stop_has_priority_over_the_opposite_cross():
    n = 12
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (90.0, 85.0), 7: (80.0, 85.0), 8: (50.0, 50.0)})
    r = kern(k, d, close=series(n, 100.0, {7: 104.0}), low=series(n, 95, {7: 89.0}))
    assert r.trades() == [(LONG, 3, 7)]
    assert r.exit_price[0] == 90.0


def test_no_reentry_on_exit_bar():
    n = 12
    k, d = bull_cross_at(n, 3)  # setup and trend stay on after the exit
    r = kern(k, d, low=series(n, 95, {5: 90.0, 9: 90.0}))
    assert r.trades() == [(LONG, 3, 5), (LONG, 6, 9)]
    # the second size comes from the reduced balance: 990 * 1 % / 10 = 0.99 -> floor(1.98) * 0.5
    assert r.size.tolist() == [1.0, 0.5]
    assert r.balance[-1] == pytest.approx(1000.0 - 10.0 - 5.0, rel=1e-12)


def test_opposite_exit_then_entry_on_next_bar_only():
    n = 12
    # the long exits on the bear cross of bar 7, which also sets the short setup (kept: K stays 80/85)
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (90.0, 85.0), 7: (80.0, 85.0)})
    r = kern(k, d, close=series(n, 100.0, {7: 104.0}), high=series(n, 105, {10: 110.0}))
    assert r.trades() == [(LONG, 3, 7), (SHORT, 8, 10)]
    assert r.entry_price[1] == 100.0 and r.exit_price[1] == 110.0


def test_else_belongs_to_the_long_condition():
    # Reading of "long-setup and long-trend and a swing low -> long ...; else short-...": when the
    # long condition holds but opens nothing (zero stop distance), no short is tried on that bar.
    n = 10
    # osLevel 80 > obLevel 20 so that both setups can be on together: bull cross on 3, bear cross on 5
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 4: (60.0, 50.0), 5: (40.0, 50.0)})
    close = series(n, 90.0)  # close == swing low: long distance 0; short distance 20
    r = kern(k, d, close=close, os_=80.0, ob=20.0, high=series(n, 105, {8: 120}))
    assert r.n == 0
    # control: without the long setup the short opens on bar 5
    k2, d2 = kd(n, {0: (60.0, 55.0), 4: (60.0, 50.0), 5: (40.0, 50.0)})
    r = kern(k2, d2, close=close, os_=80.0, ob=20.0, high=series(n, 105, {8: 120}))
    assert r.trades() == [(SHORT, 5, 8)]


def test_zero_stop_distance_opens_nothing():
    n = 10
    k, d = bull_cross_at(n, 3)
    close = series(n, 100.0, {3: 90.0, 4: 90.0})  # close == swing low on bars 3 and 4
    r = kern(k, d, close=close, low=series(n, 95, {8: 80}))
    assert r.trades() == [(LONG, 5, 8)]


# ----------------------------------------------------------------------------------------------
# 4. sizing and commission


def test_sizing_floors_to_contract_size():
    n = 10
    k, d = bull_cross_at(n, 3)
    low = series(n, 95, {8: 80})
    # risk cash 1000 * 2 % = 20, distance 10 -> 2 units; contract 0.3 -> floor(6.67) * 0.3 = 1.8
    r = kern(k, d, risk=2.0, cs=0.3, low=low)
    assert r.size[0] == pytest.approx(6 * 0.3, rel=1e-15)
    # distance 7 (close 97): 20 / 7 = 2.857 units; contract 1 -> 2
    r = kern(k, d, risk=2.0, cs=1.0, low=low, close=series(n, 100.0, {3: 97.0}))
    assert r.size[0] == 2.0
    # the spec's formula literally, with the default contract size
    r = kern(k, d, risk=2.0, cs=0.01, low=low, close=series(n, 100.0, {3: 97.0}))
    assert r.size[0] == math.floor(1000.0 * 2.0 / 100.0 / 7.0 / 0.01) * 0.01


def test_zero_size_opens_nothing():
    n = 10
    k, d = bull_cross_at(n, 3)
    low = series(n, 95, {8: 80})
    # risk cash 1, distance 10 -> 0.1 units < one contract of 0.5
    r = kern(k, d, risk=0.1, low=low)
    assert r.n == 0
    np.testing.assert_array_equal(r.equity, 1000.0)
    assert kern(k, d, risk=0.0, low=low).n == 0


def test_commission_in_percent_at_entry_and_exit():
    n = 12
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (90.0, 85.0), 7: (80.0, 85.0), 8: (50.0, 50.0)})
    close = series(n, 100.0, {7: 110.0})
    r = kern(k, d, close=close, comm=0.1)  # 0.1 %
    assert r.trades() == [(LONG, 3, 7)]
    # gross 10, entry commission 100 * 1 * 0.1 % = 0.1, exit commission 110 * 1 * 0.1 % = 0.11
    assert r.net_pnl[0] == pytest.approx(10.0 - 0.1 - 0.11, rel=1e-12)
    assert r.profit_pct[0] == pytest.approx(9.79 / 100.0 * 100.0, rel=1e-12)
    assert r.balance[-1] == pytest.approx(1009.79, rel=1e-12)
    # a short pays commission the same way
    k, d = kd(n, {2: (90.0, 85.0), 3: (80.0, 85.0), 6: (5.0, 8.0), 7: (10.0, 8.0), 8: (50.0, 50.0)})
    r = kern(k, d, close=series(n, 100.0, {7: 95.0}), comm=0.05)
    assert r.net_pnl[0] == pytest.approx(5.0 - 100.0 * 0.05 / 100 - 95.0 * 0.05 / 100, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# 5. curves


def test_balance_and_equity_curves_long():
    n = 12
    k, d = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 6: (90.0, 85.0), 7: (80.0, 85.0), 8: (50.0, 50.0)})
    close = series(n, 100.0, {4: 103.0, 5: 97.0, 6: 101.0, 7: 110.0})
    r = kern(k, d, close=close, comm=0.1)
    final = 1000.0 + 10.0 - 0.1 - 0.11
    # the realised balance changes only at the exit (entry commission is not taken at entry)
    np.testing.assert_allclose(r.balance, [1000.0] * 7 + [final] * 5, rtol=1e-13)
    # equity = balance + open P&L at the close, the entry commission counted, no exit commission
    expected = [1000.0] * 3 + [1000.0 - 0.1, 1003.0 - 0.1, 997.0 - 0.1, 1001.0 - 0.1] + [final] * 5
    np.testing.assert_allclose(r.equity, expected, rtol=1e-13)


def test_balance_and_equity_curves_short_and_open_position_at_end():
    n = 8
    k, d = bear_cross_at(n, 3)
    close = series(n, 100.0, {4: 96.0, 5: 102.0, 6: 99.0, 7: 98.0})
    r = kern(k, d, close=close, comm=0.05)
    assert r.n == 0  # still open after the last bar: not a trade
    np.testing.assert_array_equal(r.balance, 1000.0)  # adds nothing to the balance
    c_in = 100.0 * 1.0 * 0.05 / 100
    expected = [1000.0] * 3 + [1000.0 - c_in] + [1000.0 + (100.0 - c) - c_in for c in close[4:]]
    np.testing.assert_allclose(r.equity, expected, rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# 6. warm-up


def test_no_entries_before_trade_start_idx():
    n = 12
    k, d = bull_cross_at(n, 3)  # setup from bar 3, trend from bar 0
    low = series(n, 95, {10: 80})
    assert kern(k, d, low=low).trades() == [(LONG, 3, 10)]
    assert kern(k, d, low=low, tsi=6).trades() == [(LONG, 6, 10)]  # first allowed bar
    # a setup cleared before trading starts opens nothing
    k2, d2 = kd(n, {2: (5.0, 8.0), 3: (10.0, 8.0), 5: (20.0, 8.0)})
    assert kern(k2, d2, low=low, tsi=6).n == 0
    # but the indicators/flags run during warm-up: a setup from warm-up still counts
    assert kern(k, d, low=low, tsi=9).trades() == [(LONG, 9, 10)]


# ----------------------------------------------------------------------------------------------
# strategy object, registration, full runs


def test_registered_and_schema():
    assert "s04_stochrsi" in list_strategies()
    strat = get_strategy("s04_stochrsi")
    assert isinstance(strat, S04StochRSI)
    assert strat.name == "S04 StochRSI"
    assert merlin_kit.strategies.S04StochRSI is S04StochRSI
    table = {
        "rsiLen": ("int", 16, 1, 200, (4, 50, 2), True),
        "stochLen": ("int", 16, 1, 200, (4, 50, 2), True),
        "kLen": ("int", 3, 1, 50, (1, 50, 1), True),
        "dLen": ("int", 3, 1, 50, (1, 50, 1), True),
        "obLevel": ("float", 75, 0, 100, (60, 90, 1), True),
        "osLevel": ("float", 15, 0, 100, (5, 30, 1), True),
        "extLookback": ("int", 23, 2, 200, (5, 60, 1), True),
        "confirmBars": ("int", 14, 1, 200, (2, 40, 1), True),
        "riskPerTrade": ("float", 2.0, 0, 10, None, False),
        "contractSize": ("float", 0.01, 0.0001, 1e6, None, False),
        "commissionPct": ("float", 0.05, 0, 1, None, False),
    }
    assert strat.param_names() == [
        "rsiLen", "stochLen", "kLen", "dLen", "obLevel", "osLevel", "extLookback", "confirmBars",
        "riskPerTrade", "contractSize", "initialCapital", "commissionPct",
    ]
    for name, (kind, default, lo, hi, opt, optimize) in table.items():
        p = strat.param(name)
        assert (p.kind, p.default, p.low, p.high, p.optimize) == (kind, default, lo, hi, optimize), name
        if opt is not None:
            assert (p.opt_low, p.opt_high, p.opt_step) == opt, name
    cap = strat.param("initialCapital")
    assert cap.kind == "float" and cap.default == 100 and not cap.optimize
    assert 0 < cap.low < 1e-6
    assert strat.initial_capital(strat.validate_params({"initialCapital": 250})) == 250.0


@pytest.mark.parametrize(
    "bad",
    [{"rsiLen": 0}, {"stochLen": 201}, {"kLen": 1.5}, {"extLookback": 1}, {"confirmBars": 0},
     {"obLevel": 101}, {"osLevel": -1}, {"riskPerTrade": 11}, {"contractSize": 0},
     {"initialCapital": 0}, {"commissionPct": 1.5}],
)
def test_parameter_limits(bad):
    with pytest.raises(ParameterError):
        get_strategy("s04_stochrsi").validate_params(bad)


@pytest.fixture(scope="module")
def sample_frame() -> pd.DataFrame:
    return sample()


def _check_consistent(out, capital: float, trade_start: int = 0) -> None:
    assert out.n_trades > 0
    assert float(np.sum(out.net_pnl)) == pytest.approx(out.balance[-1] - capital, rel=0, abs=1e-9)
    assert np.all(out.entry_idx >= trade_start)
    assert np.all(out.exit_idx[:-1] < out.entry_idx[1:])  # one position at a time, no re-entry on the exit bar
    # the balance moves exactly at exit bars, by the trade's net P&L
    steps = np.diff(np.concatenate([[capital], out.balance]))
    moved = np.flatnonzero(steps != 0)
    np.testing.assert_array_equal(moved, out.exit_idx[out.net_pnl != 0])
    np.testing.assert_allclose(steps[out.exit_idx], out.net_pnl, rtol=0, atol=1e-9)
    # flat bars: equity == balance
    open_bars = np.zeros(out.balance.shape[0], dtype=bool)
    for a, b in zip(out.entry_idx, out.exit_idx):
        open_bars[a:b] = True
    if out.equity[-1] != out.balance[-1]:  # a position still open at the end
        open_bars[out.exit_idx[-1] + 1:] = True
    np.testing.assert_array_equal(out.equity[~open_bars], out.balance[~open_bars])


def test_backtest_on_sample_default_params(sample_frame):
    res = backtest(sample_frame, "s04_stochrsi")
    m = res.metrics
    for key in ("net_profit_pct", "max_drawdown_pct", "sharpe_ratio", "profit_factor", "romad", "ulcer_index", "sqn"):
        assert m[key] is not None and math.isfinite(m[key]), key
    assert m["total_trades"] == len(res.trades) > 30
    _check_consistent(res.output, 100.0)
    assert m["net_profit_pct"] == pytest.approx(float(res.trades["net_pnl"].sum()), rel=1e-9)
    assert set(res.trades["direction"]) == {"long", "short"}


def test_backtest_with_capital_and_date_window(sample_frame):
    params = {"initialCapital": 1000.0, "commissionPct": 0.1, "contractSize": 0.1}
    res = backtest(sample_frame, "s04_stochrsi", params, start="2024-03-01", end="2024-06-30", warmup_bars=500)
    tsi = res.data.trade_start_idx
    assert tsi == 500
    assert res.output.initial_capital == 1000.0
    _check_consistent(res.output, 1000.0, trade_start=tsi)
    np.testing.assert_array_equal(res.output.balance[:tsi], 1000.0)
    assert res.metrics["net_profit_pct"] == pytest.approx((res.output.balance[-1] - 1000.0) / 1000.0 * 100.0, rel=1e-12)
    # without the window's warm-up restriction the same bars do trade earlier
    free = PreparedData(res.data.index, res.data.time, res.data.open, res.data.high, res.data.low,
                        res.data.close, res.data.volume, 0)
    out = S04StochRSI().run(free, S04StochRSI().validate_params(params))
    assert out.entry_idx[0] < tsi


def test_run_uses_cache_and_is_repeatable(sample_frame):
    from merlin_kit.strategies import IndicatorCache

    data = prepare(sample_frame)
    strat = S04StochRSI()
    cache = IndicatorCache()
    p = strat.validate_params()
    a = strat.run(data, p, cache)
    misses = cache.misses
    b = strat.run(data, p, cache)
    assert cache.misses == misses and cache.hits >= 6
    for name in ("direction", "entry_idx", "exit_idx", "entry_price", "exit_price", "size", "net_pnl", "balance", "equity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# ----------------------------------------------------------------------------------------------
# pure-Python re-implementation of the spec (no numba, no merlin_kit.indicators)


def ref_rsi(close: list[float], length: int) -> list[float]:
    out = [NAN] * len(close)
    avg_gain = avg_loss = 0.0
    for i, c in enumerate(close):
        change = c - close[i - 1] if i > 0 else 0.0
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        avg_gain = avg_gain + (gain - avg_gain) / length
        avg_loss = avg_loss + (loss - avg_loss) / length
        if i >= length - 1:
            if avg_loss == 0.0:
                out[i] = 100.0 if avg_gain != 0.0 else NAN
            else:
                out[i] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def ref_stoch(r: list[float], length: int) -> list[float]:
    out = []
    for i, v in enumerate(r):
        window = [x for x in r[max(0, i - length + 1): i + 1] if not math.isnan(x)]
        if math.isnan(v) or not window:
            out.append(0.0)
            continue
        lo, hi = min(window), max(window)
        rng = hi - lo
        out.append(0.0 if rng == 0.0 else (v - lo) / rng * 100.0)
    return out


def ref_series(data: PreparedData, p: dict) -> dict[str, list[float]]:
    r = ref_rsi(data.close.tolist(), p["rsiLen"])
    st = ref_stoch(r, p["stochLen"])
    k = pd.Series(st).rolling(p["kLen"]).mean()
    d = k.rolling(p["dLen"]).mean()
    ll = pd.Series(data.low).rolling(p["extLookback"], min_periods=1).min()
    hh = pd.Series(data.high).rolling(p["extLookback"], min_periods=1).max()
    return {"k": k.tolist(), "d": d.tolist(), "ll": ll.tolist(), "hh": hh.tolist()}


def ref_backtest(data: PreparedData, p: dict) -> dict:
    s = ref_series(data, p)
    K, D, LL, HH = s["k"], s["d"], s["ll"], s["hh"]
    high, low, close = data.high.tolist(), data.low.tolist(), data.close.tolist()
    ob, os_, confirm = p["obLevel"], p["osLevel"], p["confirmBars"]
    rate = p["commissionPct"]
    balance = float(p["initialCapital"])
    pos = None  # dict(dir, entry, size, stop, idx, comm)
    was_flat = True  # flat at the end of the previous bar
    long_setup = short_setup = False
    sl = sh = None
    sl_count = sh_count = 0
    long_trend = short_trend = False
    trades, bal_curve, eq_curve = [], [], []
    for i in range(len(close)):
        bull = bear = False
        vals = (K[i], D[i], K[i - 1], D[i - 1]) if i > 0 else (NAN,)
        if not any(math.isnan(v) for v in vals):
            k0, d0, k1, d1 = vals
            bull = k0 > d0 and k1 <= d1 and k0 < os_ and d0 < os_
            bear = k0 < d0 and k1 >= d1 and k0 > ob and d0 > ob
            if bull:
                long_setup = True
            if k0 > os_ and k1 <= os_:
                long_setup = False
            if bear:
                short_setup = True
            if k0 < ob and k1 >= ob:
                short_setup = False
        if sl is None or LL[i] != sl:
            sl, sl_count, long_trend = LL[i], 0, False
        if low[i] > sl:
            sl_count += 1
            if sl_count >= confirm:
                long_trend = True
        elif low[i] < sl:
            sl, sl_count, long_trend = low[i], 0, False
        if sh is None or HH[i] != sh:
            sh, sh_count, short_trend = HH[i], 0, False
        if high[i] < sh:
            sh_count += 1
            if sh_count >= confirm:
                short_trend = True
        elif high[i] > sh:
            sh, sh_count, short_trend = high[i], 0, False
        if pos is not None:
            px = None
            if pos["dir"] == 1:
                px = pos["stop"] if low[i] <= pos["stop"] else (close[i] if bear else None)
            else:
                px = pos["stop"] if high[i] >= pos["stop"] else (close[i] if bull else None)
            if px is not None:
                gross = (px - pos["entry"]) * pos["size"] if pos["dir"] == 1 else (pos["entry"] - px) * pos["size"]
                net = gross - pos["comm"] - px * pos["size"] * rate / 100.0
                balance += net
                trades.append((pos["dir"], pos["idx"], i, pos["entry"], px, pos["size"], net,
                               net / (pos["entry"] * pos["size"]) * 100.0))
                pos = None
        if pos is None and was_flat and i >= data.trade_start_idx:
            side = None
            if long_setup and long_trend:
                side, stop, dist = 1, sl, close[i] - sl
            elif short_setup and short_trend:
                side, stop, dist = -1, sh, sh - close[i]
            if side is not None and dist > 0:
                size = math.floor(balance * p["riskPerTrade"] / 100.0 / dist / p["contractSize"]) * p["contractSize"]
                if size > 0:
                    pos = {"dir": side, "entry": close[i], "size": size, "stop": stop, "idx": i,
                           "comm": close[i] * size * rate / 100.0}
        bal_curve.append(balance)
        if pos is None:
            eq_curve.append(balance)
        else:
            open_pnl = (close[i] - pos["entry"]) * pos["size"] * pos["dir"] - pos["comm"]
            eq_curve.append(balance + open_pnl)
        was_flat = pos is None
    return {"trades": trades, "balance": bal_curve, "equity": eq_curve}


CROSS_CHECK_PARAMS = [
    {},
    {"rsiLen": 8, "stochLen": 10, "kLen": 2, "dLen": 2, "obLevel": 70.0, "osLevel": 25.0, "extLookback": 10, "confirmBars": 4},
    {"rsiLen": 30, "stochLen": 30, "kLen": 5, "dLen": 4, "obLevel": 80.0, "osLevel": 10.0, "extLookback": 50,
     "confirmBars": 2, "commissionPct": 0.1, "contractSize": 1.0, "initialCapital": 1000.0, "riskPerTrade": 5.0},
    # K = StochRSI itself (many 0 / 100 values): exact K == D ties are frequent
    {"rsiLen": 4, "stochLen": 6, "kLen": 1, "dLen": 2, "obLevel": 90.0, "osLevel": 5.0, "extLookback": 5, "confirmBars": 1},
]


def _compare(data: PreparedData, params: dict) -> int:
    strat = S04StochRSI()
    p = strat.validate_params(params)
    out = strat.run(data, p)
    ref = ref_backtest(data, p)
    tr = ref["trades"]
    assert out.n_trades == len(tr)
    assert out.direction.tolist() == [t[0] for t in tr]
    assert out.entry_idx.tolist() == [t[1] for t in tr]
    assert out.exit_idx.tolist() == [t[2] for t in tr]
    for j, name in enumerate(("entry_price", "exit_price", "size", "net_pnl", "profit_pct"), start=3):
        np.testing.assert_allclose(getattr(out, name), [t[j] for t in tr], rtol=REL, atol=0, err_msg=name)
    np.testing.assert_allclose(out.balance, ref["balance"], rtol=REL, atol=0)
    np.testing.assert_allclose(out.equity, ref["equity"], rtol=REL, atol=0)
    return out.n_trades


def test_reference_series_match_indicators(sample_frame):
    # the kit's RSI/StochRSI/SMA/rolling extremes against the pure-Python versions (exact)
    from merlin_kit.indicators import rolling_max, rolling_min, rsi, sma, stoch_rsi

    data = prepare(sample_frame.iloc[:3000])
    p = S04StochRSI().validate_params({"kLen": 4, "dLen": 3})
    s = ref_series(data, p)
    r = rsi(data.close, p["rsiLen"])
    np.testing.assert_array_equal(r, ref_rsi(data.close.tolist(), p["rsiLen"]))
    k = sma(stoch_rsi(r, p["stochLen"]), p["kLen"])
    np.testing.assert_array_equal(k, s["k"])
    np.testing.assert_array_equal(sma(k, p["dLen"]), s["d"])
    np.testing.assert_array_equal(rolling_min(data.low, p["extLookback"]), s["ll"])
    np.testing.assert_array_equal(rolling_max(data.high, p["extLookback"]), s["hh"])


@pytest.mark.parametrize("params", CROSS_CHECK_PARAMS, ids=["defaults", "fast", "slow-comm", "k1d2"])
def test_kernel_matches_pure_python_on_sample(sample_frame, params):
    data = prepare(sample_frame, start="2024-02-01", warmup_bars=800)
    assert _compare(data, params) > 10


@pytest.fixture(scope="module")
def link_data() -> PreparedData:
    if not LINK_CSV.exists():
        pytest.skip(f"LINK reference file not found at {LINK_CSV}: real-data cross-check skipped")
    return prepare(load_ohlcv(LINK_CSV), start="2025-06-15 00:00:00", end="2025-11-15 00:00:00", warmup_bars=1000)


@pytest.mark.parametrize("params", CROSS_CHECK_PARAMS, ids=["defaults", "fast", "slow-comm", "k1d2"])
def test_kernel_matches_pure_python_on_link(link_data, params):
    assert _compare(link_data, params) > 10
