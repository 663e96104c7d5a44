"""Sweeps vs ask/tell: trials/s of random and grid searches on LINK, 1 and 2 workers, side by side.

Run:  python benchmarks/bench_sweep.py [--trials 20000] [--repeat 3] [--skip asktell]

Rows (S01 on the LINK file, the 7 parameters of bench_optimize, a journal file in a temp folder):

* ``random, ask/tell``: the kit's default path (``sweep=False``): every suggest and attr is a record;
* ``random, sweep``: ``sweep=True``: points drawn in advance, claimed in batches, one record per trial;
* ``grid, sweep``: ``sampler="grid"`` over a 9,900-point grid of the same 7 parameters (maType x maLength x
  closeCountLong x closeCountShort; the three others at one value), every point once;
* ``in-memory loop``: the same random points backtested in one process by one Backtester, nothing stored:
  the "all at once" floor of a vectorbt-style sweep that keeps every result in memory (no dashboard, no
  resume, no second process).

wall = the whole ``optimize()`` call (validation, data load, process start-up, the results rebuilt);
steady = trials/s from the first finished trial to the last.  Medians over ``--repeat`` interleaved
repeats.  Target (2-core machine class): random sweep, 2 workers, 20,000 trials >= 1,500 trials/s end to
end; grid the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_optimize import LINK, link_config, steady_rate  # noqa: E402

from merlin_kit.backtest import Backtester  # noqa: E402
from merlin_kit.data import load_data, prepare  # noqa: E402
from merlin_kit.optimize import OptunaConfig, optimize  # noqa: E402
from merlin_kit.optimize._sweep import SweepPlan  # noqa: E402
from merlin_kit.optimize.config import validate  # noqa: E402
from merlin_kit.strategies import IndicatorCache  # noqa: E402

#: 11 x 20 x 9 x 5 = 9,900 points over the 7 parameters
GRID = {"maLength": {"min": 25, "max": 500, "step": 25}, "closeCountLong": {"min": 2, "max": 10, "step": 1},
        "closeCountShort": {"min": 2, "max": 6, "step": 1}, "stopLongX": {"min": 2.0, "max": 2.0, "step": 0.1},
        "stopShortX": {"min": 2.0, "max": 2.0, "step": 0.1}, "trailLongLength": {"min": 100, "max": 100, "step": 25}}


def one_run(kind: str, workers: int, n_trials: int, seed: int) -> tuple[float, float, int]:
    """(wall seconds, steady trials/s, trials in the study) of one optimize() call."""
    folder = tempfile.mkdtemp(prefix="merlin-bench-sweep-")
    storage = os.path.join(folder, "study.journal")
    if kind == "grid":
        opt = link_config(workers, param_ranges=GRID)
        cfg = OptunaConfig(sampler="grid", n_trials=n_trials, seed=seed, storage=storage)
    else:
        opt = link_config(workers)
        cfg = OptunaConfig(sampler="random", sweep=kind == "sweep", n_trials=n_trials, seed=seed, storage=storage)
    t0 = time.perf_counter()
    run = optimize(opt, cfg)
    wall = time.perf_counter() - t0
    return wall, steady_rate(run), run.summary.total_trials


def in_memory_loop(n_trials: int, seed: int) -> float:
    """Seconds to backtest the random sweep's points in one process, results kept in a list."""
    opt = link_config(1)
    checked = validate(opt, OptunaConfig(sampler="random", sweep=True, n_trials=n_trials, seed=seed))
    plan = SweepPlan(checked.space, "random", n_trials, seed, 256)
    prepared = prepare(load_data(str(LINK) if LINK.exists() else "sample"), opt.start, opt.end, opt.warmup_bars)
    bt = Backtester(checked.strategy, prepared, cache=IndicatorCache(threads=1))
    t0 = time.perf_counter()
    results = [bt.run(params)[0] for _, params in plan.points(range(n_trials))]
    took = time.perf_counter() - t0
    assert len(results) == n_trials
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20000, help="trials per random row (grid: min(this, 9,900))")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--skip", nargs="*", default=[], choices=["asktell", "sweep", "grid", "memory"])
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"machine: {os.cpu_count()} CPUs; data: {'LINK file' if LINK.exists() else 'sample (LINK file not found)'}")
    modes = [(k, w) for k in ("asktell", "sweep", "grid") if k not in args.skip for w in args.workers]
    walls: dict[tuple, list[float]] = {m: [] for m in modes}
    steadies: dict[tuple, list[float]] = {m: [] for m in modes}
    counts: dict[tuple, int] = {}
    memory: list[float] = []
    for r in range(args.repeat):
        for kind, w in modes:
            n = min(args.trials, 9900) if kind == "grid" else args.trials
            wall, steady, done = one_run(kind, w, n, seed=100 + r)
            assert done == n, f"{kind} with {w} workers finished {done} of {n} trials"
            walls[(kind, w)].append(wall)
            steadies[(kind, w)].append(steady)
            counts[(kind, w)] = n
        if "memory" not in args.skip:
            memory.append(in_memory_loop(args.trials, seed=100 + r))
    labels = {"asktell": "random, ask/tell", "sweep": "random, sweep", "grid": "grid, sweep"}
    print(f"\nMedians over {args.repeat} interleaved repeats (journal file storage)")
    print(f"{'search':<22} {'workers':>7} {'trials':>7} {'wall s':>8} {'trials/s':>9} {'steady/s':>9}")
    for kind, w in modes:
        wall = statistics.median(walls[(kind, w)])
        print(f"{labels[kind]:<22} {w:>7} {counts[(kind, w)]:>7} {wall:>8.2f} {counts[(kind, w)] / wall:>9.1f} "
              f"{statistics.median(steadies[(kind, w)]):>9.1f}")
    if memory:
        took = statistics.median(memory)
        print(f"{'in-memory loop':<22} {1:>7} {args.trials:>7} {took:>8.2f} {args.trials / took:>9.1f} "
              f"{'(backtests only)':>9}")


if __name__ == "__main__":
    main()
