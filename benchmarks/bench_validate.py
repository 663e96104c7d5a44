"""Validation speed: median time of PBO (CSCV) and of the walk-forward window split.

Run:  python benchmarks/bench_validate.py [--repeat 7] [--walk-forward-only] [--wf-repeat 3]

Rows (side by side, one run):
* ``pbo()`` on 2,000 rows x 500 columns with S = 16 (12,870 combinations): the size
  of a large study's top configurations over ~5 years of daily returns;
* ``pbo()`` on 12,870 combinations x 500 columns at the fewest rows S = 16 allows
  (16 rows): the combination work alone, without the per-group sums;
* ``pbo()`` with sparse columns (most days without a trade: many constant halves);
* ``split_windows()`` on the LINK file (15-minute bars, 204 days), rolling 30/7
  and 90/30 days, and anchored 30/7;
* ``walk_forward()`` on LINK, 60/20 days rolling (7 windows), 40 trials a window, 2 worker
  processes (one pool of processes for the whole analysis, OOS backtests and files included)
  beside the same windows as separate ``optimize()`` calls (processes started per window),
  alternated call by call, with ``start_method`` auto (a warm forkserver) and spawn; the ratio
  (the pool's target, <= 0.8x, is for spawn: a warm forkserver starts a call's workers in ~0.1 s);
* ``run.pbo()`` of a real run with ~500 distinct parameter sets on the bundled
  sample (24,000 15-minute bars, 250 days): one backtest per set on one
  Backtester (indicator cache) to build the daily-returns matrix, then CSCV; the
  matrix build alone (``run_daily_returns``); the CSCV alone on that matrix; ``run.stress_test(top_k=5)`` (every ±1/±2-step
  neighbour of the top 5 backtested); ``run.deflated_sharpe(top_k=20)``.

Targets (2-core machine class): a few seconds at most for PBO at S = 16 x 500 columns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backtest import median_ms  # noqa: E402

from merlin_kit.data import load_ohlcv  # noqa: E402
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize  # noqa: E402
from merlin_kit.robustness import pbo, run_daily_returns  # noqa: E402
from merlin_kit.walkforward import split_windows, walk_forward  # noqa: E402

HERE = Path(__file__).resolve().parent
LINK = HERE.parent.parent / "shared" / "data" / "OKX_LINKUSDT.P_15m_2025-05-01_2025-11-20.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--wf-repeat", type=int, default=3, help="repeats of the walk-forward rows (median)")
    ap.add_argument("--walk-forward-only", action="store_true", help="only the walk-forward rows")
    args = ap.parse_args()
    rows: list[tuple[str, str, float, str]] = []
    if args.walk_forward_only:
        walk_forward_rows(rows, args.wf_repeat)
        print_rows(rows)
        return
    rng = np.random.default_rng(20250501)

    daily = rng.normal(0.05, 1.5, size=(2000, 500))
    rows.append(("pbo, 2,000 rows x 500 columns, S=16", "12,870", median_ms(lambda: pbo(daily, 16), args.repeat), "a few s"))
    least = rng.normal(0.05, 1.5, size=(16, 500))
    rows.append(("pbo, 16 rows x 500 columns, S=16", "12,870", median_ms(lambda: pbo(least, 16), args.repeat), "a few s"))
    sparse = np.where(rng.random((2000, 500)) < 0.9, 0.0, rng.normal(0.1, 3.0, size=(2000, 500)))
    sparse[:, :100] = np.where(rng.random((2000, 100)) < 0.995, 0.0, sparse[:, :100])  # 100 near-idle columns
    rows.append(("pbo, 2,000 x 500, sparse (90-99.5 % zero days), S=16", "12,870",
                 median_ms(lambda: pbo(sparse, 16), args.repeat), ""))
    rows.append(("pbo, 2,000 rows x 500 columns, S=8", "70", median_ms(lambda: pbo(daily, 8), args.repeat), ""))

    if LINK.exists():
        data = load_ohlcv(LINK)
        rep = max(args.repeat, 30)
        for is_days, oos_days, anchored in ((30, 7, False), (90, 30, False), (30, 7, True)):
            n = len(split_windows(data, is_days=is_days, oos_days=oos_days, anchored=anchored))
            label = f"split_windows, LINK ({len(data):,} bars), {is_days}/{oos_days} days{', anchored' if anchored else ''}"
            rows.append((label, f"{n} win",
                         median_ms(lambda: split_windows(data, is_days=is_days, oos_days=oos_days, anchored=anchored), rep), ""))
    else:
        print(f"(reference data not found at {LINK}: LINK rows skipped)")

    walk_forward_rows(rows, args.wf_repeat)
    run_rows(rows, args.repeat)
    print_rows(rows)


def print_rows(rows: list[tuple[str, str, float, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'combos':>8}  {'median ms':>10}  target")
    print("-" * (width + 34))
    for name, combos, ms, target in rows:
        print(f"{name:<{width}}  {combos:>8}  {ms:>10.3f}  {target}")


def walk_forward_rows(rows: list[tuple[str, str, float, str]], repeat: int, n_trials: int = 40,
                      start_methods: tuple[str, ...] = ("auto", "spawn")) -> None:
    """One walk-forward on one pool of 2 worker processes vs the same windows as separate optimize() calls,
    per start method: with ``auto`` (a warm forkserver on Linux/macOS) a separate call starts its workers in
    ~0.1 s, with ``spawn`` (Windows' only method) in ~1.5 s, which is what the pool saves per window."""
    if not LINK.exists():
        return
    windows = split_windows(load_ohlcv(LINK), is_days=60, oos_days=20)
    what = f"{len(windows)} win"
    for method in start_methods:
        opt = OptimizationConfig(data=str(LINK), worker_processes=2, warmup_bars=500, start_method=method,
                                 optimize_params=["maType", "maLength", "closeCountLong", "closeCountShort"])
        pool, separate = _pool_vs_separate(opt, windows, repeat, n_trials)
        rows.append((f"walk-forward (one pool), LINK 60/20 days, {n_trials} trials a window, 2 workers, {method}",
                     what, pool * 1e3, f"{pool / separate:.2f}x separate"))
        rows.append((f"same windows as separate optimize() calls (processes per window), {method}", what,
                     separate * 1e3, ""))


def _pool_vs_separate(opt: OptimizationConfig, windows: list, repeat: int, n_trials: int) -> tuple[float, float]:
    """Median seconds of one walk_forward() and of its windows as separate optimize() calls, alternated call by
    call, each in a fresh folder (nothing reused)."""
    pool_s: list[float] = []
    separate_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-wf-") as tmp:
        for i in range(repeat):
            cfg = OptunaConfig(n_trials=n_trials, seed=i, output_dir=Path(tmp) / f"wf{i}")
            t0 = time.perf_counter()
            walk_forward(opt, cfg, is_days=60, oos_days=20)
            pool_s.append(time.perf_counter() - t0)
            journal = str(Path(tmp) / f"sep{i}.journal")
            t0 = time.perf_counter()
            for w in windows:
                optimize(replace(opt, start=w.is_start, end=w.is_end),
                         replace(cfg, study_name=f"sep-w{w.number:02d}", storage=journal, save_study=True,
                                 output_dir=Path(tmp) / f"sep{i}" / f"w{w.number:02d}"))
            separate_s.append(time.perf_counter() - t0)
            print(f"(walk-forward {opt.start_method} repeat {i + 1}: one pool {pool_s[-1]:.1f} s, "
                  f"separate optimize() {separate_s[-1]:.1f} s)")
    return statistics.median(pool_s), statistics.median(separate_s)


def run_rows(rows: list[tuple[str, str, float, str]], repeat: int) -> None:
    """Validation of a finished run: ~500 distinct parameter sets of S01 on the bundled sample."""
    opt = OptimizationConfig(data="sample", worker_processes=1, warmup_bars=1000,
                             optimize_params=["maType", "maLength", "closeCountLong", "closeCountShort", "stopLongX",
                                              "stopShortX", "trailLongLength", "trailShortLength"])
    t0 = time.perf_counter()
    run = optimize(opt, OptunaConfig(n_trials=520, sampler="random", seed=20250501, target="sharpe_ratio"))
    print(f"(optimisation: {len(run.results)} results in {time.perf_counter() - t0:.1f} s)")
    res = run.pbo()
    n_cols = res.returns.shape[1]
    combos = f"{res.n_combinations:,}"
    shape = f"{res.returns.shape[0]} days x {n_cols} sets"
    rep = max(3, repeat // 2)
    rows.append((f"run.pbo(), {shape} (backtests + matrix + CSCV), S=16", combos, median_ms(run.pbo, rep), "seconds"))
    rows.append((f"  of which run_daily_returns() ({n_cols} backtests, one Backtester)", "",
                 median_ms(lambda: run_daily_returns(run), rep), ""))
    matrix = res.returns.to_numpy()
    rows.append((f"  of which pbo() on the matrix, {shape}", combos, median_ms(lambda: pbo(matrix, 16), rep), ""))
    table = run.stress_test(top_k=5)
    rows.append((f"run.stress_test(top_k=5), {int(table['neighbours'].sum())} neighbour backtests", "",
                 median_ms(lambda: run.stress_test(top_k=5), rep), ""))
    rows.append(("run.deflated_sharpe(top_k=20)", "", median_ms(lambda: run.deflated_sharpe(top_k=20), rep), ""))


if __name__ == "__main__":
    main()
