"""Tests of merlin_kit.data: loading/validation, the prepared window, fingerprint, sample()."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merlin_kit.data import OHLCV_COLUMNS, PreparedData, fingerprint, load_ohlcv, prepare, sample
from merlin_kit.errors import DataError, MerlinError

LINK_FILE = "OKX_LINKUSDT.P_15m_2025-05-01_2025-11-20.csv"

HEADER = "time,open,high,low,close,Volume"
ROWS = [
    # 2025-05-01 00:00 .. 01:00 UTC, 15-minute bars
    ["1746057600", "14.283", "14.352", "14.282", "14.338", "358236.574"],
    ["1746058500", "14.339", "14.383", "14.323", "14.37", "337892.464"],
    ["1746059400", "14.366", "14.408", "14.344", "14.397", "296217.18"],
    ["1746060300", "14.397", "14.447", "14.395", "14.435", "795549.646"],
    ["1746061200", "14.435", "14.5", "14.4", "14.45", "100000.0"],
]
COL = {"time": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}


def shared_data_dir() -> Path:
    """/work/shared/data for a repository at /work/main (../shared/data beside the repository)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def csv_text(rows: list[list[str]] | None = None, header: str = HEADER) -> str:
    rows = ROWS if rows is None else rows
    return "\n".join([header] + [",".join(r) for r in rows]) + "\n"


def with_cell(row: int, column: str, value: str) -> str:
    """The good CSV with data row ``row`` (1-based), column ``column`` set to ``value``."""
    rows = [list(r) for r in ROWS]
    rows[row - 1][COL[column]] = value
    return csv_text(rows)


def good_frame() -> pd.DataFrame:
    return load_ohlcv(csv_text().encode())


def expected_index() -> pd.DatetimeIndex:
    return pd.DatetimeIndex(
        pd.to_datetime([int(r[0]) for r in ROWS], unit="s", utc=True).as_unit("ns"), name="time"
    )


# ----------------------------------------------------------------------------- malformed inputs


def _b(text: str):
    return lambda tmp: (text.encode(), {})


def _path(content: str | bytes, name: str = "data.csv"):
    def make(tmp: Path):
        p = tmp / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return str(p), {}

    return make


def _df(frame_factory, **kwargs):
    return lambda tmp: (frame_factory(), kwargs)


def _raw_frame() -> pd.DataFrame:
    return pd.read_csv(io.StringIO(csv_text()))


def _frame_with(column: str, row: int, value) -> pd.DataFrame:
    df = _raw_frame()
    df[column] = df[column].astype(object)
    df.loc[row - 1, column] = value
    return df


def _ts(text: str) -> str:
    return re.escape(text)


