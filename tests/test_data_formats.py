"""Parquet/Feather input and ``merlin-kit convert``; the CSV fast path; the "already validated" frame of backtest()."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from merlin_kit import backtest, load_ohlcv, prepare, save_ohlcv
from merlin_kit.data import is_validated
from merlin_kit.errors import DataError

pytest.importorskip("pyarrow")  # the [parquet] extra; part of [test]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merlin_kit", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def csv_path(write_sample_csv) -> Path:
    return write_sample_csv("formats.csv", 3000)


@pytest.fixture(scope="module")
def frame(csv_path) -> pd.DataFrame:
    return load_ohlcv(csv_path)


# ------------------------------------------------------------------ Parquet / Feather


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_convert_then_load_gives_the_same_bars(csv_path, frame, tmp_path, suffix):
    out = tmp_path / f"bars{suffix}"
    done = cli("convert", str(csv_path), str(out))
    assert done.returncode == 0, done.stderr
    assert "3000 bars written" in done.stdout
    pd.testing.assert_frame_equal(load_ohlcv(out), frame)
    pd.testing.assert_frame_equal(load_ohlcv(out.read_bytes()), frame)  # recognised by content, not by name
    with out.open("rb") as fh:
        pd.testing.assert_frame_equal(load_ohlcv(fh), frame)
    renamed = tmp_path / "no_suffix"
    renamed.write_bytes(out.read_bytes())
    pd.testing.assert_frame_equal(load_ohlcv(renamed), frame)


@pytest.mark.parametrize("time_style", ["epoch", "iso", "ms"])
def test_pandas_written_files_load_like_the_csv(csv_path, frame, tmp_path, time_style):
    raw = frame.reset_index()  # a table with a time column, as a user would write it with pandas
    secs = frame.index.asi8 // 10**9
    raw["time"] = {"epoch": secs, "ms": secs * 1000, "iso": frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")}[time_style]
    raw.to_parquet(tmp_path / "a.parquet")  # snappy, a RangeIndex in the pandas metadata
    raw.to_feather(tmp_path / "a.feather")
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "a.parquet"), frame)
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "a.feather"), frame)


def test_parquet_bars_are_validated_like_csv(frame, tmp_path):
    bad = frame.reset_index()
    bad.loc[7, "low"] = -1.0
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: non-positive price -1\.0 in column 'low' at row 8 ") as info:
        load_ohlcv(tmp_path / "bad.parquet")
    assert info.value.row == 8
    frame.reset_index().drop(columns="volume").to_parquet(tmp_path / "novol.parquet")
    with pytest.raises(DataError, match=r"missing column\(s\): volume"):
        load_ohlcv(tmp_path / "novol.parquet")
    (tmp_path / "cut.parquet").write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    with pytest.raises(DataError, match=r"cut\.parquet: not a readable Parquet file"):
        load_ohlcv(tmp_path / "cut.parquet")


def test_parquet_index_time_and_cli_backtest(csv_path, frame, tmp_path):
    frame.to_parquet(tmp_path / "indexed.parquet")  # time as the (UTC) index, as df.to_parquet() writes it
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "indexed.parquet"), frame)
    a = cli("backtest", "--data", str(csv_path), "--json")
    b = cli("backtest", "--data", str(tmp_path / "indexed.parquet"), "--json")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_without_pyarrow_a_parquet_file_names_the_extra(frame, tmp_path):
    save_ohlcv(frame, tmp_path / "bars.parquet")
    code = ("import sys; sys.modules['pyarrow'] = None\n"  # as if pyarrow were not installed
            "from merlin_kit import load_ohlcv\n"
            f"load_ohlcv({str(tmp_path / 'bars.parquet')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "DataError" in done.stderr and "needs pyarrow" in done.stderr and "merlin-kit[parquet]" in done.stderr


def test_convert_refuses_an_unknown_suffix_before_reading(tmp_path):
    done = cli("convert", "sample", str(tmp_path / "bars.xlsx"))
    assert done.returncode == 2
    assert "unknown output format" in done.stderr and ".parquet" in done.stderr
    assert not (tmp_path / "bars.xlsx").exists()
    with pytest.raises(DataError, match="needs the DataFrame returned by load_ohlcv"):
        save_ohlcv(pd.DataFrame({"close": [1.0]}), tmp_path / "x.csv")


# ------------------------------------------------------------------ CSV fast path


def test_spaces_after_commas_still_skipped(frame):
    """skipinitialspace is only dropped when no field starts with a space or tab: same bars either way."""
    plain = frame.head(50).reset_index()
    plain["time"] = plain["time"].astype("int64") // 10**9
    text = plain.to_csv(index=False)
    spaced = text.replace(",", ", ").replace("\n", "\n\t", 3)
    iso = frame.head(50).reset_index().assign(time=lambda d: d["time"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(index=False)
    want = frame.head(50)
    for data in (text, spaced, "\ufeff" + spaced, iso, ", ".join(iso.split(","))):
        pd.testing.assert_frame_equal(load_ohlcv(data.encode()), want, check_freq=False)
        pd.testing.assert_frame_equal(load_ohlcv(io.StringIO(data)), want, check_freq=False)
    quoted = text.replace("\n", "\n", 1).replace(",", ', "', 1).replace(",", '",', 2).replace('",', ",", 1)
    assert load_ohlcv(quoted.encode()).equals(load_ohlcv(io.StringIO(quoted)))


# ------------------------------------------------------------------ validated frames


@pytest.fixture()
def fresh(csv_path) -> pd.DataFrame:
    return load_ohlcv(csv_path)


def test_unchanged_frame_is_not_validated_again(fresh):
    assert is_validated(fresh)
    assert not is_validated(fresh.copy())  # another object: checked again when used
    first = prepare(fresh, "2024-01-05", None, 100)
    assert prepare(fresh, "2024-01-05", None, 100) is first  # read-only window reused while the frame is unchanged
    a = backtest(fresh, start="2024-01-05", warmup_bars=100)
    b = backtest(load_ohlcv(fresh.copy()), start="2024-01-05", warmup_bars=100)
    assert a.metrics == b.metrics and is_validated(fresh)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda df: df.iloc.__setitem__((5, 2), -1.0), r"non-positive price -1\.0 in column 'low' at row 6"),
        (lambda df: df.loc.__setitem__((slice(None), "close"), df["close"] * 2), r"impossible bar: high .* below open .* or close"),
        (lambda df: df.__setitem__("volume", -df["volume"]), r"negative volume"),
        (lambda df: setattr(df, "index", df.index[[0] * 2 + list(range(2, len(df)))]), r"duplicate timestamp"),
        (lambda df: setattr(df, "columns", ["open", "h", "low", "close", "volume"]), r"missing column\(s\): high"),
        (lambda df: df.__setitem__("low", df["high"] * 1.01), r"impossible bar: high .* below low"),
    ],
    ids=["iloc-cell", "loc-column-scaled", "column-assigned", "index-replaced", "column-renamed", "column-swapped-in"],
)
def test_mutated_frame_is_checked_again(fresh, mutate, error):
    backtest(fresh)  # validated, window memoised
    mutate(fresh)
    assert not is_validated(fresh)
    with pytest.raises(DataError, match=error):
        backtest(fresh)


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # pandas 3.1 deprecates inplace=; users still call it
@pytest.mark.parametrize(
    "mutate",
    [
        lambda df: df.drop(index=df.index[10:20], inplace=True),
        lambda df: df.sort_index(ascending=False, inplace=True),
        lambda df: df.iloc.__setitem__((3, 0), df.iat[3, 0]),  # same value written: still a write
        lambda df: df.__setitem__("extra", 1.0),
    ],
    ids=["rows-dropped", "rows-reordered", "cell-rewritten", "column-added"],
)
def test_valid_changes_are_rechecked_and_used(fresh, mutate):
    before = prepare(fresh)
    mutate(fresh)
    assert not is_validated(fresh)
    after = prepare(fresh) if fresh.index.is_monotonic_increasing else prepare(load_ohlcv(fresh))
    assert after is not before
    np.testing.assert_array_equal(after.close, load_ohlcv(fresh)["close"].to_numpy())
    backtest(fresh)  # re-validated, runs on the changed bars


ISO_ROWS = "2025-05-01T00:00:00Z,1,2,0.5,1.5,10\n2025-05-01T00:15:00Z,1,2,0.5,1.5,10\n"


@pytest.mark.parametrize("header", ["time,open,high,low,close,volume\n", "  time,open,high,low,close,volume\n",
                                    "\n\n time,open,high,low,close,volume\n", "\ufeff time ,open,high,low,close,Vol\r\n",
                                    "\t Time,open,high,low,close,volume\n"])
def test_iso_times_parsed_while_reading_match_the_text_path(header):
    """Bytes take the fast path (times parsed by the reader); a str source the original one: same frame."""
    text = header + ISO_ROWS
    pd.testing.assert_frame_equal(load_ohlcv(text.encode()), load_ohlcv(io.StringIO(text)))


@pytest.mark.parametrize(("second", "error"), [
    (",1,2,0.5,1.5,10", r"missing time in column 'time' at row 2"),
    ("2025-13-01T00:00:00Z,1,2,0.5,1.5,10", r"unparseable time '2025-13-01T00:00:00Z' in column 'time' at row 2"),
    ("1746058500,1,2,0.5,1.5,10", r"mixed time formats in column 'time': row 1 is text"),
    ("2025-05-01T00:00:00Z,1,2,0.5,1.5,10", r"duplicate timestamp 2025-05-01 00:00:00\+00:00 at rows 1, 2"),
])
def test_iso_time_errors_unchanged_on_the_fast_path(second, error):
    text = "time,open,high,low,close,volume\n2025-05-01T00:00:00Z,1,2,0.5,1.5,10\n" + second + "\n"
    for source in (text.encode(), io.StringIO(text)):
        with pytest.raises(DataError, match=error):
            load_ohlcv(source)
