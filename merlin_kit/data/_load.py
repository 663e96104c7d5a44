"""Reading and validating OHLCV: :func:`load_ohlcv`, the one definition of "valid OHLCV", and its helpers."""

from __future__ import annotations

import codecs
import io
import os
import re
import warnings
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import pandas as pd

from ..errors import DataError
from ._columnar import columnar_kind, file_kind, read_columnar
from ._validated import remember

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VOLUME_ALIASES: tuple[str, ...] = ("volume", "vol")

DataSource = Union[str, os.PathLike, bytes, bytearray, IO[str], IO[bytes], pd.DataFrame]

_KNOWN_KEYS = frozenset(("time",) + PRICE_COLUMNS + VOLUME_ALIASES)
_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000
_MS_THRESHOLD = 1e11  # |t| >= 1e11 is taken as milliseconds (1e11 s is the year 5138)
_NS_LIMIT = 9.2e18  # datetime64[ns] ends in 2262
_ACCEPTED = "a path (str or os.PathLike), CSV bytes/bytearray, a text or binary file object, or a pandas DataFrame"


def load_ohlcv(source: DataSource, *, name: str | None = None, min_bars: int = 2) -> pd.DataFrame:
    """Read and validate OHLCV data from any supported source.

    ``source`` is a path (str or ``os.PathLike``; no name is special), raw CSV
    ``bytes``/``bytearray``, a text or binary file object (read, not closed) or a
    DataFrame (with a ``time`` column or a ``DatetimeIndex``; never modified).
    A Parquet or Feather file (path, bytes or binary file object; recognised by
    its content, read with pyarrow: the ``parquet`` extra) is a table like a
    DataFrame and goes through the same checks.
    ``time`` may be UNIX seconds, UNIX milliseconds (|t| >= 1e11) or ISO-8601
    strings (naive = UTC, offsets converted to UTC).  Price columns are matched
    case-insensitively; volume may be called ``volume`` or ``vol`` (any case).
    Other columns are ignored.  Unsorted rows are sorted.

    Returns a new DataFrame indexed by a UTC ``DatetimeIndex`` named ``time``
    with float64 columns :data:`OHLCV_COLUMNS`.  Raises :class:`DataError`
    (message prefixed by ``name``) for anything that is not a usable series,
    including bars whose high/low do not contain open and close (impossible
    bars are errors, not warnings).  Zero volume is allowed; negative is not.
    The returned frame is remembered as validated until it is changed
    (:func:`~merlin_kit.data.is_validated`), so ``backtest(frame)`` skips the checks.
    """
    if isinstance(min_bars, bool) or not isinstance(min_bars, (int, np.integer)) or min_bars < 0:
        raise DataError(f"min_bars must be an integer >= 0, got {min_bars!r}")
    if isinstance(source, pd.DataFrame):
        label = name if name is not None else "<DataFrame>"
        columns, time_values, time_label = _frame_parts(source, label, True)
    else:
        label, table, is_frame = _read_csv_source(source, name)
        columns, time_values, time_label = _frame_parts(table, label, is_frame)
    return remember(_validate(columns, time_values, time_label, label, int(min_bars)))


