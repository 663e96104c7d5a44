"""A walk-forward analysis on ONE set of worker processes (real processes, a real journal, LINK data).

The worker processes start with the first window and follow the chain of window studies
(``merlin.next``): these tests check that they are started once, that every window still gets
exactly its trial budget (also when a worker is SIGKILLed), that Stop and resume work, that a
time budget is per window, and that a ``merlin-kit worker`` joining the analysis follows the windows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from merlin_kit.optimize import OptimizationConfig, OptunaConfig, close_storage, open_storage
from merlin_kit.optimize._attrs import CONFIG_ATTR, OWNER_ATTR, counts_towards_budget
from merlin_kit.walkforward import WF_JOURNAL_NAME, start_walk_forward, walk_forward

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["maLength", "closeCountLong"]
IS_DAYS, OOS_DAYS = 60, 20
#: LINK starts 2025-05-01: the last OOS day of four (three) 60/20-day windows is 2025-09-17 (2025-08-28)
FOUR_WINDOWS_END = "2025-09-18"
THREE_WINDOWS_END = "2025-08-29"


def _opt(link_csv, workers: int, **kw) -> OptimizationConfig:
    return OptimizationConfig(**{"data": str(link_csv), "optimize_params": PARAMS, "warmup_bars": 500,
                                 "worker_processes": workers, "end": FOUR_WINDOWS_END, **kw})


def _cfg(out, **kw) -> OptunaConfig:
    return OptunaConfig(**{"n_trials": 12, "sampler": "random", "seed": 3, "output_dir": out, **kw})


def _window_trials(out: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every window study's trials, by study name, from the analysis's journal."""
    storage = open_storage(str(out / WF_JOURNAL_NAME), heartbeat=False)
    try:
        return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
                for s in optuna.get_all_study_summaries(storage)}
    finally:
        close_storage(storage)


def _study_attrs(out: Path, name: str) -> dict:
    storage = open_storage(str(out / WF_JOURNAL_NAME), heartbeat=False)
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    finally:
        close_storage(storage)


def _counted(trials) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if counts_towards_budget(t)]


@pytest.fixture(scope="module")
def pool_and_inline(link_csv, tmp_path_factory):
    two_out, one_out = tmp_path_factory.mktemp("wf-pool-2"), tmp_path_factory.mktemp("wf-pool-1")
    two = walk_forward(_opt(link_csv, 2), _cfg(two_out), is_days=IS_DAYS, oos_days=OOS_DAYS)
    one = walk_forward(_opt(link_csv, 1), _cfg(one_out), is_days=IS_DAYS, oos_days=OOS_DAYS)
    return two, two_out, one, one_out


def test_two_workers_and_one_give_the_same_windows_and_exact_budgets(pool_and_inline):
    two, two_out, one, one_out = pool_and_inline
    assert len(two.windows) == len(one.windows) == 4
    cols = ["window", "is_start", "is_end", "oos_start", "oos_end", "is_bars", "oos_bars", "trials", "flat", "study"]
    pd.testing.assert_frame_equal(two.windows_frame()[cols], one.windows_frame()[cols])
    for result, out in ((two, two_out), (one, one_out)):
        trials = _window_trials(out)
        for w in result.windows:
            assert w.trials == 12 and w.run.summary.total_trials == 12
            assert len(_counted(trials[w.study_name])) == 12  # exact: no trial more in any window
            # the chosen record is the window study's best trial, and its OOS backtest was done
            assert w.params == w.run.best.params and w.best_trial_number == w.run.best.trial_number
            assert w.oos_metrics["total_trades"] == len(w.oos_trades)
    assert all(w.run.summary.workers == 2 for w in two.windows)
    assert all(w.run.summary.workers == 1 for w in one.windows)


