"""Walk-forward windows (VALIDATION.md "Walk-forward windows"), computed by hand on small hourly frames.

Every expected window is written out literally as (is_start, is_end, oos_start, oos_end)
bar times and indices; the comments give the hand arithmetic of the spec's steps.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from merlin_kit.data import load_ohlcv
from merlin_kit.errors import ConfigError, DataError
from merlin_kit.walkforward import Window, _end_index, split_windows


def hourly(first: str, last: str, *, drop: tuple[tuple[str, str], ...] = ()) -> pd.DataFrame:
    """Hourly bars from ``first`` to ``last`` (inclusive) without the bars in each ``drop`` range (inclusive)."""
    times = pd.date_range(first, last, freq="h", tz="UTC")
    for a, b in drop:
        times = times[(times < pd.Timestamp(a, tz="UTC")) | (times > pd.Timestamp(b, tz="UTC"))]
    n = len(times)
    close = 10.0 + np.arange(n) * 0.01
    return load_ohlcv(pd.DataFrame({"time": times.as_unit("s").asi8, "open": close, "high": close + 0.1,
                                    "low": close - 0.1, "close": close, "volume": np.ones(n)}))


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def spans(windows: list[Window]) -> list[tuple[tuple[int, int, int, int], tuple[str, str, str, str]]]:
    """(indices, bar times as 'MM-DD HH:MM') of each window, for literal comparisons."""
    def f(t: pd.Timestamp) -> str:
        return t.strftime("%m-%d %H:%M")
    return [((w.is_start_idx, w.is_end_idx, w.oos_start_idx, w.oos_end_idx),
             (f(w.is_start), f(w.is_end), f(w.oos_start), f(w.oos_end))) for w in windows]


# 10 days of hourly bars, 2025-01-01 00:00 .. 2025-01-10 23:00: day d, hour h -> index 24*(d-1) + h; 240 bars.
TEN_DAYS = ("2025-01-01 00:00", "2025-01-10 23:00")


def test_basic_rolling_windows():
    # t0 = 01-01 00:00 (idx 0); stop = floor(01-10 23:00) + 1 day = 01-11; trading_days = 10; (10-3)//2 = 3
    # w1 cur 01-01: IS 01-01 .. (01-04 -> idx 72, back one -> 71); OOS 72 .. (01-06 -> 120 -> 119)
    # w2 cur 01-03 (48): IS 48 .. (01-06 -> 119); OOS 120 .. (01-08 -> 168 -> 167)
    # w3 cur 01-05 (96): IS 96 .. (01-08 -> 167); OOS 168 .. (01-10 -> 216 -> 215)
    # w4 cur 01-07: oos_end target 01-12 > stop 01-11: the loop stops
    windows = split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2)
    assert spans(windows) == [
        ((0, 71, 72, 119), ("01-01 00:00", "01-03 23:00", "01-04 00:00", "01-05 23:00")),
        ((48, 119, 120, 167), ("01-03 00:00", "01-05 23:00", "01-06 00:00", "01-07 23:00")),
        ((96, 167, 168, 215), ("01-05 00:00", "01-07 23:00", "01-08 00:00", "01-09 23:00")),
    ]
    assert [w.number for w in windows] == [1, 2, 3]
    assert [(w.is_bars, w.oos_bars) for w in windows] == [(72, 48)] * 3
    assert windows[0].is_start == ts("2025-01-01 00:00") and windows[0].is_start.tz is not None


def test_start_not_at_midnight_and_last_window_ends_at_stop():
    # start 01-02 13:30 -> floor 01-02 00:00 -> t0 = idx 24; stop 01-11; trading_days = 9; (9-3)//2 = 3
    # w1 cur 01-02: IS 24 .. (01-05 -> 96 -> 95); OOS 96 .. (01-07 -> 144 -> 143)
    # w2 cur 01-04 (72): IS 72 .. 143; OOS 144 .. (01-09 -> 192 -> 191)
    # w3 cur 01-06 (120): oos_end target 01-11 == stop (not > stop): IS 120 .. 191; OOS 192 ..
    #    (01-11 -> no bar at or after: 240 = n, back one -> 239, the last bar: not past it, kept)
    windows = split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2, start="2025-01-02 13:30")
    assert spans(windows) == [
        ((24, 95, 96, 143), ("01-02 00:00", "01-04 23:00", "01-05 00:00", "01-06 23:00")),
        ((72, 143, 144, 191), ("01-04 00:00", "01-06 23:00", "01-07 00:00", "01-08 23:00")),
        ((120, 191, 192, 239), ("01-06 00:00", "01-08 23:00", "01-09 00:00", "01-10 23:00")),
    ]


def test_data_starting_mid_day_gives_a_t0_off_midnight():
    # bars 2025-01-01 05:00 .. 01-10 23:00: 01-01 hour h -> h-5; day d >= 2, hour h -> 19 + 24*(d-2) + h; 235 bars
    # start = first bar 05:00 -> floor 01-01 00:00 -> t0 = 01-01 05:00 (idx 0); stop 01-11
    # trading_days = floor(9 days 19 h) = 9; (9-3)//2 = 3
    # w1 cur 01-01 05:00: IS 0 .. (01-04 05:00 -> 72 -> 71); OOS 72 .. (01-06 05:00 -> 120 -> 119)
    # next cur = first bar at/after floor(01-03 05:00) = 01-03 00:00 = idx 43
    # w2: IS 43 .. (01-06 00:00 -> 115 -> 114); OOS 115 .. (01-08 00:00 -> 163 -> 162)
    # w3 cur 01-05 (91): IS 91 .. (01-08 -> 162); OOS 163 .. (01-10 -> 211 -> 210)
    # (the spec, literally: w2's OOS begins 5 bars before w1's OOS ends, because t0 is 05:00)
    windows = split_windows(hourly("2025-01-01 05:00", "2025-01-10 23:00"), is_days=3, oos_days=2)
    assert spans(windows) == [
        ((0, 71, 72, 119), ("01-01 05:00", "01-04 04:00", "01-04 05:00", "01-06 04:00")),
        ((43, 114, 115, 162), ("01-03 00:00", "01-05 23:00", "01-06 00:00", "01-07 23:00")),
        ((91, 162, 163, 210), ("01-05 00:00", "01-07 23:00", "01-08 00:00", "01-09 23:00")),
    ]


def test_end_inside_a_day_exactly_two_windows():
    # end 01-07 10:15 -> stop = 01-08 00:00; trading_days = 7; (7-3)//2 = 2
    # w1: IS 0 .. 71; OOS 72 .. 119.  w2 cur 01-03 (48): IS 48 .. 119; OOS 120 .. (01-08 -> 168 -> 167)
    # so the last OOS runs to 01-07 23:00, past `end` to the end of its day (stop is the next midnight)
    # w3 cur 01-05: oos_end 01-10 > stop
    windows = split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2, end="2025-01-07 10:15")
    assert spans(windows) == [
        ((0, 71, 72, 119), ("01-01 00:00", "01-03 23:00", "01-04 00:00", "01-05 23:00")),
        ((48, 119, 120, 167), ("01-03 00:00", "01-05 23:00", "01-06 00:00", "01-07 23:00")),
    ]


def test_anchored_every_is_window_starts_at_t0():
    # as test_basic_rolling_windows, IS starts all at t0 = idx 0; IS ends and OOS unchanged
    windows = split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2, anchored=True)
    assert spans(windows) == [
        ((0, 71, 72, 119), ("01-01 00:00", "01-03 23:00", "01-04 00:00", "01-05 23:00")),
        ((0, 119, 120, 167), ("01-01 00:00", "01-05 23:00", "01-06 00:00", "01-07 23:00")),
        ((0, 167, 168, 215), ("01-01 00:00", "01-07 23:00", "01-08 00:00", "01-09 23:00")),
    ]
    assert [w.is_bars for w in windows] == [72, 120, 168]


def test_gaps_first_bar_at_or_after_and_end_moved_back():
    # 10 days minus 01-03 00:00..02:00 (3 bars) and 01-04 00:00..05:00 (6 bars): 231 bars
    # index: day 1-2 hour h -> 24*(d-1)+h (0..47); 01-03 h>=3 -> 45+h (48..68); 01-04 h>=6 -> 63+h (69..86);
    #        day d >= 5, hour h -> 87 + 24*(d-5) + h
    # t0 = idx 0; stop 01-11; trading_days 10; 3 windows possible
    # w1 cur 01-01: is_end target 01-04 00:00 is in the gap -> first bar at/after = 01-04 06:00 (69),
    #    back one -> 68 (01-03 23:00); OOS 69 (01-04 06:00) .. (01-06 00:00 -> 111 -> 110)
    # next cur = first bar at/after 01-03 00:00 (in the gap) = 01-03 03:00 (48)
    # w2 cur 01-03 03:00: IS 48 .. (01-06 03:00 -> 114 -> 113); OOS 114 .. (01-08 03:00 -> 162 -> 161)
    # next cur = first bar at/after floor(01-05 03:00) = 01-05 00:00 (87)
    # w3: IS 87 .. (01-08 00:00 -> 159 -> 158); OOS 159 .. (01-10 00:00 -> 207 -> 206)
    # w4 cur 01-07 (135): oos_end 01-12 > stop
    frame = hourly(*TEN_DAYS, drop=(("2025-01-03 00:00", "2025-01-03 02:00"), ("2025-01-04 00:00", "2025-01-04 05:00")))
    assert len(frame) == 231
    windows = split_windows(frame, is_days=3, oos_days=2)
    assert spans(windows) == [
        ((0, 68, 69, 110), ("01-01 00:00", "01-03 23:00", "01-04 06:00", "01-05 23:00")),
        ((48, 113, 114, 161), ("01-03 03:00", "01-06 02:00", "01-06 03:00", "01-08 02:00")),
        ((87, 158, 159, 206), ("01-05 00:00", "01-07 23:00", "01-08 00:00", "01-09 23:00")),
    ]
    assert [(w.is_bars, w.oos_bars) for w in windows] == [(69, 42), (66, 48), (72, 48)]


def test_oos_period_inside_a_gap_gives_an_empty_oos_window():
    # 10 days without 01-04 and 01-05 (48 bars): 192 bars; day d >= 6 hour h -> 72 + 24*(d-6) + h
    # w1: is_end target 01-04 -> first bar at/after = 01-06 00:00 (72) -> 71; OOS start 72;
    #     oos_end target 01-05 -> 72 -> 71: OOS [72 .. 71], 0 bars (kept: the spec keeps the window)
    # w2 cur 01-02 (24): is_end 01-05 -> 72 -> 71; OOS 72 .. (01-06 -> 72 -> 71): empty again
    # w3 cur 01-03 (48): is_end 01-06 -> 72 -> 71; OOS 72 .. (01-07 -> 96 -> 95)
    frame = hourly(*TEN_DAYS, drop=(("2025-01-04 00:00", "2025-01-05 23:00"),))
    windows = split_windows(frame, is_days=3, oos_days=1)
    assert spans(windows)[:3] == [
        ((0, 71, 72, 71), ("01-01 00:00", "01-03 23:00", "01-06 00:00", "01-03 23:00")),
        ((24, 71, 72, 71), ("01-02 00:00", "01-03 23:00", "01-06 00:00", "01-03 23:00")),
        ((48, 71, 72, 95), ("01-03 00:00", "01-03 23:00", "01-06 00:00", "01-06 23:00")),
    ]
    assert [(w.is_bars, w.oos_bars) for w in windows[:3]] == [(72, 0), (48, 0), (24, 24)]


def test_end_after_the_data_stops_when_an_index_is_past_the_last_bar():
    # end 01-20 -> stop 01-21; trading_days 20; w1-w3 as in test_basic_rolling_windows
    # w4 cur 01-07 (144): IS 144 .. (01-10 -> 216 -> 215); OOS 216 .. (01-12 -> 240 = n -> 239): kept
    # w5 cur 01-09 (192): oos_start target 01-12 -> 240 = n, past the last bar: the loop stops
    windows = split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2, end="2025-01-20")
    assert spans(windows)[3:] == [((144, 215, 216, 239), ("01-07 00:00", "01-09 23:00", "01-10 00:00", "01-10 23:00"))]
    assert len(windows) == 4 and windows[-1].oos_bars == 24


def test_end_index_rule_moves_back_one_bar_unless_zero():
    # split_windows cannot produce a left-search index 0 for an end target (every end target
    # lies after t0, which is a bar), so the rule is checked on the helper it uses.
    assert _end_index(0) == 0
    assert _end_index(1) == 0
    assert _end_index(72) == 71


def test_start_and_end_accept_what_pd_timestamp_accepts():
    frame = hourly(*TEN_DAYS)
    expected = spans(split_windows(frame, is_days=3, oos_days=2, start="2025-01-02"))
    # 2025-01-02 01:00+02:00 is 01-01 23:00 UTC -> floor 01-01: t0 = idx 0, not 24
    assert spans(split_windows(frame, is_days=3, oos_days=2, start="2025-01-02 01:00+02:00"))[0][0][0] == 0
    for start in (dt.datetime(2025, 1, 2, 7), np.datetime64("2025-01-02T07:00"), pd.Timestamp("2025-01-02 07:00"),
                  dt.date(2025, 1, 2), pd.Timestamp("2025-01-02").value):
        assert spans(split_windows(frame, is_days=3, oos_days=2, start=start)) == expected
    with pytest.raises(ConfigError) as err:
        split_windows(frame, is_days=3, oos_days=2, end="not a date")
    assert err.value.field == "end"


def test_too_few_days():
    # 4 days: trading_days 4 < 3 + 2
    with pytest.raises(ConfigError) as err:
        split_windows(hourly("2025-01-01 00:00", "2025-01-04 23:00"), is_days=3, oos_days=2)
    msg = str(err.value)
    assert "3 + 2 = 5" in msg and "only 4 trading days" in msg


def test_fewer_than_two_windows():
    # 6 days: trading_days 6 >= 5 but (6 - 3) // 2 = 1
    with pytest.raises(ConfigError) as err:
        split_windows(hourly("2025-01-01 00:00", "2025-01-06 23:00"), is_days=3, oos_days=2)
    msg = str(err.value)
    assert "at least 2 windows needed" in msg and "6 trading days" in msg and "= 1" in msg and "7 days" in msg


def test_no_bar_at_or_after_start():
    with pytest.raises(ConfigError) as err:
        split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2, start="2025-01-11 03:00")
    assert err.value.field == "start"
    assert "2025-01-11 03:00:00+00:00" in str(err.value) and "2025-01-10 23:00:00+00:00" in str(err.value)


@pytest.mark.parametrize("field", ["is_days", "oos_days"])
@pytest.mark.parametrize("value", [0, -1, 2.5, 3.0, True, "3", None])
def test_day_counts_must_be_positive_integers(field, value):
    kwargs = {"is_days": 3, "oos_days": 2, field: value}
    with pytest.raises(ConfigError) as err:
        split_windows(hourly(*TEN_DAYS), **kwargs)
    assert err.value.field == field and repr(value) in str(err.value)


def test_numpy_integer_day_counts_and_to_dict():
    windows = split_windows(hourly(*TEN_DAYS), is_days=np.int64(3), oos_days=np.int32(2))
    d = windows[0].to_dict()
    assert d == {
        "number": 1, "is_start": "2025-01-01T00:00:00+00:00", "is_end": "2025-01-03T23:00:00+00:00",
        "oos_start": "2025-01-04T00:00:00+00:00", "oos_end": "2025-01-05T23:00:00+00:00",
        "is_start_idx": 0, "is_end_idx": 71, "oos_start_idx": 72, "oos_end_idx": 119, "is_bars": 72, "oos_bars": 48,
    }
    json.dumps(d)
    with pytest.raises(AttributeError):
        windows[0].number = 2  # type: ignore[misc]


def test_link_file_invariants(link_csv):
    data = load_ohlcv(link_csv)
    index = data.index
    for is_days, oos_days in ((90, 30), (30, 7), (14, 14)):
        rolling = split_windows(data, is_days=is_days, oos_days=oos_days)
        anchored = split_windows(data, is_days=is_days, oos_days=oos_days, anchored=True)
        # the LINK file has a bar every 15 minutes from 05-01 00:00 to 11-20 23:45: 204 days
        assert len(rolling) == (204 - is_days) // oos_days
        assert len(anchored) == len(rolling)
        for w, a in zip(rolling, anchored):
            assert (w.is_bars, w.oos_bars) == (is_days * 96, oos_days * 96)
            assert (a.is_start_idx, a.is_end_idx, a.oos_start_idx, a.oos_end_idx) == (0, w.is_end_idx, w.oos_start_idx, w.oos_end_idx)
            assert w.is_end_idx + 1 == w.oos_start_idx
            assert (w.is_start, w.is_end, w.oos_start, w.oos_end) == (
                index[w.is_start_idx], index[w.is_end_idx], index[w.oos_start_idx], index[w.oos_end_idx])
            assert w.is_start.hour == w.oos_start.hour == 0 and (w.is_end.hour, w.is_end.minute) == (23, 45)
        for prev, nxt in zip(rolling, rolling[1:]):
            # OOS windows tile back to back: the next OOS starts at the first bar at/after the midnight after
            # the previous OOS end, which is the bar right after it
            assert nxt.oos_start == index[index.searchsorted(prev.oos_end.floor("D") + pd.Timedelta(days=1))]
            assert nxt.oos_start_idx == prev.oos_end_idx + 1
            assert nxt.is_start - prev.is_start == pd.Timedelta(days=oos_days)
            if is_days > oos_days:  # IS windows overlap
                assert nxt.is_start_idx <= prev.is_end_idx
        assert rolling[-1].oos_end_idx <= len(data) - 1


def test_next_window_start_past_the_last_bar_ends_the_loop():
    # is 1, oos 3, t0 01-02, end after the data (stop 01-21): cur 01-02, 01-05, 01-08
    # w3: IS 01-08 (168) .. (01-09 -> 192 -> 191); OOS 192 .. (01-12 -> 240 = n -> 239): kept
    # next cur target 01-11 -> 240 = n: past the last bar, the loop stops (no IndexError)
    windows = split_windows(hourly(*TEN_DAYS), is_days=1, oos_days=3, start="2025-01-02", end="2025-01-20")
    assert spans(windows)[2] == ((168, 191, 192, 239), ("01-08 00:00", "01-08 23:00", "01-09 00:00", "01-10 23:00"))
    assert len(windows) == 3


def test_t0_is_the_first_bar_when_the_next_bar_is_on_another_day():
    frame = hourly("2025-01-01 23:00", "2025-01-10 23:00")  # one bar on 01-01, then whole days
    w = split_windows(frame, is_days=3, oos_days=2)[0]
    assert w.is_start_idx == 0 and w.is_start == ts("2025-01-01 23:00")


def test_exactly_is_plus_oos_days_is_fewer_than_two_windows():
    # 5 days: trading_days 5 = 3 + 2 is enough days, but (5 - 3) // 2 = 1 window
    with pytest.raises(ConfigError, match="at least 2 windows needed") as err:
        split_windows(hourly("2025-01-01 00:00", "2025-01-05 23:00"), is_days=3, oos_days=2)
    assert "(5 - is_days 3) // oos_days 2 = 1;" in str(err.value)
    # 6 days: (6 - 3) // 2 = 1, a whole number (not 1.5)
    with pytest.raises(ConfigError) as err:
        split_windows(hourly("2025-01-01 00:00", "2025-01-06 23:00"), is_days=3, oos_days=2)
    assert "(6 - is_days 3) // oos_days 2 = 1;" in str(err.value)


def test_frames_that_are_not_load_ohlcv_output_are_data_errors():
    good = hourly(*TEN_DAYS)
    with pytest.raises(DataError, match="needs the DataFrame returned by load_ohlcv"):
        split_windows([1, 2, 3], is_days=3, oos_days=2)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="needs the DataFrame returned by load_ohlcv"):
        split_windows(good.reset_index(drop=True), is_days=3, oos_days=2)
    with pytest.raises(DataError, match="has no bars"):
        split_windows(good.iloc[:0], is_days=3, oos_days=2)
    with pytest.raises(ConfigError, match="trading days"):  # one bar is a frame, just too short
        split_windows(good.iloc[:1], is_days=3, oos_days=2)
    with pytest.raises(DataError, match="not sorted and unique"):
        split_windows(good.iloc[::-1], is_days=3, oos_days=2)  # unique, not sorted
    with pytest.raises(DataError, match="not sorted and unique"):
        split_windows(pd.concat([good.iloc[:5], good.iloc[4:]]), is_days=3, oos_days=2)  # sorted, a duplicate


def test_an_end_before_the_start_says_zero_trading_days():
    with pytest.raises(ConfigError) as err:
        split_windows(hourly(*TEN_DAYS), is_days=3, oos_days=2, start="2025-01-05", end="2025-01-02")
    assert "only 0 trading days" in str(err.value)