def _read_csv_source(source: Any, name: str | None) -> tuple[str, pd.DataFrame, bool]:
    """Turn a non-DataFrame source into (label, raw table, is_frame) or raise DataError.

    ``is_frame`` is true for Parquet/Feather input (recognised by content, not by
    name): those tables may carry the time as their index, like a DataFrame.
    """
    parse_from: Path | None = None  # a CSV file pandas may open itself
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name if name is not None else "<bytes>"
        raw = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        text_path = os.fsdecode(source)
        if isinstance(source, str) and "\n" in source:
            raise DataError(
                f"{name or '<str>'}: a str source is a file path, and this one contains line breaks; "
                "pass CSV text as io.StringIO(text) or bytes"
            )
        path = Path(text_path).expanduser()
        label = name if name is not None else text_path
        parse_from = path
        try:
            found = path.is_file() or path.is_dir()
        except OSError:
            found = False
        if not found:
            where = str(path.resolve())
            raise DataError(f"{label}: file not found" + (f" ({where})" if where != label else ""))
        if path.is_dir():
            raise DataError(f"{label}: is a directory, not a CSV file")
        try:
            kind = file_kind(path)
            if kind is not None:  # pyarrow maps the file itself: no copy of it in Python
                return label, read_columnar(path, label, kind), True
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{label}: cannot read the file ({exc.strerror or exc})") from exc
    elif hasattr(source, "read") and callable(source.read):
        label = name if name is not None else "<file object>"
        try:
            content = source.read()
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{label}: cannot read the file object ({exc})") from exc
        if isinstance(content, str):
            return label, _parse_csv(content, label), False
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise DataError(f"{label}: read() returned {type(content).__name__}, expected str or bytes")
        raw = bytes(content)
    else:
        label = name if name is not None else f"<{type(source).__name__}>"
        raise DataError(f"{label}: unsupported source type {type(source).__name__}; expected {_ACCEPTED}")
    if columnar_kind(raw) is not None:
        return label, read_columnar(raw, label), True
    text = _checked_utf8(raw, label)
    # pandas parses a file it opens itself faster than the same bytes in a buffer (~130 vs ~200 ms per 1M bars)
    return label, _parse_csv(text, label, path=parse_from if text is raw else None), False


_LEADING_BLANK = re.compile(rb"(?:\xef\xbb\xbf|[ \t\r\n])*")  # what str.lstrip("\ufeff \t\r\n") removes, as UTF-8
_ASCII_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c]*")  # what bytes.strip() removes


def _checked_utf8(raw: bytes, label: str) -> bytes:
    """CSV bytes as UTF-8 (optional BOM; UTF-16 with BOM re-encoded) or explain why they are not text.

    Works on the bytes so that pandas parses them directly: decoding to a str
    first and parsing that costs more than the parse itself on large files.
    """
    if _ASCII_SPACE.match(raw).end() == len(raw):
        raise DataError(f"{label}: is empty (no header, no data)")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16").encode("utf-8")
        except UnicodeError as exc:
            raise DataError(f"{label}: not a CSV text file (invalid UTF-16 text)") from exc
    if raw.startswith(b"PK\x03\x04"):
        raise DataError(f"{label}: not a CSV text file (it is a ZIP archive or an Excel .xlsx workbook); export it as CSV")
    if raw.startswith(b"\x1f\x8b"):
        raise DataError(f"{label}: not a CSV text file (it is gzip-compressed); decompress it first")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{label}: not a CSV text file (binary content)")
    if not raw.isascii():
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{label}: not a CSV text file (binary or non-UTF-8 content at byte {exc.start})"
            ) from exc
    return raw


def _parse_csv(data: str | bytes, label: str, path: Path | None = None) -> pd.DataFrame:
    """Parse CSV text (str, or UTF-8 bytes) with pandas after rejecting the common non-CSV inputs.

    ``path``: the file ``data`` was read from (checked already), which pandas then reads itself.
    """
    if isinstance(data, str):
        head = data.lstrip("\ufeff \t\r\n")[:1]
        buffer: IO[Any] = io.StringIO(data)
        skip_spaces = True
        iso_time: list[int] = []
    else:
        start = _LEADING_BLANK.match(data).end()
        head = data[start:start + 1].decode("latin-1")
        buffer = io.BytesIO(data) if path is None else path
        skip_spaces = _spaces_after_separator(data)
        iso_time = _iso_time_column(data, start)
    if not head:
        raise DataError(f"{label}: is empty (no header, no data)")
    if head.startswith("<"):
        raise DataError(f"{label}: not a CSV file (it looks like HTML or XML, e.g. a web page saved instead of the data)")
    if head.startswith(("{", "[")):
        raise DataError(f"{label}: not a CSV file (it looks like JSON)")
    try:
        # ISO times are parsed by the reader (a third of the cost of converting them afterwards); a column
        # that does not parse stays text and gets the usual checks and messages in _time_to_ns
        with warnings.catch_warnings():
            # chunked parsing (twice as fast as low_memory=False) may leave a column mixed text and numbers,
            # with a DtypeWarning: the checks below name the bad value and its row instead
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            table = pd.read_csv(buffer, skipinitialspace=skip_spaces, parse_dates=iso_time or None,
                                date_format="ISO8601" if iso_time else None)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{label}: is empty (no header, no data)") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).strip().replace("Error tokenizing data. ", "")
        raise DataError(f"{label}: not a valid CSV file ({reason})") from exc
    if table.shape[1] == 1:
        header = str(table.columns[0])
        hint = ""
        for sep, sep_name in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if sep in header:
                hint = f"; the header seems to use {sep_name} as separator, expected commas"
                break
        raise DataError(
            f"{label}: not an OHLCV CSV file: only one column ({header[:80]!r}); "
            f"expected comma-separated columns time,open,high,low,close,volume{hint}"
        )
    if len(table) == 0:
        found = ", ".join(repr(str(c)) for c in table.columns)
        raise DataError(f"{label}: has a header but no data rows (columns: {found})")
    return table