def test_worker_processes_are_started_once_for_the_whole_analysis(pool_and_inline):
    two, two_out, _, _ = pool_and_inline
    started = {w.pid for w in two.windows[0].run.workers}
    assert len(started) == 2
    pids_per_window = {}
    for w in two.windows:
        assert {x.pid for x in w.run.workers} == started  # every window's run holds the same two processes
        pids_per_window[w.number] = {t.user_attrs[OWNER_ATTR]["pid"] for t in _counted(w.run.study.trials)}
        assert pids_per_window[w.number] <= started
    # the trials of all windows were run by the two processes started with the first window, not 2 x 4
    assert set().union(*pids_per_window.values()) == started
    assert all(not x.alive() for x in two.windows[-1].run.workers)  # and they ended with the analysis


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_sigkilled_worker_leaves_every_window_its_exact_budget(link_csv, tmp_path):
    n = 60
    killed: list[int] = []

    def kill_one_in_window_two(number, total, run) -> None:
        # window k's on_window comes once window k+1 is set up and its trials are under way (its OOS
        # backtest runs meanwhile): SIGKILL one of the pool's processes in the middle of window 2
        if number == 1:
            killed.append(run.workers[1].pid)
            os.kill(killed[0], signal.SIGKILL)

    handle = start_walk_forward(_opt(link_csv, 2), _cfg(tmp_path, n_trials=n), is_days=IS_DAYS, oos_days=OOS_DAYS,
                                on_window=kill_one_in_window_two)
    assert handle.wait(300)
    result = handle.result()
    assert killed and result.summary["complete"] and len(result.windows) == 4
    trials = _window_trials(tmp_path)
    for w in result.windows:
        assert w.trials == n and len(_counted(trials[w.study_name])) == n, w.number
        assert not [t for t in trials[w.study_name] if t.state == optuna.trial.TrialState.RUNNING]
    # the dead worker's trial in flight (if any) was failed, not left RUNNING; later windows ran on the survivor
    survivor = {x.pid for x in result.windows[0].run.workers} - set(killed)
    later = {t.user_attrs[OWNER_ATTR]["pid"] for w in result.windows[2:] for t in _counted(trials[w.study_name])}
    assert later == survivor and {x.pid for x in result.windows[3].run.workers} == survivor


