"""OHLCV input: one validated entry point for every source, and the prepared window.

Every way data reaches the kit -- a path, bytes from a notebook upload, an open
file, a DataFrame already in memory -- goes through :func:`load_ohlcv`, so there
is exactly one definition of "valid OHLCV": a UTC ``DatetimeIndex`` named
``time`` (sorted, unique) and float64 ``open, high, low, close, volume``.

Bad input fails *here*, at load time, with a :class:`~merlin_kit.errors.DataError`
written for a person: it names the source, the problem, and where it applies the
column, the 1-based data row (the header is not counted; blank lines are
skipped) and the value or timestamp.  A backtest that silently runs on a
shifted, duplicated or impossible bar is worse than no backtest.

Validation is vectorised (the 19,584-bar reference file loads in ~15 ms, a
million bars in under twice a plain ``pandas.read_csv``); Python only loops to
phrase the message for the first bad row.  Parquet and Feather files (with the
``parquet`` extra, pyarrow) are recognised by their content and validated alike.
A frame ``load_ohlcv`` returned is remembered (:func:`is_validated`) until it
is changed, so ``backtest(frame)`` does not check the same bars again.

:func:`prepare` cuts the date window with warm-up described in
``METRICS_AND_INDICATORS.md`` ("Data window") into :class:`PreparedData`, the
read-only contiguous arrays strategies run on.  :func:`sample` makes a
deterministic synthetic series for demos and tests (no network, no files);
the name ``"sample"`` stands for it wherever a data source is accepted
(:func:`load_data`, the one place that name is interpreted).

The public names live here; the modules behind them are private, one job each:
``_load`` (reading and validating OHLCV), ``_columnar`` (Parquet/Feather in and
out), ``_validated`` (which frames ``load_ohlcv`` returned, unchanged since), ``_window`` (:class:`PreparedData`,
:func:`prepare`, :func:`fingerprint`), ``_sample`` (the synthetic series) and
``_sources`` (the name ``"sample"``, :func:`load_data`, :func:`source_as_path`).
"""

from ._columnar import format_for, save_ohlcv
from ._load import OHLCV_COLUMNS, PRICE_COLUMNS, VOLUME_ALIASES, DataSource, load_ohlcv
from ._sample import sample
from ._sources import SAMPLE_SOURCE, is_sample, load_data, source_as_path
from ._validated import is_validated
from ._window import PreparedData, fingerprint, prepare

__all__ = [
    "OHLCV_COLUMNS",
    "DataSource",
    "PRICE_COLUMNS",
    "PreparedData",
    "SAMPLE_SOURCE",
    "VOLUME_ALIASES",
    "fingerprint",
    "format_for",
    "is_sample",
    "is_validated",
    "load_data",
    "load_ohlcv",
    "prepare",
    "sample",
    "save_ohlcv",
    "source_as_path",
]
