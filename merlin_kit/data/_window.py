"""The prepared window: :class:`PreparedData`, :func:`prepare` and :func:`fingerprint`."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ._load import OHLCV_COLUMNS, _NS_PER_S, _index_from_ns, load_ohlcv
from ._validated import memo_of


# ------------------------------------------------------------------ prepared window


@dataclass(frozen=True, eq=False)
class PreparedData:
    """What strategies run on: contiguous arrays of the prepared window.

    ``index`` is the window's UTC ``DatetimeIndex``; ``time`` its int64 UNIX
    seconds; the price/volume arrays are float64, C-contiguous and read-only.
    Bars before ``trade_start_idx`` are warm-up: indicators see them, entries
    are not allowed on them.  Arrays passed in are copied if writeable, so the
    instance cannot be changed through them.  Compared and hashed by identity.
    """

    index: pd.DatetimeIndex
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trade_start_idx: int = 0

    def __post_init__(self) -> None:
        idx = self.index
        if not isinstance(idx, pd.DatetimeIndex):
            raise DataError(f"PreparedData.index must be a DatetimeIndex, got {type(idx).__name__}")
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        idx = idx.as_unit("ns").rename("time")
        object.__setattr__(self, "index", idx)
        n = len(idx)
        object.__setattr__(self, "time", _frozen(self.time, np.int64, "time", n))
        for col in OHLCV_COLUMNS:
            object.__setattr__(self, col, _frozen(getattr(self, col), np.float64, col, n))
        start = self.trade_start_idx
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= max(n - 1, 0):
            raise DataError(f"PreparedData.trade_start_idx must be an integer in [0, {max(n - 1, 0)}], got {start!r}")
        object.__setattr__(self, "trade_start_idx", int(start))

    @property
    def n_bars(self) -> int:
        """Number of bars in the window (warm-up included)."""
        return len(self.index)

    def frame(self) -> pd.DataFrame:
        """The OHLCV frame of the window (a new, writeable DataFrame)."""
        return pd.DataFrame({c: np.array(getattr(self, c)) for c in OHLCV_COLUMNS}, index=self.index.copy())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the window as one uncompressed ``.npz`` file (arrays only, no pickles).

        Reading it back takes milliseconds where parsing and validating the CSV
        takes seconds on a million bars: the optimiser hands its worker
        processes the window this way.
        """
        with open(path, "wb") as fh:
            np.savez(fh, index_ns=self.index.asi8, time=self.time, open=self.open, high=self.high, low=self.low,
                     close=self.close, volume=self.volume, trade_start_idx=np.int64(self.trade_start_idx))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PreparedData":
        """Read a window written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{os.fspath(path)}: not a prepared window written by PreparedData.save ({exc})") from None
        missing = [k for k in ("index_ns", "time", *OHLCV_COLUMNS, "trade_start_idx") if k not in arrays]
        if missing:
            raise DataError(f"{os.fspath(path)}: prepared window lacks {', '.join(missing)}")
        for arr in arrays.values():
            arr.flags.writeable = False  # ours alone: PreparedData keeps them without a copy
        return cls(
            _index_from_ns(arrays["index_ns"]), arrays["time"], arrays["open"], arrays["high"], arrays["low"],
            arrays["close"], arrays["volume"], int(arrays["trade_start_idx"]),
        )

    def __repr__(self) -> str:
        if self.n_bars == 0:
            return "PreparedData(n_bars=0)"
        return (
            f"PreparedData(n_bars={self.n_bars}, first={self.index[0]}, last={self.index[-1]}, "
            f"trade_start_idx={self.trade_start_idx} ({self.index[self.trade_start_idx]}))"
        )


def _frozen(values: Any, dtype: type, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"PreparedData.{name} must be 1-D with {n} values (one per index entry), got shape {arr.shape}")
    if arr.dtype != dtype or arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, dtype=dtype, order="C", copy=True)
        arr.flags.writeable = False
    return arr


def prepare(frame: pd.DataFrame, start: Any = None, end: Any = None, warmup_bars: int = 1000) -> PreparedData:
    """Cut the date window with warm-up (spec "Data window") out of a loaded frame.

    ``start``/``end``: None, ISO string, ``datetime``/``date``/``Timestamp``/
    ``datetime64`` (naive = UTC).  The start index is the first bar at or after
    ``start``, the end index the last bar at or before ``end`` (inclusive).  The
    window begins ``warmup_bars`` bars before the start index (clamped at 0)
    and ``trade_start_idx`` is the start index inside it.  With neither start
    nor end the whole frame is used and ``trade_start_idx`` is 0.
    """
    if isinstance(warmup_bars, bool) or not isinstance(warmup_bars, (int, np.integer)) or warmup_bars < 0:
        raise DataError(f"warmup_bars must be an integer >= 0, got {warmup_bars!r}")
    # a load_ohlcv frame unchanged since: the last window cut from it is reused (PreparedData is read-only)
    memo = memo_of(frame)
    if memo is None:
        return _cut(frame, start, end, warmup_bars)
    key = ("prepare", _to_utc(start, "start"), _to_utc(end, "end"), int(warmup_bars))
    if key not in memo:
        prepared = _cut(frame, start, end, warmup_bars)
        memo.clear()  # one window kept: a million-bar window is 48 MB
        memo[key] = prepared
    return memo[key]


def _cut(frame: pd.DataFrame, start: Any, end: Any, warmup_bars: int) -> PreparedData:
    """:func:`prepare` itself: check the frame, find the window, copy it out."""
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError("prepare() needs the DataFrame returned by load_ohlcv() (a DatetimeIndex named 'time')")
    missing = [c for c in OHLCV_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"prepare(): frame is missing column(s) {', '.join(missing)}; load it with load_ohlcv()")
    idx = frame.index
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    n = len(idx)
    if n == 0:
        raise DataError("prepare(): the frame has no bars")
    if not idx.is_monotonic_increasing or not idx.is_unique:
        raise DataError("prepare(): the frame's index is not sorted and unique; load it with load_ohlcv()")

    t0 = _to_utc(start, "start")
    t1 = _to_utc(end, "end")
    span = f"the data runs from {idx[0]} to {idx[-1]}"
    if t0 is not None and t1 is not None and t0 > t1:
        raise DataError(f"start {t0} is after end {t1}")
    if t0 is None and t1 is None:
        lo, hi, trade_start = 0, n - 1, 0
    else:
        s = int(idx.searchsorted(t0, side="left")) if t0 is not None else 0
        e = int(idx.searchsorted(t1, side="right")) - 1 if t1 is not None else n - 1
        if s >= n:
            raise DataError(f"start {t0} is after the last bar; {span}")
        if e < 0:
            raise DataError(f"end {t1} is before the first bar; {span}")
        if s > e:
            raise DataError(f"no bars between start {t0} and end {t1}; {span}")
        lo = max(0, s - int(warmup_bars))
        hi = e
        trade_start = s - lo

    sl = slice(lo, hi + 1)
    window = idx[sl].as_unit("ns").rename("time")
    arrays = {}
    for col in OHLCV_COLUMNS:
        arr = np.array(frame[col].to_numpy(dtype=np.float64)[sl], dtype=np.float64, order="C", copy=True)
        arr.flags.writeable = False
        arrays[col] = arr
    secs = np.array(window.asi8 // _NS_PER_S, dtype=np.int64)
    secs.flags.writeable = False
    return PreparedData(index=window, time=secs, trade_start_idx=trade_start, **arrays)


def _to_utc(value: Any, what: str) -> pd.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if not isinstance(value, (str, _dt.date, np.datetime64, pd.Timestamp)):
        raise DataError(f"{what} must be None, an ISO date string, a datetime or a Timestamp, got {type(value).__name__}")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{what} {value!r} is not a date/time (use ISO-8601, e.g. '2025-06-15 00:00:00')") from exc
    if ts is pd.NaT or pd.isna(ts):
        raise DataError(f"{what} {value!r} is not a date/time")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# ------------------------------------------------------------------- fingerprint


def fingerprint(data: pd.DataFrame | PreparedData) -> str:
    """SHA-256 (hex) of the int64 nanosecond times and float64 OHLCV values.

    Deterministic across runs and platforms (little-endian bytes), independent
    of column order, extra columns and the index name.  A DataFrame that is not
    already in :func:`load_ohlcv` form is normalised through it first.
    """
    if isinstance(data, PreparedData):
        ns = data.index.asi8
        cols = [getattr(data, c) for c in OHLCV_COLUMNS]
    elif isinstance(data, pd.DataFrame):
        if isinstance(data.index, pd.DatetimeIndex) and all(c in data.columns for c in OHLCV_COLUMNS):
            idx = data.index
            idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
            ns = idx.as_unit("ns").asi8
            cols = [data[c].to_numpy(dtype=np.float64) for c in OHLCV_COLUMNS]
        else:
            norm = load_ohlcv(data, min_bars=0)
            ns = norm.index.asi8
            cols = [norm[c].to_numpy() for c in OHLCV_COLUMNS]
    else:
        raise DataError(f"fingerprint() needs a DataFrame or PreparedData, got {type(data).__name__}")
    h = hashlib.sha256(b"merlin_kit.ohlcv.v1\0")
    h.update(np.int64(len(ns)).astype("<i8").tobytes())
    h.update(np.ascontiguousarray(ns, dtype="<i8").tobytes())
    for col in cols:
        h.update(np.ascontiguousarray(col, dtype="<f8").tobytes())
    return h.hexdigest()
