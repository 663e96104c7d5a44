"""The machine's own ceiling for parallel efficiency: the same CPU-bound work in 1 process and in 2 at once.

Run:  python benchmarks/bench_ceiling.py [--repeat 5] [--processes 2]

The kit's efficiency targets (>= 0.85 with 2 workers) assume that two processes on a
2-core machine each run as fast as one process alone.  On a virtual machine that need
not hold: two vCPUs can share a physical core, caches or memory bandwidth.  This
measures it with no kit, no Optuna storage and no inter-process traffic: each unit of
work runs in N processes that start it together (after their imports and warm-up),
and the efficiency is (time of the work alone) / (time of the same work with N-1
others running), per process, median over interleaved repeats.  No parallel run of
the kit can beat this ratio.

Units: a pure-Python loop (the interpreter), the S01 backtest on the LINK file (or the
sample) through the public ``backtest()`` (the kit's per-trial kernel), the same on a
1,000,000-bar series (its arrays outgrow the caches: memory bandwidth), and TPE
sampling of 17 float parameters for 200 trials in memory (Optuna's per-trial cost).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINK = HERE.parent.parent / "shared" / "data" / "OKX_LINKUSDT.P_15m_2025-05-01_2025-11-20.csv"
UNITS = ("python loop", "S01 backtest", "S01 1M bars", "TPE 17 params")


def _python_loop() -> None:
    total = 0
    for i in range(20_000_000):
        total += i * i % 7


def _prepare(unit: str):
    """The unit's work as a callable, warmed up (imports, numba cache, data) so only the work is timed."""
    if unit == "python loop":
        return _python_loop
    if unit in ("S01 backtest", "S01 1M bars"):
        from merlin_kit import backtest, load_ohlcv

        if unit == "S01 backtest":
            data, runs = load_ohlcv(str(LINK) if LINK.exists() else "sample"), 2000
        else:
            sys.path.insert(0, str(HERE))
            from bench_backtest import synthetic

            data, runs = load_ohlcv(synthetic(1_000_000)), 80
        backtest(data, "s01_trailing_ma")

        def run() -> None:
            for _ in range(runs):
                backtest(data, "s01_trailing_ma")
        return run
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def tpe() -> None:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
        study.optimize(lambda t: sum(t.suggest_float(f"p{i}", 0, 1) ** 2 for i in range(17)), n_trials=200)
    return tpe


def _worker(unit: str, barrier, results) -> None:
    try:
        work = _prepare(unit)
        barrier.wait()
        t0 = time.perf_counter()
        work()
        results.put(time.perf_counter() - t0)
    except Exception as exc:  # reported by the parent (which would otherwise wait forever); the others released
        barrier.abort()
        results.put(f"{unit}: {type(exc).__name__}: {exc}")


def timed(unit: str, processes: int) -> float:
    """Median seconds of one process's work when ``processes`` run it at once."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(unit, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    times = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    failed = [t for t in times if isinstance(t, str)]
    if failed:
        raise RuntimeError(failed[0])
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repeats")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    n = args.processes
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}; {n} processes at once vs 1; medians of {args.repeat} "
          f"interleaved repeats; data: {'LINK file' if LINK.exists() else 'sample'}")
    print(f"{'unit of work':<16} {'alone s':>8} {f'{n} at once s':>13} {'efficiency':>18}")
    for unit in UNITS:
        alone, together, ratios = [], [], []
        for _ in range(args.repeat):
            a, t = timed(unit, 1), timed(unit, n)
            alone.append(a)
            together.append(t)
            ratios.append(a / t)
        print(f"{unit:<16} {statistics.median(alone):>8.2f} {statistics.median(together):>13.2f} "
              f"{statistics.median(ratios):>6.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")


if __name__ == "__main__":
    main()