MALFORMED = [
    ("file-not-found", lambda tmp: (str(tmp / "nope.csv"), {}), r"nope\.csv: file not found"),
    ("sample-is-just-a-path", lambda tmp: ("sample", {}), r"^sample: file not found"),
    ("csv-text-as-str", lambda tmp: (csv_text(), {}), r"^<str>: a str source is a file path.*io\.StringIO"),
    ("directory", lambda tmp: (tmp, {}), r"is a directory"),
    ("empty-bytes", _b(""), r"^<bytes>: is empty"),
    ("empty-file", _path(""), r"data\.csv: is empty"),
    ("whitespace-file", _path("  \n\n  \n"), r"is empty"),
    ("binary-garbage", lambda tmp: (bytes(range(256)) * 4, {}), r"not a CSV text file \(binary content\)"),
    ("non-utf8", lambda tmp: (b"time,open\n\xff\xfe\xfa\xfb,1\n", {}), r"non-UTF-8 content at byte"),
    ("gzip", lambda tmp: (gzip.compress(csv_text().encode()), {}), r"gzip-compressed"),
    ("xlsx-zip", lambda tmp: (b"PK\x03\x04" + b"\x00" * 40, {}), r"Excel \.xlsx"),
    ("single-column", _b("hello\nworld\nfoo\n"), r"only one column \('hello'\)"),
    ("semicolons", _b(csv_text().replace(",", ";")), r"only one column.*';' as separator"),
    ("html", _b("<!DOCTYPE html>\n<html><body>404</body></html>\n"), r"looks like HTML"),
    ("json", _b('{"time": [1746057600], "open": [1.0]}'), r"looks like JSON"),
    ("json-list", _path('[{"time": 1746057600}]'), r"data\.csv: not a CSV file \(it looks like JSON\)"),
    ("header-only", _b(HEADER + "\n"), r"header but no data rows"),
    ("ragged-row", _b(csv_text() + "1746062100,1,2,0.5,1,10,99,98\n"), r"not a valid CSV file.*line 7"),
    (
        "missing-columns",
        _b(csv_text([r[:4] for r in ROWS], header="time,open,high,low")),
        r"missing column\(s\): close, volume; columns found: 'time', 'open', 'high', 'low'",
    ),
    ("missing-time-column", _b(csv_text(header="date,open,high,low,close,Volume")), r"missing column\(s\): time; columns found: 'date'"),
    ("ambiguous-volume", _b(csv_text([r + ["1"] for r in ROWS], header=HEADER + ",vol")), r"ambiguous volume columns 'Volume' and 'vol'"),
    ("ambiguous-case", _b(csv_text([r + ["1"] for r in ROWS], header=HEADER + ",Close")), r"ambiguous columns 'close' and 'Close'"),
    ("unparseable-time", _b(with_cell(3, "time", "yesterday")), r"unparseable time 'yesterday' in column 'time' at row 3"),
    (
        "mixed-number-and-iso",
        _b(with_cell(2, "time", "2025-05-01T00:15:00Z")),
        r"mixed time formats in column 'time': row 1 is a number .* but row 2 is text \('2025-05-01T00:15:00Z'\)",
    ),
    (
        "mixed-iso-and-us-dates",
        _b(csv_text([["2025-05-01T00:00:00Z"] + ROWS[0][1:], ["05/01/2025 00:15"] + ROWS[1][1:]])),
        r"unparseable time '05/01/2025 00:15' in column 'time' at row 2",
    ),
    (
        "mixed-iso-then-number",
        _b(csv_text([["2025-05-01 00:00:00"] + ROWS[0][1:], ["2025-05-01 00:15:00"] + ROWS[1][1:], ROWS[2]])),
        r"mixed time formats in column 'time': row 1 is text \('2025-05-01 00:00:00'\) but row 3 is a number \('1746059400'\)",
    ),
    ("frame-blank-time", _df(lambda: _frame_with("time", 3, "  ")), r"missing time in column 'time' at row 3"),
    ("mixed-seconds-and-ms", _b(with_cell(3, "time", "1746059400000")), r"mixed time units.*row 1 looks like UNIX seconds.*row 3 looks like UNIX milliseconds"),
    ("time-out-of-range", _b(with_cell(1, "time", "99999999999999")), r"time 99999999999999 in column 'time' at row 1 is out of range"),
    ("empty-time", _b(with_cell(4, "time", "")), r"missing time in column 'time' at row 4"),
    (
        "duplicate-timestamp",
        _b(with_cell(4, "time", "1746058500")),
        r"duplicate timestamp " + _ts("2025-05-01 00:15:00+00:00") + r" at rows 2, 4",
    ),
    ("non-numeric-price", _b(with_cell(3, "close", "abc")), r"non-numeric value 'abc' in column 'close' at row 3 \(2025-05-01 00:30:00\+00:00\)"),
    ("empty-price", _b(with_cell(2, "open", "")), r"missing value in column 'open' at row 2"),
    ("nan-price", _b(with_cell(5, "high", "NaN")), r"missing value in column 'high' at row 5"),
    ("zero-price", _b(with_cell(5, "low", "0")), r"non-positive price 0\.0 in column 'low' at row 5"),
    ("negative-price", _b(with_cell(1, "open", "-1")), r"non-positive price -1\.0 in column 'open' at row 1"),
    ("infinite-price", _b(with_cell(2, "close", "inf")), r"infinite value .* in column 'close' at row 2"),
    ("high-below-low", _b(with_cell(2, "high", "14.3")), r"impossible bar: high 14\.3 is below low 14\.323 at row 2"),
    ("high-below-close", _b(with_cell(3, "high", "14.39")), r"high 14\.39 is below open 14\.366 or close 14\.397 at row 3"),
    ("low-above-open", _b(with_cell(4, "low", "14.4")), r"low 14\.4 is above open 14\.397 or close 14\.435 at row 4"),
    ("negative-volume", _b(with_cell(1, "volume", "-5")), r"negative volume -5\.0 in column 'Volume' at row 1"),
    ("nan-volume", _b(with_cell(5, "volume", "")), r"missing value in column 'Volume' at row 5"),
    ("infinite-volume", _b(with_cell(3, "volume", "inf")), r"infinite value .* in column 'Volume' at row 3"),
    ("too-few-bars", lambda tmp: (csv_text().encode(), {"min_bars": 10}), r"only 5 bars; at least 10 are needed"),
    ("one-bar", lambda tmp: (csv_text(ROWS[:1]).encode(), {}), r"only 1 bar; at least 2 are needed"),
    ("custom-name", lambda tmp: (with_cell(3, "close", "x").encode(), {"name": "upload.csv"}), r"^upload\.csv: non-numeric value 'x'"),
    ("text-file-object", lambda tmp: (io.StringIO(with_cell(2, "low", "-3")), {}), r"^<file object>: non-positive price -3\.0 in column 'low' at row 2"),
    ("binary-file-object", lambda tmp: (io.BytesIO(b""), {}), r"^<file object>: is empty"),
    ("path-bad-row", _path(with_cell(5, "close", "1,5")), r"data\.csv: not a valid CSV file"),
    (
        "frame-without-time",
        _df(lambda: _raw_frame().drop(columns="time")),
        r"<DataFrame>: DataFrame has no 'time' column and its index is a RangeIndex, not a DatetimeIndex",
    ),
    ("frame-empty", _df(pd.DataFrame), r"<DataFrame>: is empty"),
    ("frame-nan-close", _df(lambda: _frame_with("close", 4, np.nan)), r"missing value in column 'close' at row 4"),
    ("frame-text-close", _df(lambda: _frame_with("close", 2, "n/a")), r"non-numeric value 'n/a' in column 'close' at row 2"),
    ("frame-inf-open", _df(lambda: _frame_with("open", 1, np.inf)), r"infinite value inf in column 'open' at row 1"),
    ("frame-nat-index", _df(lambda: _raw_frame().drop(columns="time").set_axis(pd.DatetimeIndex(["2025-01-01", None, "2025-01-02", "2025-01-03", "2025-01-04"]))), r"missing time in column 'time \(index\)' at row 2"),
    ("frame-missing-volume", _df(lambda: _raw_frame().drop(columns="Volume"), name="my frame"), r"^my frame: missing column\(s\): volume"),
    ("unsupported-int", lambda tmp: (42, {}), r"unsupported source type int; expected a path \(str or os\.PathLike\), CSV bytes"),
    ("unsupported-list", lambda tmp: ([1, 2, 3], {}), r"unsupported source type list.*pandas DataFrame"),
    ("bad-min-bars", lambda tmp: (csv_text().encode(), {"min_bars": -1}), r"min_bars must be an integer >= 0"),
]


