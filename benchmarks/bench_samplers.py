"""Which sampler to pick: throughput and search quality of every sampler on S01 / LINK, side by side.

Run:  python benchmarks/bench_samplers.py [--samplers tpe random ...] [--workers 1 2] [--trials 300]
                                          [--repeat 3] [--checkpoints 300 1000] [--seeds 15] [--quality-workers 2]
                                          [--record seeds.jsonl]
Smoke: python benchmarks/bench_samplers.py --seeds 1 --checkpoints 50 --trials 50 --repeat 1

Two tables, medians:

1. Throughput: trials/s of each sampler with 1 worker (in-process) and 2 worker
   processes, ``--trials`` trials per run, ``--repeat`` interleaved repeats (the
   machine's speed drifts, so samplers alternate within a repeat).  "steady" counts
   from the first finished trial to the last (no start-up); "run" is the summary's rate.
2. Search quality: the best composite score after each checkpoint (300 and 1,000
   trials by default) over ``--seeds`` seeds (15: the best after 300 trials spreads by
   tens of points between seeds, so fewer cannot tell samplers apart), median and mean
   (min-max in brackets).  One run of the largest checkpoint per seed; the best after
   a smaller checkpoint is the best among the trials numbered below it.

The search space is bench_optimize's 7 parameters of S01 (one categorical: cmaes and
qmc sample it at random).  gp runs only where torch is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_optimize import LINK, link_config, steady_rate  # noqa: E402

from merlin_kit.optimize import OptunaConfig, optimize  # noqa: E402
from merlin_kit.optimize.config import SAMPLERS  # noqa: E402


def available(names: list[str]) -> list[str]:
    """The samplers that can run here (gp needs torch; grid is a sweep, not a sampler of this table)."""
    out = []
    for name in names:
        if name == "grid":
            continue
        if name == "gp" and importlib.util.find_spec("torch") is None:
            print("gp: skipped (torch is not installed: pip install \"merlin-kit[gp]\")")
            continue
        out.append(name)
    return out


def throughput(samplers: list[str], workers: list[int], n_trials: int, repeat: int) -> list[tuple]:
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {(s, w): [] for s in samplers for w in workers}
    optimize(link_config(1), OptunaConfig(n_trials=3, sampler="random"))  # kernels compiled before the first row
    for r in range(repeat):
        for w in workers:
            for s in samplers:  # interleaved: every sampler sees the same machine drift
                run = optimize(link_config(w), OptunaConfig(n_trials=n_trials, sampler=s, seed=100 + r))
                runs[(s, w)].append((run.summary.trials_per_second, steady_rate(run)))
    return [(s, w, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
            for (s, w), v in runs.items()]


def best_after(run, checkpoint: int) -> float | None:
    scores = [r.score for r in run.results if r.state == "COMPLETE" and r.score is not None
              and r.trial_number < checkpoint]
    return max(scores) if scores else None


def _recorded(record: Path | None) -> dict[tuple, dict[int, float | None]]:
    """Seeds already measured: (sampler, seed, trials, workers) -> best score at each checkpoint."""
    if record is None or not record.exists():
        return {}
    done = {}
    for line in record.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            done[(r["sampler"], r["seed"], r["trials"], r["workers"])] = {int(c): v for c, v in r["bests"].items()}
    return done


def quality(samplers: list[str], checkpoints: list[int], seeds: int, workers: int,
            record: Path | None = None) -> list[tuple]:
    """Best score after each checkpoint per seed; with ``record``, each seed is appended to that JSON-lines
    file as it finishes and seeds already there are read back, not re-run (a long table, e.g. gp to 1,000
    trials, can be measured over several sittings)."""
    rows = []
    done = _recorded(record)
    n_trials = max(checkpoints)
    for s in samplers:
        bests: dict[int, list[float]] = {c: [] for c in checkpoints}
        for seed in range(1000, 1000 + seeds):
            key = (s, seed, n_trials, workers)
            if key not in done:
                run = optimize(link_config(workers), OptunaConfig(n_trials=n_trials, sampler=s, seed=seed))
                done[key] = {c: best_after(run, c) for c in checkpoints}
                if record is not None:
                    with record.open("a") as f:
                        f.write(json.dumps({"sampler": s, "seed": seed, "trials": n_trials, "workers": workers,
                                            "bests": done[key]}) + "\n")
            for c in checkpoints:
                value = done[key].get(c)
                if value is not None:
                    bests[c].append(value)
        for c in checkpoints:
            b = bests[c]
            rows.append((s, c, statistics.median(b), statistics.mean(b), min(b), max(b), len(b)) if b
                        else (s, c, float("nan"), float("nan"), float("nan"), float("nan"), 0))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), help="samplers to compare (default: all)")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts of the throughput table")
    ap.add_argument("--trials", type=int, default=300, help="trials per throughput run")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats of the throughput table")
    ap.add_argument("--checkpoints", nargs="+", type=int, default=[300, 1000],
                    help="trial counts at which the best score is read (one run of the largest per seed)")
    ap.add_argument("--seeds", type=int, default=15, help="seeds of the search-quality table")
    ap.add_argument("--quality-workers", type=int, default=2, help="worker processes of the search-quality runs")
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "quality"])
    ap.add_argument("--record", type=Path, default=None,
                    help="JSON-lines file of finished quality seeds: appended to, and seeds found there are not re-run")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    samplers = available(args.samplers)
    print(f"machine: {os.cpu_count()} CPUs; data: {'LINK file' if LINK.exists() else 'sample (LINK file not found)'}; "
          "S01, 7 parameters, target: composite score")
    if "throughput" not in args.skip:
        print(f"\nThroughput: trials/s, medians over {args.repeat} interleaved repeats of {args.trials} trials")
        print(f"{'sampler':<8} {'workers':>7} {'run/s':>8} {'steady/s':>9}")
        for s, w, rate, steady in throughput(samplers, args.workers, args.trials, args.repeat):
            print(f"{s:<8} {w:>7} {rate:>8.1f} {steady:>9.1f}")
    if "quality" not in args.skip:
        print(f"\nSearch quality: best score after N trials, {args.seeds} seeds, {args.quality_workers} workers")
        print(f"{'sampler':<8} {'trials':>6} {'median':>7} {'mean':>7} {'min-max':>15} {'seeds':>5}")
        for s, c, med, mean, lo, hi, n in quality(samplers, sorted(set(args.checkpoints)), args.seeds,
                                                  args.quality_workers, args.record):
            print(f"{s:<8} {c:>6} {med:>7.1f} {mean:>7.1f} {f'[{lo:.1f}, {hi:.1f}]':>15} {n:>5}")


if __name__ == "__main__":
    main()
