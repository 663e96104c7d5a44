"""The parent as worker 0 (``parent_works``): blocking callers compute trials while their processes start.

``optimize()`` and the CLI run worker 0 in a thread of the calling process beside
``worker_processes - 1`` processes; the budget must stay exact and Stop must end both kinds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from merlin_kit._platform import pid_alive
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization, summary_lines
from merlin_kit.optimize._attrs import OWNER_ATTR

FEW = ["closeCountLong", "closeCountShort", "stopLongX", "stopShortX"]
SLOW = "tests._strategies:SlowS01"  # ~0.25 s a trial: both the parent and the process surely get trials


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("parent_works.csv", 2000)


def owners(run) -> dict[int, int]:
    """Claimed trials per owning pid (a queued WAITING trial has no owner yet)."""
    out: dict[int, int] = {}
    for t in run.study.get_trials(deepcopy=False):
        if OWNER_ATTR in t.user_attrs:
            pid = t.user_attrs[OWNER_ATTR]["pid"]
            out[pid] = out.get(pid, 0) + 1
    return out


def test_optimize_runs_worker_zero_in_the_calling_process_with_an_exact_budget(small_csv):
    """spawn: its processes start slowly, so optimize() computes meanwhile."""
    n = 14
    run = optimize(OptimizationConfig(data=str(small_csv), strategy=SLOW, worker_processes=2, optimize_params=FEW,
                                      warmup_bars=200, start_method="spawn"),
                   OptunaConfig(n_trials=n, sampler="random", seed=4))
    assert [w.process is None for w in run.workers] == [True, False]  # one thread (worker 0), one process
    child = run.workers[1].process
    by_pid = owners(run)
    assert sum(by_pid.values()) == n and run.summary.total_trials == n  # exactly the budget, none twice
    assert set(by_pid) == {os.getpid(), child.pid}  # both computed trials
    assert not child.is_alive() and child.exitcode == 0
    assert all(t.state.name == "COMPLETE" for t in run.study.get_trials(deepcopy=False))


def test_optimize_with_a_warm_forkserver_starts_every_worker_as_a_process(small_csv):
    """A later run of the session: forks start in milliseconds, so the parent stays out of the trials (its GIL)."""
    opt = OptimizationConfig(data=str(small_csv), worker_processes=2, optimize_params=FEW, warmup_bars=200,
                             start_method="forkserver")
    optimize(opt, OptunaConfig(n_trials=4, sampler="random", seed=1))  # the server runs from here on
    run = optimize(opt, OptunaConfig(n_trials=10, sampler="random", seed=2))
    assert not run.cold_start and all(w.process is not None for w in run.workers) and len(run.workers) == 2
    assert run.summary.total_trials == 10 and os.getpid() not in owners(run)


def test_stop_ends_the_parent_worker_and_the_processes(small_csv):
    run = start_optimization(
        OptimizationConfig(data=str(small_csv), strategy=SLOW, worker_processes=2, optimize_params=FEW,
                           warmup_bars=200),
        OptunaConfig(n_trials=1000, sampler="random"), parent_works=True)
    thread, child = run.workers[0].thread, run.workers[1].process
    assert thread is not None and thread.is_alive()
    deadline = time.time() + 60
    while len(owners(run)) < 2 and time.time() < deadline:  # the process has started trials too
        time.sleep(0.05)
    run.stop()
    assert run.done and run.summary.stop_reason == "stopped by user"
    assert 0 < run.summary.total_trials < 1000
    thread.join(2)  # its trial in flight (0.25 s) ends, then it takes no other
    assert not thread.is_alive() and not pid_alive(child.pid)
    states = {t.state.name for t in run.study.get_trials(deepcopy=False)}
    assert "RUNNING" not in states  # nothing left half done
    assert states <= {"COMPLETE", "FAIL", "WAITING"}


@pytest.mark.parametrize("kwargs", [{"keep_workers": True}, {"cluster": "tcp://127.0.0.1:1"}])
def test_parent_works_is_refused_where_the_parent_cannot_take_part(small_csv, kwargs, tmp_path):
    with pytest.raises(ConfigError, match="parent_works"):
        start_optimization(OptimizationConfig(data=str(small_csv), worker_processes=2, optimize_params=FEW),
                           OptunaConfig(n_trials=5, output_dir=str(tmp_path / "run")), parent_works=True, **kwargs)
    assert not (tmp_path / "run").exists()  # refused before any study or folder is made


def test_cli_workers_two_starts_one_process_and_exits_with_complete_output(small_csv, tmp_path):
    """The CLI's parent computes trials too, and its quick exit (``console_main``) loses no output."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "merlin_kit", "optimize", "--data", str(small_csv),
                           "--params", *FEW, "--budget", "trials:30", "--workers", "2", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["total_trials"] == 30 and summary["workers"] == 2
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["total_trials"] == 30
    assert (out / "results.csv").read_text().count("\n") == 31  # header + every trial


def test_a_crashing_process_leaves_the_budget_to_the_parent_and_is_reported(small_csv, monkeypatch):
    monkeypatch.setenv("MERLIN_TEST_PARENT_PID", str(os.getpid()))  # the strategy raises in any other process
    run = optimize(OptimizationConfig(data=str(small_csv), strategy="tests._strategies:ChildCrashS01",
                                      worker_processes=2, optimize_params=FEW, warmup_bars=200, start_method="spawn"),
                   OptunaConfig(n_trials=12, sampler="random", seed=2))
    assert run.summary.total_trials == 12 and set(owners(run)) == {os.getpid()}
    assert run.workers[1].process.exitcode == 1
    report = {w.id: w for w in run.summary.worker_reports}
    assert report[0].exitcode == 0 and report[0].trials == 12
    assert report[1].had_trouble and "worker cannot construct this strategy" in (report[1].last_error or "")
    assert any(line.startswith("worker 1 (pid") for line in summary_lines(run))  # what the CLI prints


def test_no_local_workers_means_none_even_for_a_parent_that_waits(small_csv, tmp_path):
    """worker_processes=0 (remote workers only): parent_works does not turn the parent into a worker."""
    run = start_optimization(OptimizationConfig(data=str(small_csv), worker_processes=0, optimize_params=FEW),
                             OptunaConfig(n_trials=5, storage=str(tmp_path / "s.journal"), output_dir=str(tmp_path / "r")),
                             parent_works=True)
    try:
        assert run.workers == []
        time.sleep(0.5)
        assert run.progress().finished == 0 and not owners(run)  # nobody here took a trial
    finally:
        run.stop()