@pytest.mark.parametrize("factory,pattern", [pytest.param(f, p, id=i) for i, f, p in MALFORMED])
def test_malformed_input_raises_data_error(tmp_path: Path, factory, pattern: str) -> None:
    source, kwargs = factory(tmp_path)
    with pytest.raises(DataError, match=pattern) as info:
        load_ohlcv(source, **kwargs)
    assert isinstance(info.value, (MerlinError, ValueError))


def test_malformed_matrix_is_large_enough() -> None:
    assert len(MALFORMED) >= 24


@pytest.mark.parametrize("source, column, row", [
    pytest.param(with_cell(3, "close", "abc"), "close", 3, id="non-numeric-price"),
    pytest.param(with_cell(1, "volume", "-5"), "Volume", 1, id="negative-volume"),
    pytest.param(with_cell(3, "time", "yesterday"), "time", 3, id="unparseable-time"),
    pytest.param(with_cell(4, "time", ""), "time", 4, id="empty-time"),
    pytest.param(with_cell(2, "high", "14.0"), None, 2, id="impossible-bar"),
    pytest.param(csv_text(header="date,open,high,low,close,Volume"), None, None, id="missing-column"),
])
def test_data_error_names_its_column_and_row(source: str, column, row) -> None:
    """The column and row the message names are attributes too, and survive pickling (worker -> parent)."""
    with pytest.raises(DataError) as info:
        load_ohlcv(source.encode())
    exc = info.value
    assert (exc.column, exc.row) == (column, row)
    if row is not None:
        assert f"at row {row}" in str(exc)
    copy = pickle.loads(pickle.dumps(exc))
    assert (str(copy), copy.column, copy.row) == (str(exc), column, row)


