"""Backtest speed: median time of one full S01 backtest (indicators + kernel + metrics).

Run:  python benchmarks/bench_backtest.py [--repeat 30]

Rows (side by side, one run):
* the LINK file with the reference parameters, cold indicators (a fresh cache each
  call: what a one-off backtest pays) and warm (what an optimisation trial pays once
  its MA series are cached), and the public ``merlin_kit.backtest()`` call from a
  prepared window and from the frame ``load_ohlcv`` returned, with the S01 window
  (not validated again; DataFrames for trades and curves included);
* the same with each of the 11 MA kinds as maType and trailMaType (cold);
* the bundled sample data and a 1,000,000-bar synthetic series;
* the first call in a fresh process with a warm JIT cache (import + load + run).

Targets (2-core machine class): <= 1 ms on LINK with the reference parameters (cold,
and the public call on a load_ohlcv frame),
no MA kind above 5 ms, <= 50 ms on 1M bars, <= 1.5 s first call in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from merlin_kit import Backtester, IndicatorCache, MA_KINDS, backtest, load_ohlcv, prepare, sample

HERE = Path(__file__).resolve().parent
LINK = HERE.parent.parent / "shared" / "data" / "OKX_LINKUSDT.P_15m_2025-05-01_2025-11-20.csv"
BASELINE = HERE.parent.parent / "shared" / "data" / "s01_baseline_metrics.json"
RUN_KEYS = {"backtester", "dateFilter", "start", "end"}


def median_ms(fn, repeat: int) -> float:
    fn()  # JIT load / warm caches outside the timing
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def cold(strategy, data, params):
    return lambda: Backtester(strategy, data, cache=IndicatorCache()).run(params)


def warm(strategy, data, params):
    bt = Backtester(strategy, data)
    return lambda: bt.run(params)


def first_call_seconds(csv: str, start: str | None, end: str | None) -> float:
    code = (
        "import time; t0=time.perf_counter()\n"
        "from merlin_kit import backtest\n"
        f"backtest({csv!r}, 's01_trailing_ma', start={start!r}, end={end!r})\n"
        "print(time.perf_counter()-t0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # make sure the cache is warm
    runs = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
            for _ in range(3)]
    return statistics.median(runs)


def synthetic(n: int) -> "object":
    """A 1M-bar series: the sample's returns tiled (structure kept, prices stay positive)."""
    base = sample(24_000)
    reps = -(-n // len(base))
    close = base["close"].to_numpy()
    rets = np.tile(np.diff(np.log(close), prepend=np.log(close[0])), reps)[:n]
    level = np.exp(np.cumsum(rets) - np.cumsum(rets).mean() + np.log(close.mean()))
    scale = level / np.tile(close, reps)[:n]
    frame = base.iloc[np.arange(n) % len(base)].copy()
    for col in ("open", "high", "low", "close"):
        frame[col] = frame[col].to_numpy() * scale
    frame.index = base.index[0] + np.arange(n) * (base.index[1] - base.index[0])
    frame.index.name = "time"
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    rows: list[tuple[str, int, float, str]] = []

    if LINK.exists():
        meta = json.loads(BASELINE.read_text())
        params = {k: v for k, v in meta["parameters"].items() if k not in RUN_KEYS}
        start, end = meta["parameters"]["start"], meta["parameters"]["end"]
        frame = load_ohlcv(LINK)
        link = prepare(frame, start, end, meta["warmup_bars"])
        rows.append(("LINK, reference params, cold indicators", link.n_bars, median_ms(cold("s01_trailing_ma", link, params), args.repeat), "<= 1 ms"))
        rows.append(("LINK, reference params, warm (optimisation trial)", link.n_bars, median_ms(warm("s01_trailing_ma", link, params), args.repeat), ""))
        rows.append(("LINK, merlin_kit.backtest(prepared) -> result", link.n_bars, median_ms(lambda: backtest(link, "s01_trailing_ma", params), args.repeat), ""))

        def from_frame():
            return backtest(frame, "s01_trailing_ma", params, start=start, end=end, warmup_bars=meta["warmup_bars"])

        def from_frame_with_tables():  # what a user who looks at the trades and the curve pays in all
            r = from_frame()
            return r.trades, r.equity, r.balance

        rows.append(("LINK, backtest(load_ohlcv frame, start/end) -> result", link.n_bars,
                     median_ms(from_frame, args.repeat), "<= 1 ms"))
        rows.append(("LINK, same + .trades/.equity/.balance built", link.n_bars,
                     median_ms(from_frame_with_tables, args.repeat), ""))
        for kind in MA_KINDS:
            p = {**params, "maType": kind, "trailMaType": kind}
            rows.append((f"LINK, maType=trailMaType={kind}, cold", link.n_bars, median_ms(cold("s01_trailing_ma", link, p), args.repeat), "<= 5 ms"))
    else:
        params, start, end = {}, None, None
        print(f"(reference data not found at {LINK}: LINK rows skipped)")

    smp = prepare(load_ohlcv(sample()), None, None, 1000)
    rows.append(("sample(), reference params, cold", smp.n_bars, median_ms(cold("s01_trailing_ma", smp, params), args.repeat), ""))
    big = prepare(load_ohlcv(synthetic(1_000_000)), None, None, 1000)
    rows.append(("1,000,000 bars, reference params, cold", big.n_bars, median_ms(cold("s01_trailing_ma", big, params), max(5, args.repeat // 3)), "<= 50 ms"))
    rows.append(("1,000,000 bars, reference params, warm", big.n_bars, median_ms(warm("s01_trailing_ma", big, params), max(5, args.repeat // 3)), ""))
    csv = str(LINK) if LINK.exists() else "sample"
    first = first_call_seconds(csv, start, end) * 1e3
    rows.append(("first call in a fresh process (warm JIT cache), import incl.", 0, first, "<= 1500 ms"))

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'bars':>9}  {'median ms':>10}  target")
    print("-" * (width + 35))
    for name, bars, ms, target in rows:
        print(f"{name:<{width}}  {bars if bars else '':>9}  {ms:>10.3f}  {target}{verdict(ms, target)}")


def verdict(ms: float, target: str) -> str:
    """'  OK' or '  MISSED' for a '<= N ms' target."""
    if not target.startswith("<= ") or not target.endswith(" ms"):
        return ""
    return "  OK" if ms <= float(target[3:-3]) else "  MISSED"


if __name__ == "__main__":
    main()
