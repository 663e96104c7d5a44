"""Remember which frames :func:`load_ohlcv` returned, so that the same bars are not validated twice.

``backtest(frame)`` on a frame straight from ``load_ohlcv`` would otherwise
re-run the whole validation on every call (most of its time on a short series).

A weak registry (no ``attrs``: those survive copies and concatenations) maps a
returned frame to a *stamp*: its index object, its column labels and the
memory address of its values, plus a private shallow copy of the frame.  That shallow copy makes pandas' copy-on-write copy any column the
user writes to (``df.iloc[5, 2] = -1``, ``df.loc[:, "close"] *= 2``,
``df["close"] = ...``), so a write moves the column to a new address; dropping,
reordering or re-indexing rows (in place or not) changes the index object or
gives a new frame.  Any difference from the stamp means "validate again".
Not caught: writing through a NumPy array whose read-only flag the user
switched back on (``arr.flags.writeable = True``) -- that bypasses pandas.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import pandas as pd

_LOCK = threading.RLock()  # re-entrant: a weakref callback may run (GC) while this thread holds it


class _Entry:
    """What is remembered about one frame: the stamp, the shallow copy, and derived results."""

    __slots__ = ("ref", "index", "columns", "address", "shadow", "memo")

    def __init__(self, frame: pd.DataFrame, ref: "weakref.ref[pd.DataFrame]") -> None:
        self.ref = ref
        self.index = frame.index
        self.columns, self.address = _stamp(frame)
        self.shadow = frame.copy(deep=False)  # keeps the arrays alive (addresses never reused) and forces copy-on-write
        self.memo: dict[Any, Any] = {}


_ENTRIES: dict[int, _Entry] = {}


def _stamp(frame: pd.DataFrame) -> tuple[tuple[Any, ...], Any]:
    """Column labels, and the address of the values as one array.

    ``load_ohlcv`` builds one float64 block, which ``to_numpy`` returns without
    a copy; once a column was written to, the frame has several blocks and
    ``to_numpy`` copies (a new address), so the stamp no longer matches.
    """
    return tuple(frame.columns), frame.to_numpy().__array_interface__["data"]


def remember(frame: pd.DataFrame) -> pd.DataFrame:
    """Record ``frame`` (just validated) as valid in its present state; returns it."""
    key = id(frame)

    def forget(ref: "weakref.ref[pd.DataFrame]", key: int = key) -> None:
        with _LOCK:
            if key in _ENTRIES and _ENTRIES[key].ref is ref:
                del _ENTRIES[key]

    entry = _Entry(frame, weakref.ref(frame, forget))
    with _LOCK:
        _ENTRIES[key] = entry
    return frame


def _entry(frame: Any) -> _Entry | None:
    if not isinstance(frame, pd.DataFrame):
        return None
    with _LOCK:
        entry = _ENTRIES.get(id(frame))
    if entry is None or entry.ref() is not frame:
        return None
    if frame.index is entry.index and _stamp(frame) == (entry.columns, entry.address):
        return entry
    with _LOCK:
        if _ENTRIES.get(id(frame)) is entry:
            del _ENTRIES[id(frame)]  # frees the shallow copy's old values; the next load_ohlcv records it again
    return None


def is_validated(frame: Any) -> bool:
    """Whether ``frame`` is a :func:`load_ohlcv` result not changed since (then it need not be checked again)."""
    return _entry(frame) is not None


def memo_of(frame: Any) -> dict[Any, Any] | None:
    """A dict for results derived from a validated, unchanged ``frame`` (dropped with it), else None."""
    entry = _entry(frame)
    return None if entry is None else entry.memo
