"""The default start method ``auto``: forkserver where the platform has it, spawn on Windows (optimize/_start.py).

Windows and macOS are simulated on Linux with ``MERLIN_KIT_SIMULATE`` (merlin_kit/_platform.py): the kit takes
their code paths while the standard library stays Linux's.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys
import tempfile
from pathlib import Path

import pytest

import tests._strategies as probe
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize
from merlin_kit.optimize._start import resolve_start_method
from merlin_kit.optimize.config import START_METHODS, validate

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resolves auto as Linux does")


def resolved(**opt_kwargs) -> str:
    return validate(OptimizationConfig(data="sample", **opt_kwargs), OptunaConfig()).opt.start_method


def test_auto_is_the_default_and_one_of_the_choices():
    assert OptimizationConfig().start_method == "auto"
    assert START_METHODS == ("auto", "spawn", "forkserver", "fork")


@linux_only
def test_auto_picks_forkserver_on_linux():
    assert resolve_start_method("auto") == "forkserver"
    assert resolved() == "forkserver"


@linux_only
def test_auto_picks_spawn_on_simulated_windows(monkeypatch):
    monkeypatch.setenv("MERLIN_KIT_SIMULATE", "windows")
    assert resolve_start_method("auto") == "spawn"
    assert resolved() == "spawn"


@linux_only
def test_auto_on_macos_picks_forkserver_unless_the_temp_folder_is_too_long(monkeypatch, tmp_path):
    monkeypatch.setenv("MERLIN_KIT_SIMULATE", "macos")
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    assert resolved() == "forkserver"
    long_dir = tmp_path / ("x" * 90)
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
    assert resolved() == "spawn"  # the server's socket path would not fit macOS's 104 bytes
    with pytest.raises(ConfigError, match="too long for the server's socket path"):
        resolved(start_method="forkserver")  # asked for explicitly: refused with the remedy


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
@linux_only
def test_an_explicit_start_method_is_kept(method):
    assert resolved(start_method=method) == method


def test_validating_auto_leaves_the_callers_config_unchanged():
    opt = OptimizationConfig(data="sample")
    validate(opt, OptunaConfig())
    assert opt.start_method == "auto"


@linux_only
def test_a_run_with_the_default_start_method_forks_its_workers_from_the_server(small_csv, monkeypatch):
    """Two workers under the default: forks of the forkserver (not children of this process, not carrying its
    state), an exact trial budget, and the summary names the method the run used."""
    monkeypatch.setattr(probe, "PARENT_MARK", f"set-by-{os.getpid()}")
    n = 13
    run = optimize(OptimizationConfig(data=str(small_csv), worker_processes=2, optimize_params=["maLength"],
                                      warmup_bars=200, strategy="tests._strategies:StartMethodProbeS01"),
                   OptunaConfig(n_trials=n, sampler="random", seed=3))
    seen = {}
    for w in run.summary.worker_reports:
        path = Path(probe.PROBE_DIR) / f"{w.pid}.txt"
        if w.pid is not None and path.exists():
            ppid, mark = path.read_text().split()
            seen[w.pid] = (int(ppid), mark)
            path.unlink()
    assert seen, "no worker recorded its start"
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    assert {ppid for ppid, _ in seen.values()} == {server} and server != os.getpid(), seen
    assert {mark for _, mark in seen.values()} == {"None"}, seen
    assert run.summary.start_method == "forkserver"
    assert run.summary.total_trials == n and run.summary.completed_trials == n
    assert all(w.exitcode == 0 for w in run.summary.worker_reports)


@pytest.fixture
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)
