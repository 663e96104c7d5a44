"""Optimisation throughput, parallel efficiency, start-up latency, trial cost breakdown, search quality.

Run:  python benchmarks/bench_optimize.py [--trials 500] [--big-trials 200] [--seeds 15] [--repeat 5]
      [--cli-trials 300] [--cli-repeat 5] [--cold-repeat 3] [--skip throughput big cli cold latency breakdown quality]

Everything is measured side by side in one run and printed as tables of medians:

1. S01 on the LINK file (7 optimised parameters, TPE) and on a 1,000,000-bar
   synthetic series (a backtest costs tens of ms there): wall time, trials/s,
   speed-up and parallel efficiency (speed-up / workers) for 1 worker (in-process),
   2 workers with the default start method (``auto``: forkserver on Linux/macOS,
   spawn on Windows), 2 ``spawn`` and 2 ``forkserver`` workers, interleaved repeats.
   In one Python session the forkserver (and so ``auto`` on Linux) is already
   running, as in every run of a notebook session after the first.
   Wall time is the whole ``optimize()`` call (validation, data load, process
   start-up, result rebuild); "steady" trials/s counts from the first finished trial on.
2. The CLI, a fresh process each time (a session's *first* run: the forkserver starts
   and warms up inside it): ``merlin-kit optimize`` on LINK, S01 default parameters, TPE,
   default settings, 1 worker vs 2 workers, wall clock of the command, interleaved.
3. Cold start: the README's first command (``merlin-kit optimize --data sample
   --budget trials:300``) with an empty numba cache (a fresh install) vs a warm one.
4. Time from ``start_optimization()`` to the first finished trial: the default start
   method (server running: a notebook's second run), ``spawn`` and ``forkserver``.
5. Where the time of a trial goes (one in-process worker, instrumented):
   sampling, backtest, storage, and the rest (kit + Optuna bookkeeping); TPE, and
   random sampling side by side with bare Optuna (``study.optimize`` on a journal file,
   the same search space, backtest and score) -- the kit's speed relative to bare Optuna.
6. Search quality: best objective after N trials over several seeds (15 by default:
   the best after 300 trials spreads from ~40 to ~75 between seeds, so 5 seeds cannot
   tell samplers apart), TPE with 1 and 2 workers vs random sampling.

Targets on the 2-core machine class: efficiency >= 0.85 (1M bars; default settings) and >= 0.85
(LINK, also from the CLI), >= 80 trials/s with 2 workers on LINK (CLI), first finished trial <= 0.2 s
after start in a session's second run, a cold first run <= 2x the warm one, the kit >= 0.84x bare
Optuna's journal speed with random sampling, TPE with 2 workers as good as with 1, and better than random.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backtest import synthetic  # noqa: E402

from merlin_kit.backtest import Backtester  # noqa: E402
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization  # noqa: E402
from merlin_kit.optimize._start import resolve_start_method  # noqa: E402

HERE = Path(__file__).resolve().parent
LINK = HERE.parent.parent / "shared" / "data" / "OKX_LINKUSDT.P_15m_2025-05-01_2025-11-20.csv"
PARAMS7 = ["maType", "maLength", "closeCountLong", "closeCountShort", "stopLongX", "stopShortX", "trailLongLength"]


def link_config(workers: int, **kw) -> OptimizationConfig:  # noqa: D103
    if LINK.exists():
        return OptimizationConfig(data=str(LINK), start="2025-06-15", end="2025-11-15", worker_processes=workers,
                                  optimize_params=PARAMS7, **kw)
    return OptimizationConfig(data="sample", worker_processes=workers, optimize_params=PARAMS7, **kw)


def steady_rate(run) -> float:
    """Trials/s from the first finished trial to the last (excludes start-up and result rebuild)."""
    done = sorted(t.datetime_complete for t in run.study.get_trials(deepcopy=False) if t.datetime_complete)
    if len(done) < 2:
        return float("nan")
    span = (done[-1] - done[0]).total_seconds()
    return (len(done) - 1) / span if span > 0 else float("nan")


#: (workers, start method) rows of the throughput table; 1 worker runs in the calling process
MODES = ((1, "auto"), (2, "auto"), (2, "spawn"), (2, "forkserver"))
BASE = MODES[0]


def mode_label(workers: int, method: str) -> str:
    """optimize() runs worker 0 in the calling process beside workers - 1 processes when they start cold (spawn,
    the bench's first forkserver); with the warm forkserver of later runs every worker is a process."""
    if workers == 1:
        return "1 (in-process)"
    if method == "spawn":
        return f"{workers} (here + {workers - 1} spawn)"
    return f"{workers} (auto={resolve_start_method(method)})" if method == "auto" else f"{workers} ({method})"


def throughput(name: str, make_cfg, n_trials: int, repeat: int) -> list[tuple]:
    """Run every mode once per repeat, interleaved (1w, 2w auto, 2w spawn, 2w forkserver, 1w, ...).

    This machine class is shared and its speed drifts by tens of percent over a minute, so
    each repeat's efficiency is computed against the 1-worker run of the *same* repeat and
    the table shows the median (and the range) of those paired ratios.
    """
    if any(m == "forkserver" for _, m in MODES):  # start the server once, as a session's first run would
        optimize(make_cfg(2, start_method="forkserver"), OptunaConfig(n_trials=4, sampler="random"))
    walls: dict[tuple, list[float]] = {m: [] for m in MODES}
    phases: dict[tuple, list[float]] = {m: [] for m in MODES}
    steadies: dict[tuple, list[float]] = {m: [] for m in MODES}
    for r in range(repeat):
        for w, method in MODES:
            t0 = time.perf_counter()
            run = optimize(make_cfg(w, start_method=method), OptunaConfig(n_trials=n_trials, seed=100 + r))
            walls[(w, method)].append(time.perf_counter() - t0)
            phases[(w, method)].append(run.summary.trials_per_second)
            steadies[(w, method)].append(steady_rate(run))
            assert run.summary.total_trials == n_trials
    rows = []
    for w, method in MODES:
        def paired(per_run: dict[tuple, list[float]], rate: bool) -> list[float]:
            pairs = zip(per_run[BASE], per_run[(w, method)])
            return [(x / b if rate else b / x) / w for b, x in pairs]

        eff, phase_eff, steady_eff = paired(walls, False), paired(phases, True), paired(steadies, True)
        rows.append((name, mode_label(w, method), n_trials,
                     statistics.median(walls[(w, method)]), n_trials / statistics.median(walls[(w, method)]),
                     statistics.median(steadies[(w, method)]), statistics.median(eff), min(eff), max(eff),
                     statistics.median(phase_eff), statistics.median(steady_eff)))
    return rows


def first_trial_latency(repeat: int, start_method: str = "auto") -> float:
    lat = []
    for _ in range(repeat):
        t0 = time.time()
        run = start_optimization(link_config(2, start_method=start_method), OptunaConfig(n_trials=20, sampler="random"))
        first = None
        while not run.done:
            trials = run.study.get_trials(deepcopy=False)
            ends = [t.datetime_complete for t in trials if t.datetime_complete]
            if ends:
                first = min(ends).timestamp()
                break
            time.sleep(0.01)
        run.wait()
        lat.append(first - t0)
    return statistics.median(lat)


@contextmanager
def timed_methods(targets: list[tuple[object, str, str]], totals: dict[str, float]):
    """Wrap methods to add their wall time to ``totals[bucket]`` (outermost call only)."""
    saved = []
    depth = {"n": 0}
    for owner, attr, bucket in targets:
        original = getattr(owner, attr)
        saved.append((owner, attr, original))

        def wrapper(*args, __orig=original, __bucket=bucket, **kwargs):
            if depth["n"]:
                return __orig(*args, **kwargs)
            depth["n"] += 1
            t0 = time.perf_counter()
            try:
                return __orig(*args, **kwargs)
            finally:
                totals[__bucket] = totals.get(__bucket, 0.0) + time.perf_counter() - t0
                depth["n"] -= 1

        setattr(owner, attr, wrapper)
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def _split_targets(sampler_cls: type) -> list[tuple[object, str, str]]:
    from optuna.storages import JournalStorage

    storage_methods = ["create_new_trial", "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
                       "set_trial_user_attr", "get_trial", "get_all_trials", "get_study_user_attrs",
                       "set_study_user_attr", "get_study_directions", "get_trial_id_from_study_id_trial_number"]
    targets = [(sampler_cls, m, "sampling") for m in ("sample_relative", "sample_independent",
                                                      "infer_relative_search_space", "before_trial", "after_trial")]
    targets += [(JournalStorage, m, "storage") for m in storage_methods]
    targets += [(Backtester, "run", "backtest")]
    return targets


def _per_trial(totals: dict[str, float], total: float, n_trials: int) -> dict[str, float]:
    out = {k: totals.get(k, 0.0) / n_trials * 1e3 for k in ("sampling", "backtest", "storage")}
    out["total (incl. set-up and result rebuild)"] = total / n_trials * 1e3
    out["kit + Optuna bookkeeping"] = out["total (incl. set-up and result rebuild)"] - sum(totals.values()) / n_trials * 1e3
    return out


def breakdown(n_trials: int, sampler: str = "tpe") -> dict[str, float]:
    """Per-trial cost split of one in-process worker on the LINK workload (ms)."""
    from optuna.samplers import RandomSampler, TPESampler

    totals: dict[str, float] = {}
    optimize(link_config(1), OptunaConfig(n_trials=5, seed=1))  # warm JIT and caches
    with timed_methods(_split_targets(TPESampler if sampler == "tpe" else RandomSampler), totals):
        t0 = time.perf_counter()
        optimize(link_config(1), OptunaConfig(n_trials=n_trials, seed=2, sampler=sampler,
                                              output_dir=tempfile.mkdtemp(prefix="merlin-bench-")))
        total = time.perf_counter() - t0
    return _per_trial(totals, total, n_trials)


def bare_optuna(n_trials: int) -> dict[str, float]:
    """The same trials without the kit: ``study.optimize`` on a journal file, random sampler, the kit's search
    space, backtest and score (data loaded and the backtester built beforehand, as the kit does before trials)."""
    from optuna.samplers import RandomSampler
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from merlin_kit.data import load_data, prepare
    from merlin_kit.optimize.config import validate
    from merlin_kit.scoring import minmax_score
    from merlin_kit.strategies import IndicatorCache

    checked = validate(link_config(1), OptunaConfig())
    opt = checked.opt
    backtester = Backtester(checked.strategy, prepare(load_data(opt.data), opt.start, opt.end, opt.warmup_bars),
                            cache=IndicatorCache(threads=1))

    def objective(trial: optuna.Trial) -> float:
        params = {}
        for dim in checked.space:
            if dim.kind == "categorical":
                params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices or ()))
            elif dim.kind == "int":
                params[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high), step=int(dim.step or 1))
            else:
                params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step)
        metrics, _, _ = backtester.run(params)
        return minmax_score(metrics, checked.score)

    totals: dict[str, float] = {}
    journal = Path(tempfile.mkdtemp(prefix="merlin-bench-")) / "bare.journal"
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))), direction="maximize",
                                sampler=RandomSampler(seed=2))
    with timed_methods(_split_targets(RandomSampler), totals):
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=n_trials)
        total = time.perf_counter() - t0
    return _per_trial(totals, total, n_trials)


