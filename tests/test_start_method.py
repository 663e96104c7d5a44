"""The default start method ``auto``: forkserver where the platform has it, spawn on Windows (optimize/_start.py).

Windows and macOS are simulated on Linux with ``MERLIN_KIT_SIMULATE`` (merlin_kit/_platform.py): the kit takes
their code paths while the standard library stays Linux's.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import tests._strategies as probe
from merlin_kit._platform import host_id
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, start_optimization
from merlin_kit.optimize._attrs import OWNER_ATTR
from merlin_kit.optimize._start import resolve_start_method
from merlin_kit.optimize.config import START_METHODS, validate
from tests.conftest import REPO

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
    state), an exact trial budget, and the summary names the method the run used.  start_optimization: every
    worker a process (optimize() runs worker 0 in the calling process: tests/test_parent_works.py)."""
    monkeypatch.setattr(probe, "PARENT_MARK", f"set-by-{os.getpid()}")
    n = 13
    run = start_optimization(OptimizationConfig(data=str(small_csv), worker_processes=2, optimize_params=["maLength"],
                                                warmup_bars=200, strategy="tests._strategies:StartMethodProbeS01"),
                             OptunaConfig(n_trials=n, sampler="random", seed=3))
    run.wait()
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


def test_eta_counts_from_the_first_finished_trial_not_from_the_compile_time():
    """A cold first run spends seconds compiling kernels before its first trial; the ETA must not extrapolate
    from them (the README's first command showed 326 s while compiling, for a run of seconds)."""
    import datetime as dt

    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    from merlin_kit.optimize._state import measure_progress, steady_rate

    t0 = time.time() - 12.0

    def done_at(seconds: float):
        trial = create_trial(state=TrialState.COMPLETE, value=1.0, params={"x": 1},
                             distributions={"x": IntDistribution(0, 2)})
        trial.datetime_start = trial.datetime_complete = dt.datetime.fromtimestamp(t0 + seconds)
        return trial

    trials = []
    for number, seconds in enumerate((10.0, 11.0, 12.0)):  # 10 s of start-up, then a trial a second
        trial = done_at(seconds)
        trial.number = number
        trials.append(trial)
    assert steady_rate(trials[:1]) is None
    assert steady_rate(trials, now=t0 + 12.0) == pytest.approx(1.0)
    progress = measure_progress(study_name="s", trials=trials, run_id="r", first_trial_number=0, direction="maximize",
                                fixed_params={}, budget_mode="trials", budget=10, elapsed=12.0, workers=[],
                                finished_run=False, worker_errors=[])
    assert progress.finished == 3
    assert progress.eta_seconds == pytest.approx(7.0, abs=0.5)  # 7 trials at ~1/s, not 7 / (3 / 12 s) = 28 s
    none_yet = measure_progress(study_name="s", trials=trials[:1], run_id="r", first_trial_number=0,
                                direction="maximize", fixed_params={}, budget_mode="trials", budget=10, elapsed=11.0,
                                workers=[], finished_run=False, worker_errors=[])
    assert none_yet.eta_seconds is None  # unknown, not minutes


@pytest.mark.slow
@pytest.mark.posix_only
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: the server compiles alone")
def test_a_cold_cache_is_compiled_in_parallel_by_the_forkserver_preload(tmp_path):
    """A fresh install (empty numba cache): the preload compiles its kernel groups in forked helpers, which
    write numba's cache; afterwards the strategy's and every moving average's kernels are in it."""
    cache = tmp_path / "numba-cache"
    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
            "import merlin_kit.optimize._preload as p\n"
            "print('cold after:', p.cache_is_cold())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stderr
    assert "compiling the kernels in 2 processes" in out.stdout, out.stdout
    assert "cold after: False" in out.stdout
    assert "warm-up failed" not in out.stdout + out.stderr and "helper failed" not in out.stdout + out.stderr
    indexes = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
    assert {"s01_trailing_ma._s01_kernel", "_moving_averages._alma_kernel", "_moving_averages._kama_kernel"} <= indexes


@linux_only
def test_workers_of_a_warm_forkserver_get_the_settings_of_the_run_that_starts_them(small_csv, monkeypatch):
    """The server lives on between runs with the environment of the run that started it; a MERLIN_* variable
    set (or removed) before a later run must reach that run's workers: here MERLIN_HOST_ID, which each worker
    writes into the owner record of its trials."""
    def hosts_of_one_run() -> set[str]:
        run = start_optimization(OptimizationConfig(data=str(small_csv), worker_processes=2, warmup_bars=200,
                                                    optimize_params=["maLength"], start_method="forkserver"),
                                 OptunaConfig(n_trials=6, sampler="random", seed=3))
        run.wait()
        assert run.summary.completed_trials == 6
        return {t.user_attrs[OWNER_ATTR]["host"] for t in run.study.get_trials(deepcopy=False)}

    monkeypatch.setenv("MERLIN_HOST_ID", "merlin-test-host-a")
    assert hosts_of_one_run() == {"merlin-test-host-a"}
    assert multiprocessing.forkserver._forkserver._forkserver_pid is not None  # the server now runs
    monkeypatch.setenv("MERLIN_HOST_ID", "merlin-test-host-b")
    assert hosts_of_one_run() == {"merlin-test-host-b"}
    monkeypatch.delenv("MERLIN_HOST_ID")
    assert hosts_of_one_run() == {host_id()}
