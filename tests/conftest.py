"""Shared fixtures: the reference data beside the repository (``../shared``), skipped when absent,
and CSV files of the bundled synthetic sample."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
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