def _cli(args: list[str], env: dict[str, str] | None = None) -> tuple[float, dict]:
    """Wall clock of one ``merlin-kit optimize ... --json`` in a fresh process, and its summary."""
    out_dir = tempfile.mkdtemp(prefix="merlin-bench-cli-")
    cmd = [sys.executable, "-m", "merlin_kit", "optimize", *args, "--out", out_dir, "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def cli_rows(n_trials: int, repeat: int) -> list[tuple]:
    """``merlin-kit optimize`` on LINK (default parameters, TPE, default settings), 1 worker vs 2, interleaved."""
    data = ["--data", str(LINK)] if LINK.exists() else ["--data", "sample"]
    base = [*data, "--budget", f"trials:{n_trials}"]
    walls: dict[int, list[float]] = {1: [], 2: []}
    method = ""
    for _ in range(repeat):
        for w in (1, 2):
            wall, summary = _cli([*base, "--workers", str(w)])
            assert summary["total_trials"] == n_trials, summary
            walls[w].append(wall)
            method = summary["start_method"] or method
    eff = [(b / x) / 2 for b, x in zip(walls[1], walls[2])]
    return [("1 (in-process)", statistics.median(walls[1]), n_trials / statistics.median(walls[1]), 1.0, 1.0, 1.0),
            (f"2 (here + 1 {method})", statistics.median(walls[2]), n_trials / statistics.median(walls[2]),
             statistics.median(eff), min(eff), max(eff))]


def cold_start(repeat: int) -> list[tuple]:
    """The README's first command with an empty numba cache (fresh install) and then with the cache it wrote."""
    rows: dict[str, list[tuple[float, float]]] = {"cold (empty numba cache)": [], "warm": []}
    for _ in range(repeat):
        cache = tempfile.mkdtemp(prefix="merlin-bench-numba-")
        for label in rows:
            wall, summary = _cli(["--data", "sample", "--budget", "trials:300"], env={"NUMBA_CACHE_DIR": cache})
            rows[label].append((wall, summary["optimization_time_seconds"]))
    return [(label, statistics.median(w for w, _ in v), statistics.median(s for _, s in v)) for label, v in rows.items()]


def search_quality(n_trials: int, seeds: int) -> list[tuple]:
    rows = []
    for label, workers, sampler in (("TPE, 1 worker", 1, "tpe"), ("TPE, 2 workers", 2, "tpe"), ("random, 2 workers", 2, "random")):
        bests = []
        for seed in range(seeds):
            run = optimize(link_config(workers), OptunaConfig(n_trials=n_trials, seed=1000 + seed, sampler=sampler))
            bests.append(run.summary.best_value)
        rows.append((label, n_trials, statistics.median(bests), statistics.mean(bests), min(bests), max(bests)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--big-trials", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=15,
                    help="seeds of the search-quality rows (5 is too few: medians of 5 differ by ~10 points "
                         "between seed sets, more than TPE's lead over random)")
    ap.add_argument("--quality-trials", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repeats of the LINK throughput rows")
    ap.add_argument("--big-repeat", type=int, default=3, help="interleaved repeats of the 1M-bar throughput rows")
    ap.add_argument("--cli-trials", type=int, default=300, help="trials of each CLI run")
    ap.add_argument("--cli-repeat", type=int, default=5, help="interleaved repeats of the CLI rows")
    ap.add_argument("--cold-repeat", type=int, default=3, help="repeats of the cold/warm start rows")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["throughput", "big", "quality", "breakdown", "latency", "cli", "cold"])
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"machine: {os.cpu_count()} CPUs; data: {'LINK file' if LINK.exists() else 'sample (LINK file not found)'}")

    rows = [] if "throughput" in args.skip else throughput("S01 LINK, 7 params, TPE", link_config, args.trials, args.repeat)
    if "big" not in args.skip and "throughput" not in args.skip:
        big_path = Path(tempfile.mkdtemp(prefix="merlin-bench-")) / "big.csv"
        synthetic(1_000_000).to_csv(big_path, index_label="time")

        def big_config(workers: int, **kw) -> OptimizationConfig:
            return OptimizationConfig(data=str(big_path), worker_processes=workers, optimize_params=PARAMS7, **kw)

        rows += throughput("S01 1M bars, 7 params, TPE", big_config, args.big_trials, args.big_repeat)
        big_path.unlink()
    if rows:
        print(f"\nThroughput: medians over {args.repeat} (LINK) / {args.big_repeat} (1M) interleaved repeats. wall = the whole")
        print("optimize() call (validation, data load, process start-up, result rebuild); steady = trials/s from the first")
        print("finished trial to the last. efficiency = (1-worker wall / N-worker wall) / N of the same repeat (range in")
        print("brackets); run eff. = the same ratio of the summary's trials/s (the run from study set-up to the last trial:")
        print("worker start-up included, the parent's data load not); steady eff. = ratio of steady trials/s.")
        print("forkserver rows: the server is already running (every run of a session after the first): 2 processes.")
        print("'here + 1': optimize() runs worker 0 in the calling process beside one process that starts cold.")
        print(f"{'workload':<28} {'workers':>22} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'steady/s':>8} "
              f"{'efficiency':>18} {'run eff.':>8} {'steady eff.':>11}")
        for name, w, n, wall, rate, steady, eff, lo, hi, phase_eff, steady_eff in rows:
            print(f"{name:<28} {w:>22} {n:>6} {wall:>7.2f} {rate:>8.1f} {steady:>8.1f} "
                  f"{eff:>6.2f} [{lo:.2f}-{hi:.2f}] {phase_eff:>8.2f} {steady_eff:>11.2f}")

    if "cli" not in args.skip:
        print(f"\nCLI: merlin-kit optimize on {'LINK' if LINK.exists() else 'sample'}, S01 default parameters, TPE, "
              f"{args.cli_trials} trials, default settings; a fresh process per run (the session's first run), wall "
              f"clock of the command, medians over {args.cli_repeat} interleaved repeats")
        print(f"{'workers':>24} {'wall s':>7} {'trials/s':>8} {'efficiency':>18}")
        for label, wall, rate, eff, lo, hi in cli_rows(args.cli_trials, args.cli_repeat):
            print(f"{label:>24} {wall:>7.2f} {rate:>8.1f} {eff:>6.2f} [{lo:.2f}-{hi:.2f}]")
    if "cold" not in args.skip:
        print(f"\nCold start: merlin-kit optimize --data sample --budget trials:300 (default workers), median of "
              f"{args.cold_repeat}; search = the summary's optimisation time")
        print(f"{'numba cache':<26} {'wall s':>7} {'search s':>8}")
        for label, wall, search in cold_start(args.cold_repeat):
            print(f"{label:<26} {wall:>7.2f} {search:>8.2f}")
    if "latency" not in args.skip:
        print(f"\nTime from start_optimization() to the first finished trial (2 workers, median of 3, the session's "
              f"server already running): default (auto={resolve_start_method('auto')}) {first_trial_latency(3):.2f} s; "
              f"spawn {first_trial_latency(3, 'spawn'):.2f} s; forkserver {first_trial_latency(3, 'forkserver'):.2f} s")
    if "breakdown" not in args.skip:
        print(f"\nWhere a trial's time goes (1 in-process worker, LINK, TPE, {args.trials} trials), ms per trial")
        for key, ms in breakdown(args.trials).items():
            print(f"  {key:<42} {ms:8.2f}")
        kit, bare = breakdown(args.trials, "random"), bare_optuna(args.trials)
        print(f"\nThe kit vs bare Optuna (study.optimize), random sampler, journal file, same space, backtest and "
              f"score, {args.trials} trials, ms per trial")
        print(f"  {'':<42} {'kit':>8} {'bare':>8}")
        for key in kit:
            print(f"  {key:<42} {kit[key]:8.2f} {bare[key]:8.2f}")
        total = "total (incl. set-up and result rebuild)"
        print(f"  kit speed relative to bare Optuna: {bare[total] / kit[total]:.2f}x (target >= 0.84)")
    if "quality" not in args.skip:
        print(f"\nSearch quality: best score after {args.quality_trials} trials over {args.seeds} seeds")
        print(f"{'sampler':<20} {'trials':>6} {'median best':>12} {'mean':>8} {'min':>8} {'max':>8}")
        for label, n, med, mean, lo, hi in search_quality(args.quality_trials, args.seeds):
            print(f"{label:<20} {n:>6} {med:>12.2f} {mean:>8.2f} {lo:>8.2f} {hi:>8.2f}")


if __name__ == "__main__":
    main()