def test_file_object_is_not_closed() -> None:
    fh = io.BytesIO(csv_text().encode())
    load_ohlcv(fh)
    assert not fh.closed


# ---------------------------------------------------------------------------------- good inputs


def test_canonical_form() -> None:
    df = good_frame()
    assert list(df.columns) == list(OHLCV_COLUMNS)
    assert all(df[c].dtype == np.float64 for c in OHLCV_COLUMNS)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert str(df.index.tz) == "UTC"
    assert df.index.name == "time"
    assert df.index.is_monotonic_increasing
    pd.testing.assert_index_equal(df.index, expected_index())
    assert df["close"].tolist() == [14.338, 14.37, 14.397, 14.435, 14.45]
    assert df["volume"].iloc[2] == 296217.18


def test_every_source_type_gives_the_same_frame(tmp_path: Path) -> None:
    text = csv_text()
    path = tmp_path / "link.csv"
    path.write_text(text)
    raw = pd.read_csv(io.StringIO(text))
    with_index = raw.assign(time=pd.to_datetime(raw["time"], unit="s")).set_index("time")
    sources = {
        "path-str": str(path),
        "path": path,
        "bytes": text.encode(),
        "bytearray": bytearray(text.encode()),
        "bom-bytes": b"\xef\xbb\xbf" + text.encode(),
        "utf16-bytes": text.encode("utf-16"),
        "text-file": io.StringIO(text),
        "binary-file": io.BytesIO(text.encode()),
        "open-file": path.open("rb"),
        "frame-column": raw,
        "frame-datetimeindex": with_index,
        "frame-int-index-named-time": raw.set_index("time"),
    }
    reference = load_ohlcv(str(path))
    for label, source in sources.items():
        got = load_ohlcv(source)
        pd.testing.assert_frame_equal(got, reference, check_exact=True, obj=label)
    sources["open-file"].close()


def test_windows_line_endings_and_blank_lines() -> None:
    text = csv_text().replace("\n", "\r\n") + "\r\n\r\n"
    pd.testing.assert_frame_equal(load_ohlcv(text.encode()), good_frame())


def test_dataframe_is_copied_not_mutated() -> None:
    raw = pd.read_csv(io.StringIO(csv_text()))
    raw = raw.iloc[::-1]  # unsorted on purpose
    before = raw.copy(deep=True)
    got = load_ohlcv(raw)
    pd.testing.assert_frame_equal(raw, before)
    for col in ("open", "close"):
        assert not np.shares_memory(got[col].to_numpy(), raw[col].to_numpy())
    got.loc[got.index[0], "close"] = 999.0
    pd.testing.assert_frame_equal(raw, before)


def test_tz_aware_datetimeindex_is_converted_to_utc() -> None:
    raw = pd.read_csv(io.StringIO(csv_text()))
    idx = pd.to_datetime(raw["time"], unit="s", utc=True).dt.tz_convert("Europe/Berlin")
    frame = raw.drop(columns="time").set_index(pd.DatetimeIndex(idx, name="whatever"))
    pd.testing.assert_frame_equal(load_ohlcv(frame), good_frame())


def _iso_rows(fmt) -> list[list[str]]:
    return [[fmt(pd.Timestamp(int(r[0]), unit="s", tz="UTC"))] + r[1:] for r in ROWS]


