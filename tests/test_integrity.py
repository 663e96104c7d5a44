"""Integrity of studies: one run per study and run folder, honest resume, clear errors before any work.

Each test reproduces the fault from the outside (the API or the CLI, real worker processes, real journal
files); none of them looks inside the engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, open_storage, optimize, start_optimization

REPO = Path(__file__).resolve().parent.parent
FEW = ["closeCountLong", "closeCountShort", "stopLongX", "stopShortX"]


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("integrity.csv", 3000)


@pytest.fixture(scope="module")
def other_csv(write_sample_csv) -> Path:
    return write_sample_csv("integrity-other.csv", 3000, seed=7)


def make(csv: Path, workers: int = 2, strategy: str = "s01_trailing_ma", params=FEW) -> OptimizationConfig:
    return OptimizationConfig(data=str(csv), strategy=strategy, worker_processes=workers, optimize_params=params,
                              warmup_bars=200)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merlin_kit", *args], capture_output=True, text=True,
                          cwd=str(REPO), timeout=timeout)


def finished_trials(journal: Path, study: str) -> list:
    loaded = optuna.load_study(study_name=study, storage=open_storage(str(journal)))
    return [t for t in loaded.get_trials(deepcopy=False) if t.state.is_finished()]


# -- one run per study ----------------------------------------------------------------------------
def test_second_run_on_a_busy_study_is_refused(small_csv, tmp_path):
    journal = tmp_path / "s.journal"
    cfg = dict(study_name="busy", storage=str(journal), sampler="random", seed=1)
    first = start_optimization(make(small_csv, strategy="tests._strategies:SlowS01"), OptunaConfig(n_trials=40, **cfg))
    try:
        with pytest.raises(ConfigError, match=r"study 'busy' is in use by run \w+ \(host .+, pid \d+, started ") as info:
            optimize(make(small_csv, strategy="tests._strategies:SlowS01"), OptunaConfig(n_trials=10, **cfg))
        assert info.value.field == "study_name" and str(os.getpid()) in str(info.value)
    finally:
        first.stop()
    assert first.summary.total_trials < 40  # the refused run added nothing to the study
    n = len(finished_trials(journal, "busy"))
    assert n == first.summary.total_trials
    second = optimize(make(small_csv, strategy="tests._strategies:SlowS01"), OptunaConfig(n_trials=5, **cfg))
    # (the lease went with the first run)
    assert second.summary.total_trials == 5 and second.summary.study_trials == n + 5


def test_cli_run_into_a_busy_run_folder_is_refused(small_csv, tmp_path):
    out = tmp_path / "run"
    first = start_optimization(make(small_csv, strategy="tests._strategies:SlowS01"),
                               OptunaConfig(n_trials=40, study_name="a", output_dir=str(out), sampler="random"))
    try:
        done = cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:5", "--workers", "1",
                   "--study", "b", "--out", str(out))
    finally:
        first.stop()
    assert done.returncode == 2, done.stderr
    assert f"run folder '{out}' is in use by run {first.run_id}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert json.loads((out / "summary.json").read_text())["study_name"] == "a"  # b wrote nothing


@pytest.mark.posix_only  # SIGKILL
def test_a_killed_runs_lease_is_taken_over(small_csv, tmp_path):
    journal = tmp_path / "k.journal"
    script = textwrap.dedent(f"""
        import sys, time
        from merlin_kit.optimize import OptimizationConfig, OptunaConfig, start_optimization
        if __name__ == "__main__":
            run = start_optimization(
                OptimizationConfig(data={str(small_csv)!r}, strategy="tests._strategies:SlowS01", worker_processes=1,
                                   optimize_params={FEW!r}, warmup_bars=200),
                OptunaConfig(n_trials=500, study_name="killed", storage={str(journal)!r}, sampler="random"))
            print("started", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        cfg = OptunaConfig(n_trials=4, study_name="killed", storage=str(journal), sampler="random")
        slow = make(small_csv, strategy="tests._strategies:SlowS01")
        with pytest.raises(ConfigError, match=f"pid {proc.pid}"):
            optimize(slow, cfg)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    run = optimize(slow, cfg)  # pid gone: the lease is void
    assert run.summary.total_trials == 4 and run.summary.failed_trials == 0


# -- resume -----------------------------------------------------------------------------------------
def test_resume_after_stop_counts_the_queue_left_behind(small_csv, tmp_path):
    journal = tmp_path / "r.journal"
    cfg = dict(study_name="resume", storage=str(journal), sampler="random", seed=2)
    first = start_optimization(make(small_csv, strategy="tests._strategies:SlowS01"), OptunaConfig(n_trials=300, **cfg))
    deadline = time.time() + 60
    while first.progress().finished < 6 and time.time() < deadline:
        time.sleep(0.1)
    first.stop()
    done_first = first.summary.total_trials
    queued = [t for t in first.study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
    assert queued, "the stopped run should have left queued trials"
    second = optimize(make(small_csv, strategy="tests._strategies:SlowS01"), OptunaConfig(n_trials=20, **cfg))
    s = second.summary
    assert s.total_trials == 20 and s.completed_trials + s.pruned_trials + s.failed_trials == 20
    assert s.failed_trials == 0 and s.stop_reason == "budget reached"
    assert s.study_trials == done_first + 20
    results = {r.trial_number for r in second.results}
    assert len(results) == done_first + 20  # retired leftovers are not results
    assert not any("cancelled" in (r.error or "") for r in second.results)
    left = [t for t in second.study.get_trials(deepcopy=False) if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    assert left == []


@pytest.mark.parametrize("change, expected", [
    ("data", r"data '.*integrity-other\.csv' \(fingerprint"),
    ("space", r"search space of 'stopLongX'"),
    ("strategy", r"strategy 's01_trailing_ma' -> 's04_stochrsi'"),
    ("window", r"warmup_bars 200 -> 300"),
    ("target", r"target 'score' -> 'net_profit_pct'"),
])
def test_resume_with_other_settings_is_refused(small_csv, other_csv, tmp_path, change, expected):
    journal = tmp_path / "m.journal"
    base = dict(study_name="mix", storage=str(journal), sampler="random", seed=3)
    optimize(make(small_csv, workers=1), OptunaConfig(n_trials=4, **base))
    opt, cfg = make(small_csv, workers=1), OptunaConfig(n_trials=4, **base)
    if change == "data":
        opt = make(other_csv, workers=1)
    elif change == "space":
        opt.param_ranges = {"stopLongX": {"min": 1.0, "max": 2.0, "step": 0.5}}
    elif change == "strategy":
        opt = OptimizationConfig(data=str(small_csv), strategy="s04_stochrsi", worker_processes=1, warmup_bars=200,
                                 optimize_params=["rsiLen", "stochLen"])
    elif change == "window":
        opt.warmup_bars = 300
    else:
        cfg.target = "net_profit"
    with pytest.raises(ConfigError, match=expected) as info:
        optimize(opt, cfg)
    assert "would mix incompatible trials" in str(info.value) and info.value.field == "study_name"
    assert len(finished_trials(journal, "mix")) == 4  # nothing was added
    other = optimize(opt, OptunaConfig(**{**cfg.to_dict(), "study_name": "fresh"}))  # a new study is fine
    assert other.summary.total_trials == 4


def test_resume_with_the_same_settings_and_another_budget_works(small_csv, tmp_path):
    journal = tmp_path / "same.journal"
    base = dict(study_name="same", storage=str(journal), seed=3)
    optimize(make(small_csv, workers=1), OptunaConfig(n_trials=4, sampler="random", **base))
    run = optimize(make(small_csv, workers=1), OptunaConfig(budget_mode="time", time_limit=2, n_trials=None,
                                                            sampler="tpe", **base))
    assert run.summary.total_trials >= 1 and run.summary.study_trials == 4 + run.summary.total_trials


# -- clear errors before any work -------------------------------------------------------------------------
def test_cli_errors_before_any_work(small_csv, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["--out", str(a_file)], "output_dir '" + str(a_file) + "' is a file"),
        (["--out", "/proc/merlin-cannot-write/run"], "cannot be written"),
        (["--storage", str(tmp_path)], "is a folder; give a journal file path"),
        (["--storage", "postgress://merlin:s3cret@127.0.0.1/x"], "unknown scheme 'postgress://'"),
        (["--study", ".."], "study_name '..' is not a name"),
        (["--study", "."], "study_name '.' is not a name"),
    ]
    for extra, message in cases:
        t0 = time.monotonic()
        done = cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:3", "--workers", "2",
                   *extra, timeout=120)
        assert done.returncode == 2, (extra, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, done.stderr)
        assert "s3cret" not in done.stderr + done.stdout
        assert time.monotonic() - t0 < 30
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert not (REPO / "merlin_runs" / "..").resolve().joinpath("study.journal").exists()
