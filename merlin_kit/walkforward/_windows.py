"""The walk-forward windows (spec "Walk-forward windows"): calendar-day targets resolved to bars."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """One walk-forward window: IS ``[is_start … is_end]`` then OOS ``[oos_start … oos_end]``.

    Timestamps are the UTC times of the bars (both ends inclusive) and the
    ``*_idx`` fields their positions in the frame given to :func:`split_windows`,
    so a caller can slice the bars (``frame.iloc[w.oos_start_idx : w.oos_end_idx + 1]``)
    or take warm-up bars before a window from the whole file.  ``oos_bars`` is 0
    (and ``oos_start`` after ``oos_end``) when the whole OOS period falls in a gap
    of the data: the spec keeps such a window, the runner treats it as flat.
    """

    number: int
    is_start: pd.Timestamp
    is_end: pd.Timestamp
    oos_start: pd.Timestamp
    oos_end: pd.Timestamp
    is_start_idx: int
    is_end_idx: int
    oos_start_idx: int
    oos_end_idx: int
    is_bars: int
    oos_bars: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO-8601 strings, indices and counts as ``int``."""
        return {
            "number": self.number,
            "is_start": self.is_start.isoformat(),
            "is_end": self.is_end.isoformat(),
            "oos_start": self.oos_start.isoformat(),
            "oos_end": self.oos_end.isoformat(),
            "is_start_idx": self.is_start_idx,
            "is_end_idx": self.is_end_idx,
            "oos_start_idx": self.oos_start_idx,
            "oos_end_idx": self.oos_end_idx,
            "is_bars": self.is_bars,
            "oos_bars": self.oos_bars,
        }


def split_windows(
    data: pd.DataFrame,
    *,
    is_days: int,
    oos_days: int,
    start: Any = None,
    end: Any = None,
    anchored: bool = False,
) -> list[Window]:
    """The walk-forward windows of ``data`` (spec "Walk-forward windows", literally).

    ``data`` is a loaded OHLCV frame (:func:`merlin_kit.data.load_ohlcv`): the
    whole file, not a prepared window, because OOS warm-up may reach back before
    the IS window.  ``start``/``end`` take anything ``pd.Timestamp`` takes (naive
    = UTC; default: first / last bar).  ``anchored=True`` starts every IS window
    at the first window's start (an expanding IS window); OOS windows are the
    same as in rolling mode.

    Literal consequences of the spec: when ``t0`` is not at midnight (the data
    or a gap starts mid-day), window 1's targets keep its time of day while later
    windows start at midnight, so window 2's OOS begins before window 1's ends;
    an ``end`` after the data gives a last OOS window cut at the last bar.

    Raises :class:`ConfigError` for non-positive or non-integer day counts, a
    start after the last bar, a period shorter than ``is_days + oos_days``, fewer
    than 2 windows, or no window at all.
    """
    is_days = _positive_days(is_days, "is_days")
    oos_days = _positive_days(oos_days, "oos_days")
    index = _utc_index(data)
    n = len(index)
    ns = index.asi8

    def at_or_after(ts: pd.Timestamp) -> int:
        return int(np.searchsorted(ns, ts.value, side="left"))

    first, last = index[0], index[-1]
    start_ts = first if start is None else _to_utc(start, "start")
    end_ts = last if end is None else _to_utc(end, "end")

    # 1. t0 and stop
    i0 = at_or_after(start_ts.floor("D"))
    if i0 >= n:
        raise ConfigError(
            f"walk-forward start {start_ts} is after the last bar ({last}): no bar at or after "
            f"{start_ts.floor('D')}", field="start")
    t0 = index[i0]
    stop = end_ts.floor("D") + _DAY

    # 2. enough days for at least 2 windows
    trading_days = (stop - t0) // _DAY
    needed = is_days + oos_days
    if trading_days < needed:
        raise ConfigError(
            f"walk-forward needs at least is_days + oos_days = {is_days} + {oos_days} = {needed} days, "
            f"but only {max(trading_days, 0)} trading days are available from {t0} to {stop} (exclusive)")
    possible = (trading_days - is_days) // oos_days
    if possible < 2:
        raise ConfigError(
            f"walk-forward: at least 2 windows needed, but {trading_days} trading days give "
            f"({trading_days} - is_days {is_days}) // oos_days {oos_days} = {possible}; "
            f"{is_days + 2 * oos_days} days are needed for 2 windows")

    # 3. the loop
    windows: list[Window] = []
    cur = t0
    while True:
        is_start = t0 if anchored else cur
        is_end = cur + is_days * _DAY
        oos_start = is_end
        oos_end = oos_start + oos_days * _DAY
        if oos_end > stop:
            break
        a = at_or_after(is_start)
        b = _end_index(at_or_after(is_end))
        c = at_or_after(oos_start)
        d = _end_index(at_or_after(oos_end))
        if max(a, b, c, d) >= n:
            break
        windows.append(Window(
            number=len(windows) + 1,
            is_start=index[a], is_end=index[b], oos_start=index[c], oos_end=index[d],
            is_start_idx=a, is_end_idx=b, oos_start_idx=c, oos_end_idx=d,
            is_bars=max(b - a + 1, 0), oos_bars=max(d - c + 1, 0),
        ))
        nxt = at_or_after((cur + oos_days * _DAY).floor("D"))
        if nxt >= n:
            break
        cur = index[nxt]

    # 4.
    if not windows:
        raise ConfigError(
            f"walk-forward: no window fits in the data from {t0} to {stop} (exclusive) with "
            f"is_days={is_days}, oos_days={oos_days}; the data ends at {last}")
    return windows


def _end_index(i: int) -> int:
    """An end target's bar: the last bar strictly before it (one back from "at or after"), unless 0."""
    return i - 1 if i > 0 else i


def _positive_days(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{field} must be an integer > 0 (calendar days), got {value!r}", field=field,
                          reason=f"must be an integer > 0 (calendar days), got {value!r}")
    return int(value)


def _to_utc(value: Any, field: str) -> pd.Timestamp:
    """Anything ``pd.Timestamp`` accepts, as a UTC timestamp (naive = UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"{field} {value!r} is not a date/time (use ISO-8601, e.g. '2025-06-15')",
                          field=field) from exc
    if pd.isna(ts):
        raise ConfigError(f"{field} {value!r} is not a date/time", field=field)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _utc_index(data: pd.DataFrame) -> pd.DatetimeIndex:
    if not isinstance(data, pd.DataFrame) or not isinstance(data.index, pd.DatetimeIndex):
        raise DataError("split_windows() needs the DataFrame returned by load_ohlcv() (a DatetimeIndex named 'time')")
    index = data.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    if len(index) == 0:
        raise DataError("split_windows(): the frame has no bars")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise DataError("split_windows(): the frame's index is not sorted and unique; load it with load_ohlcv()")
    return index.as_unit("ns")