def _iso_time_column(data: bytes, start: int) -> list[int]:
    """``[position]`` of the time column when its first value is text (ISO times to parse while reading), else ``[]``.

    Only for a plain header and first row (no quotes), so that the position is the one pandas sees.
    """
    ends = [data.find(b"\n", start)]
    ends.append(data.find(b"\n", ends[0] + 1) if ends[0] >= 0 else -1)
    if ends[1] < 0:
        return []
    header, first = data[start:ends[0]].rstrip(b"\r"), data[ends[0] + 1:ends[1]].rstrip(b"\r")
    if b'"' in header or b'"' in first:
        return []
    keys = [n.strip().lower() for n in header.decode("utf-8", "replace").split(",")]
    values = first.decode("utf-8", "replace").split(",")
    if keys.count("time") != 1 or len(values) != len(keys):
        return []
    value = values[keys.index("time")]
    return [] if not value.strip() or _is_number(value) else [keys.index("time")]


def _spaces_after_separator(raw: bytes) -> bool:
    """Whether pandas' ``skipinitialspace`` could change anything: a space or tab starting a field.

    The option slows the parser by a third or more, and machine-written files
    have no such spaces.  Conservative: a space after the end of a BOM counts too.
    """
    codes: np.ndarray | None = None
    for char in (b" ", b"\t"):
        if char not in raw:  # memchr: the usual case costs microseconds
            continue
        codes = np.frombuffer(raw, dtype=np.uint8) if codes is None else codes
        at = np.flatnonzero(codes == char[0])
        if at[0] == 0 or np.isin(codes[at - 1], _FIELD_STARTS).any():
            return True
    return False


_FIELD_STARTS = np.frombuffer(b",\n\r\xbf", dtype=np.uint8)


def _frame_parts(table: pd.DataFrame, label: str, is_frame: bool) -> tuple[dict[str, pd.Series], pd.Series, str]:
    """Find the OHLCV columns and the time values (column or index) of a table."""
    if table.shape[1] == 0 and len(table) == 0:
        raise DataError(f"{label}: is empty (no columns, no rows)")
    found = [str(c) for c in table.columns]
    by_key: dict[str, int] = {}
    for pos, col in enumerate(found):
        key = col.strip().lower()
        if key in by_key and key in _KNOWN_KEYS:
            raise DataError(f"{label}: ambiguous columns {found[by_key[key]]!r} and {col!r} (column names are case-insensitive)")
        by_key.setdefault(key, pos)
    vol_keys = [k for k in VOLUME_ALIASES if k in by_key]
    if len(vol_keys) > 1:
        a, b = (found[by_key[k]] for k in vol_keys)
        raise DataError(f"{label}: ambiguous volume columns {a!r} and {b!r}; keep one")

    missing = [c for c in PRICE_COLUMNS if c not in by_key]
    if not vol_keys:
        missing.append("volume")
    shown = ", ".join(repr(c) for c in found)
    if "time" in by_key:
        time_label = found[by_key["time"]]
        time_values = table.iloc[:, by_key["time"]]
    elif is_frame and (isinstance(table.index, pd.DatetimeIndex) or str(table.index.name).strip().lower() == "time"):
        time_label = "time (index)"
        time_values = pd.Series(table.index, copy=False)
    elif is_frame:
        also = f"; also missing column(s): {', '.join(missing)}" if missing else ""
        raise DataError(
            f"{label}: DataFrame has no 'time' column and its index is a {type(table.index).__name__}, "
            f"not a DatetimeIndex{also}; columns found: {shown}"
        )
    else:
        missing.insert(0, "time")
    if missing:
        raise DataError(f"{label}: missing column(s): {', '.join(missing)}; columns found: {shown}")
    if len(table) == 0:
        raise DataError(f"{label}: has no data rows")
    columns = {c: table.iloc[:, by_key[c]] for c in PRICE_COLUMNS}
    columns["volume"] = table.iloc[:, by_key[vol_keys[0]]]
    return columns, time_values, time_label


