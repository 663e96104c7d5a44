"""Loading speed: ``load_ohlcv`` on a 1,000,000-bar file against a plain pandas read of the same file.

Run:  python benchmarks/bench_load.py [--bars 1000000] [--repeat 7]

A synthetic 1M-bar series is written once to a temp folder as CSV with epoch
seconds, CSV with ISO-8601 times, Parquet and Feather (the last two only when
pyarrow is installed).  Each repeat runs every row once, in turn (interleaved,
so a busy machine slows all rows alike); the table shows medians and the ratio
to the plain read of the same CSV:

* plain ``pd.read_csv`` (epoch) and ``pd.read_csv(parse_dates=["time"])`` (ISO):
  the reference, no validation;
* ``load_ohlcv`` of each CSV (full validation);
* ``load_ohlcv`` of the Parquet and Feather files written by ``merlin-kit
  convert`` (uncompressed), and of a Parquet file as pandas writes it by default
  (snappy; information only): same validation, ratio against the plain epoch
  CSV read.

Targets: load_ohlcv CSV <= 2x the plain read of that file (both styles);
Parquet/Feather <= 0.5x the plain epoch CSV read.  Each target line is
printed OK or MISSED with its figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from merlin_kit import load_ohlcv, save_ohlcv
from merlin_kit.errors import DataError


def write_files(folder: Path, n: int) -> dict[str, Path]:
    """The same bars as epoch CSV, ISO CSV and (with pyarrow) Parquet and Feather."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    secs = 1_600_000_000 + np.arange(n, dtype=np.int64) * 900
    frame = pd.DataFrame({"time": secs, "open": open_.round(6), "high": high.round(6), "low": low.round(6),
                          "close": close.round(6), "volume": rng.uniform(0, 1000, n).round(3)})
    files = {"epoch": folder / "bars_epoch.csv", "iso": folder / "bars_iso.csv"}
    frame.to_csv(files["epoch"], index=False)
    iso = frame.assign(time=pd.to_datetime(secs, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"))
    iso.to_csv(files["iso"], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        print("(pyarrow not installed: Parquet and Feather rows skipped)")
        return files
    loaded = load_ohlcv(files["epoch"])
    for kind in ("parquet", "feather"):  # as `merlin-kit convert` writes them
        files[kind] = folder / f"bars.{kind}"
        save_ohlcv(loaded, files[kind])
    files["parquet_snappy"] = folder / "bars_snappy.parquet"  # pandas' default: compressed, epoch seconds
    frame.to_parquet(files["parquet_snappy"], index=False)
    return files


def interleaved(rows: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each row, the rows run in turn ``repeat`` times (after one warm-up round)."""
    times: dict[str, list[float]] = {k: [] for k in rows}
    for i in range(repeat + 1):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), args.bars)
        rows: dict[str, Callable[[], object]] = {
            "plain pd.read_csv (epoch)": lambda: pd.read_csv(files["epoch"]),
            "load_ohlcv CSV (epoch)": lambda: load_ohlcv(files["epoch"]),
            "plain pd.read_csv(parse_dates) (ISO)": lambda: pd.read_csv(files["iso"], parse_dates=["time"]),
            "load_ohlcv CSV (ISO)": lambda: load_ohlcv(files["iso"]),
        }
        for kind, label in (("parquet", "Parquet"), ("feather", "Feather"), ("parquet_snappy", "Parquet (pandas default, snappy)")):
            if kind in files:
                rows[f"load_ohlcv {label}"] = (lambda p: lambda: load_ohlcv(p))(files[kind])
        for name in [k for k in rows if "Parquet" in k or "Feather" in k]:
            try:
                rows[name]()
            except DataError as exc:  # a version without Parquet/Feather input: show the row as unsupported
                print(f"({name}: not supported here: {exc})")
                del rows[name]
        med = interleaved(rows, args.repeat)
    ref = {name: med["plain pd.read_csv (epoch)"] for name in med}
    ref["plain pd.read_csv(parse_dates) (ISO)"] = ref["load_ohlcv CSV (ISO)"] = med["plain pd.read_csv(parse_dates) (ISO)"]
    targets = {"load_ohlcv CSV (epoch)": 2.0, "load_ohlcv CSV (ISO)": 2.0, "load_ohlcv Parquet": 0.5, "load_ohlcv Feather": 0.5}
    width = max(len(k) for k in med)
    print(f"{args.bars:,} bars, median of {args.repeat} interleaved repeats")
    print(f"{'case':<{width}}  {'median ms':>10}  {'x plain':>8}  target")
    print("-" * (width + 40))
    for name, sec in med.items():
        ratio = sec / ref[name]
        goal = targets.get(name)
        verdict = "" if goal is None else f"<= {goal}x  {'OK' if ratio <= goal else 'MISSED'} ({ratio:.2f}x)"
        print(f"{name:<{width}}  {sec * 1e3:>10.1f}  {ratio:>8.2f}  {verdict}")
    for name in targets.keys() - med.keys():
        print(f"{name:<{width}}  {'-':>10}  {'-':>8}  <= {targets[name]}x  MISSED (not supported)")


if __name__ == "__main__":
    main()