def test_stop_returns_a_partial_result_and_a_rerun_resumes(link_csv, tmp_path):
    n = 80
    window_two_done = threading.Event()
    handle = start_walk_forward(_opt(link_csv, 2), _cfg(tmp_path, n_trials=n), is_days=IS_DAYS, oos_days=OOS_DAYS,
                                on_window=lambda number, total, run: number == 2 and window_two_done.set())
    assert len(handle.windows) == 4 and not handle.done
    assert window_two_done.wait(240)  # window 3 is under way now
    workers = [w.pid for w in handle.progress().finished[0].run.workers]
    t0 = time.monotonic()
    handle.stop()
    assert time.monotonic() - t0 < 10 and handle.done and handle.stopped
    assert not [pid for pid in workers if _alive(pid)]
    partial = handle.result()
    done = [w.number for w in partial.windows]
    assert partial.summary["complete"] is False and partial.summary["stop_reason"] == "stopped by user"
    assert done in ([1, 2], [1, 2, 3]) and all(w.trials == n for w in partial.windows)
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is False
    progress = handle.progress()
    assert progress.window is None and progress.windows_done == len(done) and progress.total_windows == 4

    again = walk_forward(_opt(link_csv, 2), _cfg(tmp_path, n_trials=n), is_days=IS_DAYS, oos_days=OOS_DAYS)
    assert again.summary["complete"] is True and again.summary["reused_windows"] == done
    assert [w.reused for w in again.windows] == [w.number in done for w in again.windows]
    assert [w.params for w in again.windows[:len(done)]] == [w.params for w in partial.windows]
    trials = _window_trials(tmp_path)
    for w in again.windows:
        # a stopped window resumes in its study: its earlier trials stay, this run adds its budget
        assert len(_counted(trials[w.study_name])) >= n
    assert all(w.trials == n for w in again.windows)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie (not reaped yet) counts as ended
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_time_budget_per_window_and_a_remote_worker_follows_the_windows(link_csv, tmp_path):
    limit = 4
    opt = _opt(link_csv, 2, end=THREE_WINDOWS_END)
    handle = start_walk_forward(opt, _cfg(tmp_path, budget_mode="time", time_limit=limit, n_trials=None),
                                is_days=IS_DAYS, oos_days=OOS_DAYS)
    first = f"{handle.plan.base}-w01"
    _wait_for(lambda: handle.progress().window is not None, 60, "the first window to start")
    remote = subprocess.Popen(
        [sys.executable, "-m", "merlin_kit", "worker", "--storage", str(tmp_path / WF_JOURNAL_NAME), "--study", first,
         "--worker-id", "77"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert handle.wait(120)
        result = handle.result()
        out, _ = remote.communicate(timeout=60)  # the worker leaves by itself after the last window
    finally:
        if remote.poll() is None:
            remote.kill()
    assert remote.returncode == 0, out
    assert result.summary["complete"] and len(result.windows) == 3
    trials = _window_trials(tmp_path)
    for w in result.windows:
        run_cfg = _study_attrs(tmp_path, w.study_name)[CONFIG_ATTR]
        counted = _counted(trials[w.study_name])
        # the deadline is measured from this window's start, and no trial starts after it
        assert run_cfg["deadline"] - run_cfg["started_at"] == limit
        assert all(t.datetime_start.timestamp() <= run_cfg["deadline"] + 0.5 for t in counted)
        # the first window's clock includes the processes' start-up (as in a plain optimisation: seconds on
        # a loaded machine); from the second window on, the pool is up and works the whole window
        assert counted or w.number == 1
        assert w.number == 1 or w.run.summary.optimization_time_seconds < limit + 3
    owners = {w.number: {t.user_attrs[OWNER_ATTR]["worker"] for t in _counted(trials[w.study_name])}
              for w in result.windows}
    assert 77 in owners[3], owners  # the remote worker joined window 1's study and followed to the last window
    assert all(ids & {0, 1} for n, ids in owners.items() if n > 1), owners


CTRL_C_SCRIPT = """
import sys
from merlin_kit.optimize import OptimizationConfig, OptunaConfig
from merlin_kit.walkforward import walk_forward

def on_window(number, total, run):
    print("WINDOW", number, *sorted(w.pid for w in run.workers), flush=True)

if __name__ == "__main__":
    opt = OptimizationConfig(data=sys.argv[1], optimize_params=["maLength", "closeCountLong"], warmup_bars=500,
                             worker_processes=2, end="2025-09-18")
    try:
        walk_forward(opt, OptunaConfig(n_trials=400, sampler="random", seed=3, output_dir=sys.argv[2]),
                     is_days=60, oos_days=20, on_window=on_window)
    except KeyboardInterrupt as exc:
        print("INTERRUPTED", exc, flush=True)
        sys.exit(130)
"""


def test_ctrl_c_in_the_blocking_call_stops_and_keeps_the_finished_windows(link_csv, tmp_path):
    script = tmp_path / "wf_ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(link_csv), str(tmp_path / "out")], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline().split()  # window 1 is finished and window 2 under way
        assert first[:2] == ["WINDOW", "1"], first
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "INTERRUPTED walk-forward interrupted in window 2 of 4" in out, out
    assert not [pid for pid in map(int, first[2:]) if _alive(pid)]
    attrs = _study_attrs(tmp_path / "out", "s01_trailing_ma-60d-20d-w01")
    assert "merlin.walkforward.window" in attrs  # the finished window is kept for a resume
    assert "merlin.walkforward.window" not in _study_attrs(tmp_path / "out", "s01_trailing_ma-60d-20d-w02")