def _validate(
    columns: dict[str, pd.Series], time_values: pd.Series, time_label: str, label: str, min_bars: int
) -> pd.DataFrame:
    """Check every rule on the raw columns and build the canonical frame."""
    ns = _time_to_ns(time_values, time_label, label)
    n = len(ns)

    order: np.ndarray | None = None
    if n > 1 and not bool(np.all(ns[1:] > ns[:-1])):
        order = np.argsort(ns, kind="stable")
        sorted_ns = ns[order]
        dup = np.flatnonzero(sorted_ns[1:] == sorted_ns[:-1])
        if dup.size:
            stamp = sorted_ns[dup[0]]
            rows = np.sort(order[sorted_ns == stamp]) + 1
            shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if rows.size > 10 else "")
            raise DataError(f"{label}: duplicate timestamp {_fmt_ts(stamp)} at rows {shown}",
                            column=time_label, row=int(rows[0]))

    values = {c: _to_float(columns[c], c, label, ns) for c in OHLCV_COLUMNS}

    for col in PRICE_COLUMNS:
        bad = np.flatnonzero(values[col] <= 0)
        if bad.size:
            i = bad[0]
            raise DataError(
                f"{label}: non-positive price {_fmt(values[col][i])} in column {columns[col].name!r} at {_where(i, ns)}",
                column=str(columns[col].name), row=int(i) + 1,
            )
    vol = values["volume"]
    bad = np.flatnonzero(vol < 0)
    if bad.size:
        i = bad[0]
        raise DataError(f"{label}: negative volume {_fmt(vol[i])} in column {columns['volume'].name!r} at {_where(i, ns)}",
                        column=str(columns["volume"].name), row=int(i) + 1)

    o, h, lo, c = (values[k] for k in PRICE_COLUMNS)
    bad = np.flatnonzero(h < lo)
    if bad.size:
        i = bad[0]
        raise DataError(f"{label}: impossible bar: high {_fmt(h[i])} is below low {_fmt(lo[i])} at {_where(i, ns)}",
                        row=int(i) + 1)
    bad = np.flatnonzero((h < o) | (h < c))
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{label}: impossible bar: high {_fmt(h[i])} is below open {_fmt(o[i])} or close {_fmt(c[i])} at {_where(i, ns)}",
            row=int(i) + 1,
        )
    bad = np.flatnonzero((lo > o) | (lo > c))
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{label}: impossible bar: low {_fmt(lo[i])} is above open {_fmt(o[i])} or close {_fmt(c[i])} at {_where(i, ns)}",
            row=int(i) + 1,
        )

    if n < min_bars:
        raise DataError(f"{label}: only {n} bar{'s' if n != 1 else ''}; at least {min_bars} are needed")

    return _build_frame(ns if order is None else ns[order], values, order)


def _build_frame(ns: np.ndarray, values: dict[str, np.ndarray], order: np.ndarray | None = None) -> pd.DataFrame:
    """The canonical frame, its columns copied (and put in ``order``) once, straight into pandas' 2-D block."""
    block = np.empty((len(OHLCV_COLUMNS), len(ns)), dtype=np.float64)
    for row, col in zip(block, OHLCV_COLUMNS):
        if order is None:
            row[:] = values[col]
        else:
            np.take(values[col], order, out=row)
    return pd.DataFrame(block.T, columns=list(OHLCV_COLUMNS), index=_index_from_ns(ns), copy=False)


