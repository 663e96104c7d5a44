"""Shared fixtures: the reference data beside the repository (``../shared``), skipped when absent,
CSV files of the bundled synthetic sample, and this machine's measured start-up time (``startup_seconds``)
that bounds on wall-clock time are made relative to."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from merlin_kit.data import sample

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
LINK_CSV = SHARED_DATA / "OKX_LINKUSDT.P_15m_2025-05-01_2025-11-20.csv"
BASELINE_JSON = SHARED_DATA / "s01_baseline_metrics.json"
BASELINE_TRADES = SHARED_DATA / "s01_baseline_trades.csv"

needs_shared = pytest.mark.skipif(
    not LINK_CSV.exists(),
    reason=f"reference data not found at {SHARED_DATA} (../shared/data beside the repository; present in CI)",
)

#: keys of the baseline JSON "parameters" that are run settings, not strategy parameters
RUN_SETTING_KEYS = {"backtester", "dateFilter", "start", "end"}


@pytest.fixture(scope="session")
def link_csv() -> Path:
    if not LINK_CSV.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA} (../shared/data beside the repository)")
    return LINK_CSV


@pytest.fixture(scope="session")
def baseline() -> dict:
    if not BASELINE_JSON.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA} (../shared/data beside the repository)")
    return json.loads(BASELINE_JSON.read_text())


@pytest.fixture(scope="session")
def baseline_params(baseline) -> dict:
    return {k: v for k, v in baseline["parameters"].items() if k not in RUN_SETTING_KEYS}


@pytest.fixture(scope="session")
def write_sample_csv(tmp_path_factory) -> Callable[..., Path]:
    """``write_sample_csv(name, n_bars, seed=None)``: the bundled sample as a CSV file in a fresh folder."""

    def write(name: str, n_bars: int, seed: int | None = None) -> Path:
        path = tmp_path_factory.mktemp("sample") / name
        frame = sample(n_bars) if seed is None else sample(n_bars, seed=seed)
        frame.to_csv(path, index_label="time")
        return path

    return write


def pytest_collection_modifyitems(config, items) -> None:
    """``posix_only``, ``needs_fork`` and ``simulated`` tests skip where they cannot run (see pyproject)."""
    skips = {
        "posix_only": (os.name != "posix", "POSIX only (signals, process groups, file modes or symlinks)"),
        # macOS has fork, but the kit refuses it there (unsafe with the system frameworks)
        "needs_fork": ("fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin",
                       "no safe fork start method here (Windows lacks it, macOS refuses it)"),
        "simulated": (not sys.platform.startswith("linux"), "the platform simulation runs on Linux only"),
    }
    for item in items:
        for name, (skip, reason) in skips.items():
            if skip and item.get_closest_marker(name) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
@pytest.fixture(scope="session")
def startup_seconds(write_sample_csv, tmp_path_factory) -> float:
    """Wall-clock seconds of a two-trial optimisation with two spawned worker processes, measured here and now.

    ``spawn`` (not the default, a warm forkserver): the slowest start, which the first run of a forkserver
    (server start-up and warm-up) also pays, so the bound holds for every start method.

    It is what any run pays before its first trial and after its last (processes spawned, imports, the
    numba kernels loaded, the storage opened, the processes joined), so on a loaded two-core machine it grows
    with the load.  Tests that bound how long a run, a stop or a time budget takes allow this much on top of
    their own margin instead of a fixed number of seconds; a budget or a stop that is ignored still runs
    for minutes and fails them.
    """
    from merlin_kit.optimize import OptimizationConfig, OptunaConfig, start_optimization

    csv = write_sample_csv("baseline.csv", 3000)
    started = time.monotonic()
    # start_optimization: both workers processes (optimize() would run worker 0 in this process)
    run = start_optimization(OptimizationConfig(data=str(csv), worker_processes=2, optimize_params=["closeCountLong"],
                                                warmup_bars=200, start_method="spawn"),
                             OptunaConfig(n_trials=2, sampler="random", seed=0,
                                          output_dir=tmp_path_factory.mktemp("baseline")))
    run.wait()
    took = time.monotonic() - started
    assert run.summary.total_trials == 2 and run.summary.workers == 2
    return took
