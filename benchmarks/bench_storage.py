"""Storage back-ends side by side: journal file, PostgreSQL and Redis, with 1 and 2 workers, one workload.

Run:  python benchmarks/bench_storage.py [--trials 300] [--bars 3000] [--workers 1 2] [--repeat 3]
      [--only journal postgres redis]

The servers are read from ``MERLIN_TEST_POSTGRES_URL`` and ``MERLIN_TEST_REDIS_URL``
(``source .ci/services.sh && start_services`` starts local ones); a back-end
whose variable is unset is skipped with a note.  Each cell is one fresh study
running the same workload: S01 on the bundled sample (``--bars`` bars), 3
parameters, random sampler (seeded), a trials budget, local worker processes
(1 worker runs in this process, 2 are spawned processes).  Cells run in rounds
and the best round of each is shown, the one least disturbed by other load.  The study is
deleted (PostgreSQL) or its keys removed (Redis) afterwards.

Columns:

* ``wall s``: the whole ``optimize()`` call (validation, study set-up, queue, process start-up, result rebuild);
* ``trials/s``: steady rate, from the first trial's start to the last trial's end;
* ``ms/trial/worker``: worker time per trial in the steady phase (``workers / rate``);
* ``storage ms/trial``: that minus the backtest alone (the same parameter sets run
  here without any storage, ``backtest ms``): what the storage costs each trial -
  claim, parameters, owner/metrics attrs, heartbeat, tell, and the reads of
  the budget checks.  With 2 workers on a 2-core machine the two processes
  also share the CPU with the database server, which this column includes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from merlin_kit.backtest import Backtester
from merlin_kit.data import prepare, sample
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize
from merlin_kit.optimize import close_storage, open_storage
from merlin_kit.strategies import get_strategy

PARAMS = ["closeCountLong", "closeCountShort", "stopLongX"]
WARMUP = 200


def backends(tmpdir: str) -> list[tuple[str, str | None, str]]:
    """(label, location or None, note)."""
    out: list[tuple[str, str | None, str]] = [("journal file", os.path.join(tmpdir, "{tag}.journal"), "")]
    pg = os.environ.get("MERLIN_TEST_POSTGRES_URL")
    out.append(("PostgreSQL", pg, "" if pg else "skipped: MERLIN_TEST_POSTGRES_URL is not set"))
    rd = os.environ.get("MERLIN_TEST_REDIS_URL")
    rd_loc = None if not rd else rd + ("&" if "?" in rd else "?") + "prefix={tag}"
    out.append(("Redis", rd_loc, "" if rd else "skipped: MERLIN_TEST_REDIS_URL is not set"))
    return out


def cleanup(location: str, study_name: str, tag: str) -> None:
    if location.startswith("redis"):
        import redis

        base = location.split("?")[0]
        client = redis.Redis.from_url(base)
        keys = list(client.scan_iter(match=f"{tag}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    elif "://" in location:
        storage = open_storage(location, heartbeat=False)
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        finally:
            close_storage(storage)


def backtest_alone_ms(data_csv: Path, param_sets: list[dict]) -> float:
    """Mean time of the backtest by itself for these parameter sets (no storage, no sampler)."""
    from merlin_kit.data import load_data

    prepared = prepare(load_data(str(data_csv)), None, None, WARMUP)
    bt = Backtester(get_strategy("s01_trailing_ma"), prepared)
    bt.run(param_sets[0])  # compile / warm caches
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for p in param_sets:
            bt.run(p)
        times.append((time.perf_counter() - t0) / len(param_sets) * 1000)
    return min(times)


def one_cell(location_tpl: str, data_csv: Path, workers: int, trials: int) -> dict:
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    location = location_tpl.format(tag=tag)
    name = f"{tag}-study"
    try:
        t0 = time.perf_counter()
        run = optimize(
            OptimizationConfig(data=str(data_csv), worker_processes=workers, optimize_params=PARAMS,
                               warmup_bars=WARMUP),
            OptunaConfig(n_trials=trials, sampler="random", seed=1, study_name=name, storage=location),
        )
        wall = time.perf_counter() - t0
        frozen = [t for t in run.study.get_trials(deepcopy=False) if t.state.is_finished()]
        assert len(frozen) == trials, f"{len(frozen)} finished trials, expected {trials}"
        start = min(t.datetime_start for t in frozen)
        end = max(t.datetime_complete for t in frozen)
        span = (end - start).total_seconds()
        fixed = run.run_config.fixed_params
        params = [{**fixed, **t.params} for t in sorted(frozen, key=lambda t: t.number)]
        return {"wall": wall, "rate": trials / span, "params": params}
    finally:
        cleanup(location, name, tag)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--bars", type=int, default=3000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all cells (the best of each cell is shown)")
    ap.add_argument("--only", nargs="+", choices=["journal", "postgres", "redis"], help="measure only these back-ends")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="merlin-bench-storage-") as tmpdir:
        data_csv = Path(tmpdir) / "bars.csv"
        sample(args.bars).to_csv(data_csv, index_label="time")
        notes = []
        cells: dict[tuple[str, int], list[dict]] = {}
        plan = []
        for label, location, note in backends(tmpdir):
            key = {"journal file": "journal", "PostgreSQL": "postgres", "Redis": "redis"}[label]
            if args.only and key not in args.only:
                continue
            if location is None:
                notes.append(f"{label}: {note}")
                continue
            plan += [(label, location, w) for w in args.workers]
        # rounds over every cell, so that a burst of load elsewhere on the machine hits all back-ends alike
        for r in range(args.repeat):
            for label, location, w in plan:
                cell = one_cell(location, data_csv, w, args.trials)
                cells.setdefault((label, w), []).append(cell)
                print(f"  round {r + 1}: {label:<12} {w} worker(s): {cell['rate']:7.1f} trials/s",
                      file=sys.stderr, flush=True)
        first = next(iter(cells.values()), None)
        bt_ms = backtest_alone_ms(data_csv, first[0]["params"]) if first else float("nan")
        rows = []
        for label, location, w in plan:
            best = max(cells[(label, w)], key=lambda c: c["rate"])  # best of the rounds: least disturbed
            per_trial = w / best["rate"] * 1000
            rows.append((label, w, best["wall"], best["rate"], per_trial, per_trial - bt_ms))

    print(f"\nWorkload: S01 on sample({args.bars}) bars, {len(PARAMS)} parameters, random sampler, "
          f"{args.trials} trials a cell, best of {args.repeat} rounds; backtest alone {bt_ms:.2f} ms/trial; "
          f"{os.cpu_count()} CPU(s)\n")
    header = (f"{'storage':<13} {'workers':>7} {'wall s':>7} {'trials/s':>9} {'ms/trial/worker':>16} "
              f"{'storage ms/trial':>17}")
    print(header)
    print("-" * len(header))
    for label, w, wall, rate, per, over in rows:
        print(f"{label:<13} {w:>7} {wall:>7.2f} {rate:>9.1f} {per:>16.2f} {over:>17.2f}")
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
