"""Multi-objective search quality: hypervolume of the feasible Pareto front after N trials, per sampler.

Run:  python benchmarks/bench_multiobjective.py [--samplers nsga2,tpe,random] [--trials 500] [--seeds 5]
                                               [--workers 2]

S01 on the LINK file (the bundled sample where it is absent), 7 optimised
parameters, objectives net_profit_pct (max) and max_drawdown_pct (min), constraint
total_trades >= 30.  Every sampler and seed is scored against ONE reference point
(net profit -100 %, drawdown 100 %: every trial lies inside it), so the
hypervolumes are comparable across samplers; printed as a table of medians (and
min/max over seeds), side by side, plus front sizes and wall time.  ``--samplers``
takes the kit's sampler names (``nsga2`` exists once the samplers work is merged).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_optimize import link_config  # noqa: E402

from merlin_kit.optimize import OptunaConfig, hypervolume, optimize  # noqa: E402

OBJECTIVES = [("net_profit_pct", "maximize"), ("max_drawdown_pct", "minimize")]
CONSTRAINTS = ["total_trades >= 30"]
#: as losses (net profit negated): net profit -100 %, drawdown 100 %
REFERENCE = (100.0, 100.0)


def one_run(sampler: str, seed: int, trials: int, workers: int) -> tuple[float, int, float]:
    """(hypervolume of the feasible front, front size, wall seconds) of one run."""
    started = time.perf_counter()
    run = optimize(link_config(workers), OptunaConfig(objectives=OBJECTIVES, constraints=CONSTRAINTS,
                                                      n_trials=trials, sampler=sampler, seed=seed))
    wall = time.perf_counter() - started
    front = [r for r in run.results if r.pareto]
    return hypervolume([(-r.values[0], r.values[1]) for r in front], REFERENCE), len(front), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", default="nsga2,tpe,random", help="comma-separated kit sampler names")
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    rows = {}
    for seed in range(args.seeds):  # interleaved: machine noise hits every sampler alike
        for sampler in samplers:
            rows.setdefault(sampler, []).append(one_run(sampler, seed, args.trials, args.workers))
    print(f"\nHypervolume after {args.trials} trials ({args.seeds} seeds, {args.workers} workers; reference "
          f"net profit -100 %, drawdown 100 %; constraint {CONSTRAINTS[0]})")
    print(f"{'sampler':<10} {'median HV':>10} {'min HV':>10} {'max HV':>10} {'front':>6} {'wall s':>8}")
    for sampler, results in rows.items():
        hv = [r[0] for r in results]
        print(f"{sampler:<10} {statistics.median(hv):>10.1f} {min(hv):>10.1f} {max(hv):>10.1f} "
              f"{statistics.median(r[1] for r in results):>6.0f} {statistics.median(r[2] for r in results):>8.1f}")


if __name__ == "__main__":
    main()