@pytest.mark.parametrize(
    "fmt",
    [
        pytest.param(lambda t: str(int(t.timestamp()) * 1000), id="milliseconds"),
        pytest.param(lambda t: f"{t.timestamp():.1f}", id="float-seconds"),
        pytest.param(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), id="iso-Z"),
        pytest.param(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.000Z"), id="iso-Z-millis"),
        pytest.param(lambda t: (t + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"), id="iso-plus-0200"),
        pytest.param(lambda t: (t - pd.Timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S-05:00"), id="iso-minus-0500"),
        pytest.param(lambda t: t.strftime("%Y-%m-%d %H:%M:%S"), id="iso-naive-space"),
        pytest.param(lambda t: t.strftime("%Y-%m-%dT%H:%M"), id="iso-naive-T-minutes"),
    ],
)
def test_time_formats_give_identical_indexes(fmt) -> None:
    got = load_ohlcv(csv_text(_iso_rows(fmt)).encode())
    pd.testing.assert_index_equal(got.index, expected_index())
    pd.testing.assert_frame_equal(got, good_frame())


def test_iso_with_mixed_offsets_is_converted_per_row() -> None:
    rows = _iso_rows(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows[1][0] = "2025-05-01T02:15:00+02:00"
    rows[2][0] = "2025-05-01 00:30:00"
    pd.testing.assert_index_equal(load_ohlcv(csv_text(rows).encode()).index, expected_index())


@pytest.mark.parametrize(
    "header",
    [
        "time,open,high,low,close,volume",
        "Time,Open,High,Low,Close,Volume",
        "TIME,OPEN,HIGH,LOW,CLOSE,VOL",
        "time,open,high,low,close,vol",
        " time , Open , HIGH , low , Close , VOL ",
    ],
)
def test_column_name_variants(header: str) -> None:
    pd.testing.assert_frame_equal(load_ohlcv(csv_text(header=header).encode()), good_frame())


def test_extra_columns_and_column_order_are_ignored() -> None:
    df = pd.read_csv(io.StringIO(csv_text()))
    df["symbol"] = "LINK"
    df["note"] = None
    df = df[["Volume", "symbol", "close", "low", "note", "time", "high", "open"]]
    pd.testing.assert_frame_equal(load_ohlcv(df), good_frame())
    pd.testing.assert_frame_equal(load_ohlcv(df.to_csv(index=False).encode()), good_frame())


def test_unsorted_input_is_sorted() -> None:
    rows = [ROWS[i] for i in (3, 0, 4, 2, 1)]
    pd.testing.assert_frame_equal(load_ohlcv(csv_text(rows).encode()), good_frame())


def test_zero_volume_and_flat_bars_are_valid() -> None:
    rows = [list(r) for r in ROWS]
    rows[2] = [rows[2][0], "14.4", "14.4", "14.4", "14.4", "0"]
    df = load_ohlcv(csv_text(rows).encode())
    assert df["volume"].iloc[2] == 0.0


def test_min_bars_zero_and_one() -> None:
    assert len(load_ohlcv(csv_text(ROWS[:1]).encode(), min_bars=1)) == 1
    assert len(load_ohlcv(csv_text(ROWS[:1]).encode(), min_bars=0)) == 1


# ------------------------------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return sample(300)


def test_prepare_without_dates_uses_everything(bars: pd.DataFrame) -> None:
    p = prepare(bars, warmup_bars=50)
    assert p.n_bars == 300 and p.trade_start_idx == 0
    pd.testing.assert_frame_equal(p.frame(), bars)


def test_prepare_start_in_the_middle(bars: pd.DataFrame) -> None:
    start = bars.index[120]
    p = prepare(bars, start, None, warmup_bars=50)
    assert p.trade_start_idx == 50
    assert p.index[0] == bars.index[70]
    assert p.index[p.trade_start_idx] == start
    assert p.n_bars == 300 - 70


def test_prepare_warmup_larger_than_available(bars: pd.DataFrame) -> None:
    p = prepare(bars, bars.index[30], bars.index[200], warmup_bars=1000)
    assert p.index[0] == bars.index[0]
    assert p.trade_start_idx == 30
    assert p.index[-1] == bars.index[200]
    assert p.n_bars == 201


def test_prepare_end_is_inclusive_and_between_bars(bars: pd.DataFrame) -> None:
    on_bar = prepare(bars, None, bars.index[150], warmup_bars=10)
    assert on_bar.index[-1] == bars.index[150] and on_bar.trade_start_idx == 0 and on_bar.n_bars == 151
    between = prepare(bars, None, bars.index[150] + pd.Timedelta(minutes=14, seconds=59), warmup_bars=10)
    assert between.index[-1] == bars.index[150]
    after_end = prepare(bars, None, "2100-01-01")
    assert after_end.n_bars == 300


def test_prepare_start_on_bar_vs_between_bars(bars: pd.DataFrame) -> None:
    on_bar = prepare(bars, bars.index[120], None, warmup_bars=20)
    between = prepare(bars, bars.index[120] + pd.Timedelta(minutes=1), None, warmup_bars=20)
    assert on_bar.index[on_bar.trade_start_idx] == bars.index[120]
    assert between.index[between.trade_start_idx] == bars.index[121]
    assert on_bar.trade_start_idx == between.trade_start_idx == 20
    before_data = prepare(bars, "2000-01-01", None, warmup_bars=20)
    assert before_data.trade_start_idx == 0 and before_data.n_bars == 300


def test_prepare_date_types_are_equivalent(bars: pd.DataFrame) -> None:
    t = bars.index[100]  # 2024-01-02 01:00 UTC
    variants = [
        "2024-01-02 01:00:00",
        "2024-01-02T01:00:00Z",
        "2024-01-02T03:00:00+02:00",
        dt.datetime(2024, 1, 2, 1, 0),
        dt.datetime(2024, 1, 2, 1, 0, tzinfo=dt.timezone.utc),
        pd.Timestamp("2024-01-02 02:00", tz="Europe/Paris"),
        np.datetime64("2024-01-02T01:00"),
        t,
    ]
    for v in variants:
        p = prepare(bars, v, None, warmup_bars=5)
        assert p.index[p.trade_start_idx] == t, v
    day = prepare(bars, dt.date(2024, 1, 2), None, warmup_bars=0)
    assert day.index[0] == pd.Timestamp("2024-01-02", tz="UTC")


def test_prepare_single_bar_window(bars: pd.DataFrame) -> None:
    p = prepare(bars, bars.index[10], bars.index[10], warmup_bars=3)
    assert p.n_bars == 4 and p.trade_start_idx == 3


def test_prepared_arrays(bars: pd.DataFrame) -> None:
    p = prepare(bars, bars.index[100], bars.index[250], warmup_bars=40)
    window = bars.iloc[60:251]
    for col in OHLCV_COLUMNS:
        arr = getattr(p, col)
        assert arr.dtype == np.float64 and arr.flags.c_contiguous and not arr.flags.writeable
        np.testing.assert_array_equal(arr, window[col].to_numpy())
        with pytest.raises(ValueError):
            arr[0] = 1.0
    assert p.time.dtype == np.int64 and not p.time.flags.writeable
    np.testing.assert_array_equal(p.time, window.index.asi8 // 10**9)
    assert str(p.index.tz) == "UTC" and p.index.name == "time"
    pd.testing.assert_frame_equal(p.frame(), window)
    f = p.frame()
    f.iloc[0, 0] = -1.0  # the frame is a copy
    assert p.open[0] == window["open"].iloc[0]
    assert fingerprint(p) == fingerprint(window) == fingerprint(p.frame())
    assert "trade_start_idx=40" in repr(p)
    with pytest.raises(AttributeError):
        p.trade_start_idx = 3  # type: ignore[misc]


def test_prepared_data_constructor_freezes_arrays() -> None:
    idx = pd.date_range("2025-01-01", periods=3, freq="15min")
    close = np.array([1.0, 2.0, 3.0])
    p = PreparedData(idx, idx.asi8 // 10**9, close, close + 1, close - 0.5, close, close, trade_start_idx=1)
    assert not p.close.flags.writeable and close.flags.writeable
    assert str(p.index.tz) == "UTC" and p.n_bars == 3
    with pytest.raises(DataError, match="one per index entry"):
        PreparedData(idx, idx.asi8, close[:2], close, close, close, close)
    with pytest.raises(DataError, match="trade_start_idx"):
        PreparedData(idx, idx.asi8, close, close, close, close, close, trade_start_idx=3)


@pytest.mark.parametrize(
    "start,end,kwargs,pattern",
    [
        ("2024-01-03", "2024-01-02", {}, r"start 2024-01-03 00:00:00\+00:00 is after end 2024-01-02 00:00:00\+00:00"),
        ("2030-01-01", None, {}, r"after the last bar; the data runs from 2024-01-01 00:00:00\+00:00 to 2024-01-04 02:45:00\+00:00"),
        ("2030-01-01", "2031-01-01", {}, r"start 2030-01-01 .* is after the last bar; the data runs from 2024-01-01"),
        (None, "2020-01-01", {}, r"end 2020-01-01 00:00:00\+00:00 is before the first bar; the data runs from 2024-01-01 00:00:00\+00:00"),
        ("2019-01-01", "2020-01-01", {}, r"before the first bar"),
        ("2024-01-01 00:01", "2024-01-01 00:14", {}, r"no bars between start 2024-01-01 00:01:00\+00:00 and end 2024-01-01 00:14:00\+00:00"),
        (None, None, {"warmup_bars": -1}, r"warmup_bars must be an integer >= 0, got -1"),
        ("not a date", None, {}, r"start 'not a date' is not a date"),
        (None, 12345, {}, r"end must be None, an ISO date string, a datetime or a Timestamp, got int"),
    ],
)
def test_prepare_errors(bars: pd.DataFrame, start, end, kwargs, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        prepare(bars, start, end, **kwargs)


def test_prepare_window_inside_a_gap() -> None:
    df = sample(200)
    gapped = pd.concat([df.iloc[:50], df.iloc[100:]])
    with pytest.raises(DataError, match=r"no bars between"):
        prepare(gapped, df.index[60], df.index[90])
    p = prepare(gapped, df.index[60], None, warmup_bars=10)
    assert p.index[p.trade_start_idx] == df.index[100] and p.trade_start_idx == 10


def test_prepare_rejects_non_frames() -> None:
    with pytest.raises(DataError, match="load_ohlcv"):
        prepare(pd.read_csv(io.StringIO(csv_text())))
    with pytest.raises(DataError, match="missing column"):
        prepare(good_frame().drop(columns="volume"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 60),
    s=st.integers(-5, 65),
    length=st.integers(0, 70),
    warmup=st.integers(0, 80),
    offset_s=st.integers(0, 899),
)
def test_prepare_window_arithmetic_property(n: int, s: int, length: int, warmup: int, offset_s: int) -> None:
    df = sample(60).iloc[:n]
    base = df.index[0]
    start = base + pd.Timedelta(seconds=900 * s + offset_s)
    end = base + pd.Timedelta(seconds=900 * (s + length) + offset_s)
    times = df.index
    s_idx = int(np.searchsorted(times.asi8, start.value, side="left"))
    e_idx = int(np.searchsorted(times.asi8, end.value, side="right")) - 1
    if s_idx >= n or e_idx < 0 or s_idx > e_idx:
        with pytest.raises(DataError):
            prepare(df, start, end, warmup)
        return
    p = prepare(df, start, end, warmup)
    lo = max(0, s_idx - warmup)
    assert p.index[0] == times[lo]
    assert p.index[-1] == times[e_idx]
    assert p.trade_start_idx == s_idx - lo
    assert p.index[p.trade_start_idx] >= start
    assert p.trade_start_idx == 0 or p.index[p.trade_start_idx - 1] < start
    assert p.index[-1] <= end


# --------------------------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_column_order_extras_and_index_name() -> None:
    df = good_frame()
    fp = fingerprint(df)
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fingerprint(df[list(reversed(OHLCV_COLUMNS))]) == fp
    assert fingerprint(df.rename_axis("date")) == fp
    assert fingerprint(df.assign(extra=1.0)) == fp
    assert fingerprint(pd.read_csv(io.StringIO(csv_text()))) == fp  # normalised through load_ohlcv
    assert fingerprint(df.copy()) == fp


def test_fingerprint_changes_with_any_value_or_time() -> None:
    df = good_frame()
    fp = fingerprint(df)
    changed = df.copy()
    changed.iloc[2, 4] += 0.001
    assert fingerprint(changed) != fp
    shifted = df.copy()
    shifted.index = shifted.index + pd.Timedelta(seconds=1)
    assert fingerprint(shifted) != fp
    assert fingerprint(df.iloc[:4]) != fp
    with pytest.raises(DataError):
        fingerprint([1, 2, 3])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ sample()


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return sample()


def test_sample_is_deterministic(synthetic: pd.DataFrame) -> None:
    again = sample()
    pd.testing.assert_frame_equal(again, synthetic, check_exact=True)
    assert fingerprint(again) == fingerprint(synthetic)
    assert fingerprint(sample(seed=1)) != fingerprint(synthetic)
    pd.testing.assert_frame_equal(sample(500), synthetic.iloc[:500], check_exact=True)


def test_sample_shape_and_validity(synthetic: pd.DataFrame) -> None:
    assert len(synthetic) >= 20_000
    assert synthetic.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert (np.diff(synthetic.index.asi8) == 900 * 10**9).all()
    pd.testing.assert_frame_equal(load_ohlcv(synthetic), synthetic)
    close = synthetic["close"]
    assert 3.0 < close.min() and close.max() < 200.0 and 10.0 < close.median() < 60.0
    assert (synthetic["volume"] > 0).all()
    np.testing.assert_array_equal(synthetic["open"].to_numpy()[1:], close.to_numpy()[:-1])


def test_sample_has_trends_and_ranges(synthetic: pd.DataFrame) -> None:
    close = synthetic["close"].to_numpy()
    chunk = close[: len(close) // 500 * 500].reshape(-1, 500)
    ret = chunk[:, -1] / chunk[:, 0] - 1.0
    signs = np.sign(ret)
    assert (signs[1:] != signs[:-1]).sum() >= 6
    # efficiency ratio: net move / path length; trends score high, ranges low
    path = np.abs(np.diff(chunk, axis=1)).sum(axis=1)
    er = np.abs(chunk[:, -1] - chunk[:, 0]) / path
    assert er.max() > 0.12 and er.min() < 0.02
    assert np.abs(ret).max() > 0.15 and np.abs(ret).min() < 0.03


def test_sample_has_volatility_clustering(synthetic: pd.DataFrame) -> None:
    r = np.diff(np.log(synthetic["close"].to_numpy()))
    a = np.abs(r) - np.abs(r).mean()
    acf1 = (a[1:] * a[:-1]).mean() / a.var()
    assert acf1 > 0.1
    # volume follows volatility
    rolling_vol = pd.Series(np.abs(r)).rolling(96).mean()
    rolling_volume = synthetic["volume"].iloc[1:].reset_index(drop=True).rolling(96).mean()
    assert rolling_vol.corr(rolling_volume) > 0.3


def test_sample_rejects_bad_size() -> None:
    with pytest.raises(DataError, match="n_bars"):
        sample(0)


# ------------------------------------------------------------------------------- reference file


def _link_path() -> Path:
    directory = shared_data_dir()
    if not directory.is_dir():
        pytest.skip(f"../shared/data not found beside the repository (looked in {directory})")
    path = directory / LINK_FILE
    if not path.is_file():
        pytest.skip(f"{LINK_FILE} not found in {directory}")
    return path


def test_reference_file_loads_and_prepares() -> None:
    path = _link_path()
    frame = load_ohlcv(path)
    assert len(frame) == 19_584
    assert frame.index[0] == pd.Timestamp("2025-05-01 00:00", tz="UTC")
    assert (np.diff(frame.index.asi8) == 900 * 10**9).all()
    p = prepare(frame, "2025-06-15 00:00:00", "2025-11-15 00:00:00", 1000)
    assert p.trade_start_idx == 1000
    assert p.index[p.trade_start_idx] == pd.Timestamp("2025-06-15 00:00", tz="UTC")
    assert p.index[-1] == pd.Timestamp("2025-11-15 00:00", tz="UTC")
    assert fingerprint(load_ohlcv(path.read_bytes())) == fingerprint(frame)


def test_reference_file_loads_fast() -> None:
    path = _link_path()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        load_ohlcv(path)
        best = min(best, time.perf_counter() - t0)
    assert best < 0.1, f"loading {LINK_FILE} took {best * 1000:.1f} ms"


def test_prepared_window_save_and_load_round_trip(tmp_path: Path) -> None:
    prepared = prepare(load_ohlcv(sample(3000)), "2024-01-10", None, 500)
    path = tmp_path / "window.npz"
    prepared.save(path)
    back = PreparedData.load(path)
    assert back.index.equals(prepared.index) and str(back.index.tz) == "UTC"
    assert back.trade_start_idx == prepared.trade_start_idx
    for col in ("time", *OHLCV_COLUMNS):
        np.testing.assert_array_equal(getattr(back, col), getattr(prepared, col))
        assert not getattr(back, col).flags.writeable
    assert fingerprint(back) == fingerprint(prepared)


def test_prepared_window_load_names_a_bad_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a prepared window written by PreparedData\.save"):
        PreparedData.load(junk)
    partial = tmp_path / "partial.npz"
    np.savez(partial, time=np.arange(3))
    with pytest.raises(DataError, match="prepared window lacks index_ns, open, high, low, close, volume, trade_start_idx"):
        PreparedData.load(partial)
