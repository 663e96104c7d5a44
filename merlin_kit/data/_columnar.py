"""Parquet and Feather (Arrow IPC) input and output: recognised by content, read with pyarrow.

A columnar file stores numbers as numbers, so loading skips the text parse that
dominates a CSV load; the bars still go through the same validation as a CSV
(:func:`~merlin_kit.data.load_ohlcv`).  pyarrow is the optional ``parquet``
extra: without it such a file is a :class:`DataError` that names the extra.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from ..errors import DataError

#: file suffixes :func:`save_ohlcv` writes, by format
SUFFIXES: dict[str, tuple[str, ...]] = {"csv": (".csv",), "parquet": (".parquet", ".pq"), "feather": (".feather", ".arrow", ".ipc")}
_INSTALL = "pip install 'merlin-kit[parquet]' (or: pip install pyarrow)"


def columnar_kind(raw: bytes) -> str | None:
    """``"parquet"``, ``"feather"`` or None (not a columnar file), from the magic bytes."""
    if raw.startswith(b"PAR1") and raw.endswith(b"PAR1"):
        return "parquet"
    if any(raw.startswith(magic) and raw.endswith(magic) for magic in (b"ARROW1", b"FEA1")):  # Feather v2 / v1
        return "feather"
    return None


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """:func:`columnar_kind` of a file from its first and last bytes (the whole file is not read)."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 8))
        tail = f.read(8)
    # the magics (PAR1, FEA1, ARROW1) are at most 8 bytes: the ends of the file decide as the whole would
    return columnar_kind(head if size < 8 else head + tail)


def _pyarrow(label: str, kind: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise DataError(f"{label}: reading or writing {kind.capitalize()} needs pyarrow: {_INSTALL}") from None
    return pyarrow


def read_columnar(raw: bytes | str | os.PathLike[str], label: str, kind: str | None = None) -> pd.DataFrame:
    """The table of a Parquet or Feather file (its bytes, or its path: memory-mapped, never copied whole
    into Python), its pandas index restored, or DataError."""
    kind = kind or (columnar_kind(raw) if isinstance(raw, bytes) else file_kind(raw))
    pa = _pyarrow(label, str(kind))
    source = pa.BufferReader(raw) if isinstance(raw, bytes) else os.fspath(raw)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(source, memory_map=not isinstance(raw, bytes))
        else:
            import pyarrow.feather as feather

            table = feather.read_table(source, memory_map=not isinstance(raw, bytes))
        frame = table.to_pandas()
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise DataError(f"{label}: not a readable {str(kind).capitalize()} file ({exc})") from exc
    if frame.shape[1] == 0 and len(frame) == 0:
        raise DataError(f"{label}: is empty (no columns, no rows)")
    return frame


def format_for(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for (by suffix), or DataError listing the suffixes known."""
    name = os.fspath(path).lower()
    for kind, suffixes in SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    known = ", ".join(s for group in SUFFIXES.values() for s in group)
    raise DataError(f"{os.fspath(path)}: unknown output format; the file name must end in one of {known}")


def save_ohlcv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    """Write a :func:`load_ohlcv` frame as CSV, Parquet or Feather (chosen by suffix); returns the format.

    The time goes out as a ``time`` column (UNIX seconds in CSV, UTC timestamps in
    the columnar formats), so that :func:`load_ohlcv` reads back identical bars.
    """
    kind = format_for(path)
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise DataError("save_ohlcv() needs the DataFrame returned by load_ohlcv() (a UTC DatetimeIndex named 'time')")
    table = frame.reset_index()
    if kind == "csv":
        table["time"] = frame.index.as_unit("ns").asi8 // 1_000_000_000 if _whole_seconds(frame) else frame.index
        table.to_csv(path, index=False)
        return kind
    _pyarrow(os.fspath(path), kind)
    # uncompressed: these files exist to load fast (a compressed Parquet file reads ~1.7x slower)
    if kind == "parquet":
        table.to_parquet(path, index=False, compression=None)
    else:
        table.to_feather(path, compression="uncompressed")
    return kind


def _whole_seconds(frame: pd.DataFrame) -> bool:
    return bool((frame.index.as_unit("ns").asi8 % 1_000_000_000 == 0).all())
