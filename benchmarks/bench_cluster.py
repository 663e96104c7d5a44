"""LocalCluster with 2 Dask workers vs 2 local worker processes, the same study settings, trials/s.

Run:  python benchmarks/bench_cluster.py [--trials 200] [--bars 3000] [--repeat 3]

Storage: PostgreSQL from ``MERLIN_TEST_POSTGRES_URL`` when set (``source
.ci/services.sh && start_services``), else a journal file in a temp folder.
Workload: S01 on the bundled sample (``--bars`` bars), 3 parameters, random
sampler (seeded), a trials budget.  ``local``: ``optimize(worker_processes=2)``
(two spawned processes, started per run).  ``dask``: ``optimize(cluster=client)``
on a ``LocalCluster(n_workers=2, threads_per_worker=1)`` made once (its start-up
is shown apart: a cluster outlives many runs).  The two alternate, run after run
(interleaved), and the median of the repeats is shown.

Columns: ``wall s`` (the whole ``optimize()`` call), ``trials/s`` (steady rate,
first trial start to last trial end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from merlin_kit.data import sample
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_storage import cleanup  # noqa: E402

PARAMS = ["closeCountLong", "closeCountShort", "stopLongX"]
WARMUP = 200


def one_run(kind: str, client, storage_tpl: str, data_csv: Path, trials: int) -> dict:
    tag = f"bench-cluster-{uuid.uuid4().hex[:8]}"
    storage = storage_tpl.format(tag=tag)
    opt = OptimizationConfig(data=str(data_csv), worker_processes=2, optimize_params=PARAMS, warmup_bars=WARMUP)
    cfg = OptunaConfig(n_trials=trials, sampler="random", seed=1, study_name=tag, storage=storage)
    try:
        t0 = time.perf_counter()
        run = optimize(opt, cfg, cluster=client if kind == "dask" else None)
        wall = time.perf_counter() - t0
        frozen = [t for t in run.study.get_trials(deepcopy=False) if t.state.is_finished()]
        assert len(frozen) == trials, f"{kind}: {len(frozen)} finished trials, expected {trials}"
        span = (max(t.datetime_complete for t in frozen) - min(t.datetime_start for t in frozen)).total_seconds()
        return {"wall": wall, "rate": trials / span}
    finally:
        cleanup(storage, tag, tag)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--bars", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="merlin-bench-cluster-") as tmpdir:
        data_csv = Path(tmpdir) / "bars.csv"
        sample(args.bars).to_csv(data_csv, index_label="time")
        pg = os.environ.get("MERLIN_TEST_POSTGRES_URL")
        storage_tpl = pg or os.path.join(tmpdir, "{tag}.journal")
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        client.wait_for_workers(2)
        cluster_start = time.perf_counter() - t0
        cells: dict[str, list[dict]] = {"local": [], "dask": []}
        try:
            for r in range(args.repeat):
                for kind in ("local", "dask") if r % 2 == 0 else ("dask", "local"):
                    cell = one_run(kind, client, storage_tpl, data_csv, args.trials)
                    cells[kind].append(cell)
                    print(f"  round {r + 1}: {kind:<5} {cell['rate']:7.1f} trials/s, {cell['wall']:.2f} s",
                          file=sys.stderr, flush=True)
        finally:
            client.close()
            cluster.close()

    print(f"\nWorkload: S01 on sample({args.bars}) bars, {len(PARAMS)} parameters, random sampler, {args.trials} "
          f"trials a run, median of {args.repeat} interleaved runs; storage "
          f"{'PostgreSQL' if pg else 'journal file'}; {os.cpu_count()} CPU(s); LocalCluster start "
          f"{cluster_start:.2f} s (once)\n")
    header = f"{'workers':<34} {'wall s':>7} {'trials/s':>9}"
    print(header)
    print("-" * len(header))
    labels = {"local": "2 local processes", "dask": "LocalCluster, 2 Dask workers"}
    for kind in ("local", "dask"):
        wall = statistics.median(c["wall"] for c in cells[kind])
        rate = statistics.median(c["rate"] for c in cells[kind])
        print(f"{labels[kind]:<34} {wall:>7.2f} {rate:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