def _index_from_ns(ns: np.ndarray) -> pd.DatetimeIndex:
    arr = np.asarray(ns, dtype=np.int64).view("datetime64[ns]")
    return pd.DatetimeIndex(arr, name="time").tz_localize("UTC")


def _time_to_ns(values: pd.Series, col: str, label: str) -> np.ndarray:
    """Convert a time column (seconds, milliseconds, ISO-8601, datetimes) to int64 UTC nanoseconds."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        dt = pd.DatetimeIndex(values)
        dt = dt.tz_localize("UTC") if dt.tz is None else dt.tz_convert("UTC")
        nat = np.flatnonzero(dt.isna())
        if nat.size:
            raise DataError(f"{label}: missing time in column {col!r} at row {nat[0] + 1}", column=col, row=int(nat[0]) + 1)
        try:
            return dt.as_unit("ns").asi8.copy()
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            raise DataError(f"{label}: time in column {col!r} is out of range ({exc})", column=col) from exc
    if pd.api.types.is_bool_dtype(dtype):
        raise DataError(f"{label}: column {col!r} holds booleans, expected UNIX seconds, milliseconds or ISO-8601 times",
                        column=col)
    if pd.api.types.is_integer_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return _numeric_time_to_ns(values.to_numpy(dtype=np.float64), values, col, label, values.to_numpy())
    if pd.api.types.is_numeric_dtype(dtype):
        return _numeric_time_to_ns(values.to_numpy(dtype=np.float64, na_value=np.nan), values, col, label)

    # text / object column: ISO-8601 strings, datetime objects, or numbers as text
    missing = np.flatnonzero(values.isna().to_numpy())  # before the object copy: cheap on pandas' str dtype
    # pandas' str dtype parses as fast as objects: converting it first would only add a copy
    raw = values if isinstance(values.dtype, pd.StringDtype) else values.astype(object)
    if missing.size:
        raise DataError(f"{label}: missing time in column {col!r} at row {int(missing[0]) + 1}",
                        column=col, row=int(missing[0]) + 1)
    if _is_number(raw.iloc[0]):
        as_num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        text_rows = np.flatnonzero(np.isnan(as_num))
        if not text_rows.size:
            return _numeric_time_to_ns(as_num, values, col, label)
        _raise_bad_time(label, raw, col, int(text_rows[0]), number_row=0)
    try:
        parsed = _parse_iso(raw)
    except (ValueError, TypeError, OverflowError):  # pragma: no cover - pandas raises only on exotic input
        parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    bad = np.flatnonzero(pd.isna(parsed).to_numpy())
    if bad.size:
        _raise_bad_time(label, raw, col, int(bad[0]), number_row=None)
    try:
        return pd.DatetimeIndex(parsed).as_unit("ns").asi8.copy()
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
        raise DataError(f"{label}: time in column {col!r} is out of range ({exc})", column=col) from exc


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _raise_bad_time(label: str, raw: pd.Series, col: str, j: int, number_row: int | None) -> None:
    """Explain why row ``j`` of a time column failed: blank, mixed with numbers, or unparseable."""
    value = raw.iloc[j]
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{label}: missing time in column {col!r} at row {j + 1}", column=col, row=j + 1)
    if number_row is None and _is_number(value):
        number_row, j, value = j, 0, raw.iloc[0]
    if number_row is not None and not pd.isna(_parse_iso(pd.Series([value], dtype=object)).iloc[0]):
        first, second = sorted((number_row, j))
        kind = {number_row: "a number", j: "text"}
        raise DataError(
            f"{label}: mixed time formats in column {col!r}: row {first + 1} is {kind[first]} ({_show(raw.iloc[first])}) "
            f"but row {second + 1} is {kind[second]} ({_show(raw.iloc[second])}); use one format",
            column=col, row=second + 1,
        )
    raise DataError(_unparseable(label, value, col, j), column=col, row=j + 1)


def _parse_iso(values: pd.Series) -> pd.Series:
    # one conversion of pandas' str dtype to objects (to_datetime would make two); bar times are unique: no cache
    arr = values.to_numpy(dtype=object) if isinstance(values.dtype, pd.StringDtype) else values
    parsed = pd.to_datetime(arr, utc=True, errors="coerce", format="ISO8601", cache=False)
    return pd.Series(parsed, index=values.index, copy=False)


def _unparseable(label: str, value: Any, col: str, i: int) -> str:
    return (
        f"{label}: unparseable time {_show(value)} in column {col!r} at row {i + 1} "
        f"(expected UNIX seconds, milliseconds or ISO-8601 like 2025-05-01T00:15:00Z)"
    )


def _numeric_time_to_ns(
    num: np.ndarray, original: pd.Series, col: str, label: str, whole_numbers: np.ndarray | None = None
) -> np.ndarray:
    """Seconds or milliseconds (``num``; ``whole_numbers``: the same as int64 when the column is integer) -> ns."""
    nan = np.flatnonzero(~np.isfinite(num))
    if nan.size:
        i = int(nan[0])
        what = "missing time" if np.isnan(num[i]) else f"invalid time {_show(original.iloc[i])}"
        raise DataError(f"{label}: {what} in column {col!r} at row {i + 1}", column=col, row=i + 1)
    is_ms = np.abs(num) >= _MS_THRESHOLD
    big = np.flatnonzero(np.abs(num) * np.where(is_ms, _NS_PER_MS, _NS_PER_S) >= _NS_LIMIT)
    if big.size:
        i = int(big[0])
        raise DataError(
            f"{label}: time {_show(original.iloc[i])} in column {col!r} at row {i + 1} is out of range "
            f"for UNIX seconds or milliseconds",
            column=col, row=i + 1,
        )
    if is_ms.any() and not is_ms.all():
        i = int(np.flatnonzero(is_ms != is_ms[0])[0])
        unit0, unit1 = ("milliseconds", "seconds") if is_ms[0] else ("seconds", "milliseconds")
        raise DataError(
            f"{label}: mixed time units in column {col!r}: row 1 looks like UNIX {unit0} ({_show(original.iloc[0])}) "
            f"but row {i + 1} looks like UNIX {unit1} ({_show(original.iloc[i])})",
            column=col, row=i + 1,
        )
    scale = _NS_PER_MS if is_ms[0] else _NS_PER_S
    if whole_numbers is not None:  # exact, no rounding through float64 and no fraction to add
        return whole_numbers.astype(np.int64) * scale
    whole = np.floor(num)
    ns = whole.astype(np.int64) * scale
    frac = num - whole
    if frac.any():
        ns = ns + np.round(frac * scale).astype(np.int64)
    return ns


def _to_float(series: pd.Series, col: str, label: str, ns: np.ndarray) -> np.ndarray:
    """Column -> float64 array; missing, non-numeric and infinite values are errors."""
    name = series.name
    if pd.api.types.is_bool_dtype(series.dtype):
        raise DataError(f"{label}: column {name!r} holds booleans, expected numbers", column=str(name))
    if pd.api.types.is_numeric_dtype(series.dtype):
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        arr = pd.to_numeric(series.astype(object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raw = series.iloc[i]
        if np.isinf(arr[i]):
            problem = f"infinite value {_show(raw)}"
        elif raw is None or (isinstance(raw, str) and not raw.strip()) or _is_na(raw):
            problem = "missing value"
        else:
            problem = f"non-numeric value {_show(raw)}"
        raise DataError(f"{label}: {problem} in column {name!r} at {_where(i, ns)}", column=str(name), row=i + 1)
    return arr


def _show(value: Any) -> str:
    """repr() of a raw cell for messages (numpy scalars shown as plain Python values)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _is_na(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _where(i: int, ns: np.ndarray) -> str:
    return f"row {int(i) + 1} ({_fmt_ts(ns[i])})"


def _fmt_ts(ns_value: Any) -> str:
    return str(pd.Timestamp(int(ns_value), unit="ns", tz="UTC"))


def _fmt(x: float) -> str:
    return repr(float(x))
