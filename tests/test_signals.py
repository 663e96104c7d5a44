"""Signals, from the outside, with real processes: what Ctrl-C, SIGTERM and SIGKILL leave behind.

* ``merlin-kit optimize``: SIGTERM (``timeout``, ``docker stop``, systemd) and Ctrl-C (the whole process
  group, as a terminal sends it) are graceful stops: results.csv and summary.json written, workers gone,
  the private temp folder removed, exit 143 / 130;
* ``merlin-kit worker``: the first signal lets the trial in flight finish; a second signal (or the grace
  period) gives it back to the queue; a trials budget still ends with exactly ``n_trials`` evaluated
  trials; ``--workers N`` forwards the signal to its children;
* a SIGKILLed parent's temp folder is removed by the next run; a live run's folder is kept.

Every process gets its own ``TMPDIR`` (a folder of the test), so the temp folders seen are the test's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from merlin_kit import cli
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization
from merlin_kit.optimize._attrs import ERROR_ATTR, OWNER_ATTR, RETURNED_ATTR
from merlin_kit.optimize._liveness import host_id, pid_alive
from merlin_kit.optimize._preflight import RUN_TMP_OWNER, RUN_TMP_PREFIX
from merlin_kit.optimize.config import MAX_WORKERS
from merlin_kit.strategies import IndicatorCache, S01TrailingMA

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["closeCountLong", "closeCountShort", "stopLongX"]
SLOW = "tests._strategies:SlowS01"  # 0.25 s a trial
SLEEPY = "tests.test_signals:SleepyS01"  # $MERLIN_TEST_SLEEP seconds a trial (0 in the test process)
PROC_TIMEOUT = 90

pytestmark = [pytest.mark.timeout(300), pytest.mark.posix_only]  # POSIX signals and process groups


class SleepyS01(S01TrailingMA):
    """S01 that sleeps ``$MERLIN_TEST_SLEEP`` seconds in each backtest (a long trial to signal into)."""

    id = "test_sleepy_s01"

    def run(self, data, params, cache: IndicatorCache | None = None):
        time.sleep(float(os.environ.get("MERLIN_TEST_SLEEP") or 0))
        return super().run(data, params, cache)


@pytest.fixture(scope="module")
def data_csv(write_sample_csv) -> Path:
    return write_sample_csv("bars.csv", 3000)


class Procs:
    """The test's processes (each in its own session, so a test can signal its whole group), their logs
    and clean-up."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tmpdir = tmp_path / "tmp"  # TMPDIR of every process: their merlin-run-* folders land here
        self.tmpdir.mkdir()
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        env = {**os.environ, **(env or {}), "TMPDIR": str(self.tmpdir),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        env.pop("MERLIN_HOST_ID", None)
        log = open(self.tmp_path / f"proc-{len(self.procs)}.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "merlin_kit", *args], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        proc.log.flush()  # type: ignore[attr-defined]
        proc.log.seek(0)  # type: ignore[attr-defined]
        return proc.log.read()  # type: ignore[attr-defined]

    def wait(self, proc: subprocess.Popen, timeout: float = PROC_TIMEOUT) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{proc.args} still running after {timeout} s:\n{self.output(proc)}")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(10)
            try:  # children left in the group (there should be none)
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.log.close()  # type: ignore[attr-defined]


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.cleanup()


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", proc_output=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f":\n{proc_output()}" if proc_output else ""))


def journal_trials(path: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    if not path.exists():
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def owner_pids(trials) -> set[int]:
    return {t.user_attrs[OWNER_ATTR]["pid"] for t in trials if OWNER_ATTR in t.user_attrs}


def run_tmpdirs(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob(f"{RUN_TMP_PREFIX}*"))


def tmpdir_owner(path: Path) -> int | None:
    try:
        return json.loads((path / RUN_TMP_OWNER).read_text())["pid"]
    except (OSError, ValueError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may wait for a reaper that this container lacks)."""
    if not pid_alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def assert_gone(pids: set[int], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(running(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if running(p)], f"worker processes still alive: {pids}"


# -- merlin-kit optimize ------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, code, reason, to_group", [
    pytest.param(signal.SIGTERM, 143, "terminated (SIGTERM)", False, id="sigterm"),  # timeout / docker stop
    pytest.param(signal.SIGINT, 130, "interrupted (Ctrl-C)", True, id="ctrl-c"),  # to the whole process group
])
def test_optimize_stops_gracefully_on_a_signal(procs, data_csv, tmp_path, signum, code, reason, to_group):
    out, study = tmp_path / "out", "sig-study"
    proc = procs.spawn(["optimize", "--data", str(data_csv), "--strategy", SLOW, "--params", *PARAMS,
                        "--warmup", "200", "--budget", "trials:400", "--workers", "2", "--sampler", "random",
                        "--seed", "1", "--study", study, "--out", str(out)])
    journal = out / "study.journal"
    trials = wait_for(lambda: [t for t in journal_trials(journal, study) if t.state == TrialState.COMPLETE][3:],
                      what="a few finished trials", proc_output=lambda: procs.output(proc))
    assert [p for p in run_tmpdirs(procs.tmpdir) if tmpdir_owner(p) == proc.pid], "the run's temp folder"
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    assert procs.wait(proc) == code, procs.output(proc)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == reason
    results = pd.read_csv(out / "results.csv")
    trials = journal_trials(journal, study)
    finished = [t for t in trials if t.state.is_finished()]
    assert len(results) == summary["total_trials"] == len(finished)
    assert 4 <= len(finished) < 400
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # the trials in flight finished
    assert not [p for p in run_tmpdirs(procs.tmpdir) if tmpdir_owner(p) == proc.pid]
    assert not run_tmpdirs(procs.tmpdir)
    workers = owner_pids(trials)
    assert len(workers) == 2 and proc.pid in workers  # the CLI runs worker 0 itself, beside one process
    assert_gone(workers)
    assert f"Results: {out / 'results.csv'}" in procs.output(proc)


# -- merlin-kit worker ----------------------------------------------------------------------------------------
def _remote_parent(tmp_path: Path, data_csv: Path, n_trials: int):
    """A parent with no worker of its own (worker_processes=0) on a journal: `merlin-kit worker`s do the work."""
    journal = tmp_path / "remote.journal"
    opt = OptimizationConfig(data=str(data_csv), strategy=SLEEPY, worker_processes=0, optimize_params=PARAMS,
                             warmup_bars=200)
    cfg = OptunaConfig(sampler="random", seed=5, study_name="remote-study", storage=str(journal),
                       output_dir=tmp_path / "run", n_trials=n_trials)
    return start_optimization(opt, cfg), str(journal)


def _running_of(run, pids: set[int]) -> list:
    return [t for t in run.study.get_trials(deepcopy=False)
            if t.state == TrialState.RUNNING and t.user_attrs.get(OWNER_ATTR, {}).get("pid") in pids]


@pytest.mark.parametrize("case", ["finish", "second_signal", "grace", "workers_2"])
def test_worker_signal_finishes_or_returns_its_trial_and_the_budget_stays_exact(procs, data_csv, tmp_path, case):
    n = 5
    run, journal = _remote_parent(tmp_path, data_csv, n)
    try:
        join = ["worker", "--storage", journal, "--study", "remote-study", "--allow-module", "tests"]
        sleep = {"finish": "2", "second_signal": "30", "grace": "30", "workers_2": "2"}[case]
        env = {"MERLIN_TEST_SLEEP": sleep, "MERLIN_SIGNAL_GRACE": "1" if case == "grace" else "60"}
        n_workers = 2 if case == "workers_2" else 1
        worker = procs.spawn([*join, "--worker-id", "10", "--workers", str(n_workers)], env=env)

        # the worker's trials are in flight (owner recorded, then the sleepy backtest)
        def in_flight():
            return [t for t in run.study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING
                    and OWNER_ATTR in t.user_attrs]
        flying = wait_for(lambda: len(in_flight()) >= n_workers and in_flight(), what="trials in flight",
                          proc_output=lambda: procs.output(worker))
        time.sleep(0.5)  # into the backtest
        done_before = {t._trial_id for t in run.study.get_trials(deepcopy=False) if t.state.is_finished()}
        if case == "finish":  # SIGTERM once: the trial finishes, no new one starts
            worker.send_signal(signal.SIGTERM)
            expected = 143
        elif case == "second_signal":  # Ctrl-C twice: the trial goes back to the queue at once
            worker.send_signal(signal.SIGINT)
            time.sleep(0.5)
            worker.send_signal(signal.SIGINT)
            expected = 130
        elif case == "grace":  # SIGTERM once, the trial outlives the grace period (1 s): given back
            worker.send_signal(signal.SIGTERM)
            expected = 143
        else:  # a terminal's Ctrl-C to `merlin-kit worker --workers 2`: forwarded, both trials finish
            os.killpg(worker.pid, signal.SIGINT)
            expected = 130
        started = time.monotonic()
        assert procs.wait(worker, 60) == expected, procs.output(worker)
        took = time.monotonic() - started
        assert took < 20, f"the worker took {took:.1f} s to stop"  # never the 30 s trial

        trials = run.study.get_trials(deepcopy=False)
        assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial was left RUNNING"
        ids = {t._trial_id for t in flying}
        mine = {t._trial_id: t for t in trials if t._trial_id in ids}
        returned = [t for t in trials if RETURNED_ATTR in t.user_attrs]
        if case in ("finish", "workers_2"):
            assert all(t.state == TrialState.COMPLETE for t in mine.values()), [t.state for t in mine.values()]
            assert not returned
            # no new trial after the signal: only the ones in flight were finished
            assert {t._trial_id for t in trials if t.state.is_finished()} == done_before | ids
        else:
            assert [t._trial_id for t in returned] == list(ids)
            (back,) = returned
            assert back.state == TrialState.FAIL
            assert back.user_attrs[RETURNED_ATTR] == signal.Signals(signal.SIGINT if expected == 130 else
                                                                    signal.SIGTERM).name
            assert back.user_attrs[ERROR_ATTR].startswith("returned to the queue")
            assert "returned to the queue" in procs.output(worker)
        workers = owner_pids(trials)
        assert len(workers) == n_workers
        assert_gone(workers)
        # the queue holds the rest of the budget (a returned trial's replacement included)
        evaluated = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len([t for t in trials if t.state == TrialState.WAITING]) == n - len(evaluated)

        # another worker finishes the budget: exactly n evaluated trials, the returned one not among them
        rest = procs.spawn([*join, "--worker-id", "20"], env={"MERLIN_TEST_SLEEP": "0"})
        assert procs.wait(rest) == 0, procs.output(rest)
        assert run.wait(60), "the parent did not see the budget reached"
        trials = run.study.get_trials(deepcopy=False)
        evaluated = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(evaluated) == n
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        assert [t.number for t in trials if t.state == TrialState.FAIL] == [t.number for t in returned]
        assert run.summary.total_trials == n == len(run.results)
        assert run.summary.failed_trials == 0
        assert not {t.number for t in returned} & {r.trial_number for r in run.results}
        assert run.summary.stop_reason == "budget reached"
    finally:
        run.stop()


def test_worker_count_is_capped(capsys):
    assert cli.main(["worker", "--storage", "nowhere.journal", "--study", "s", "--workers", "999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"merlin-kit worker: error: --workers must be from 1 to {MAX_WORKERS}, got 999"
    assert cli.main(["worker", "--storage", "nowhere.journal", "--study", "s", "--workers", "0"]) == 2


# -- temp folders of killed runs --------------------------------------------------------------------------------
def _fake_tmpdir(tmp: Path, name: str, owner: dict | None, age: float = 60.0) -> Path:
    path = tmp / f"{RUN_TMP_PREFIX}{name}"
    path.mkdir()
    (path / "prepared.npz").write_bytes(b"x")
    if owner is not None:
        (path / RUN_TMP_OWNER).write_text(json.dumps(owner))
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)
    return p.pid


def test_stale_run_tmpdirs_are_removed_and_live_ones_kept(tmp_path, monkeypatch, data_csv):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        here = host_id()
        stale = _fake_tmpdir(tmp, "dead", {"pid": dead, "host": here})
        kept = [
            _fake_tmpdir(tmp, "live", {"pid": live.pid, "host": here}),            # its process runs
            _fake_tmpdir(tmp, "young", {"pid": dead, "host": here}, age=0.0),      # just created
            _fake_tmpdir(tmp, "elsewhere", {"pid": dead, "host": here + "-other"}),  # another host's pid
            _fake_tmpdir(tmp, "no-owner", None),                                    # nothing proves it dead
        ]
        run = optimize(OptimizationConfig(data=str(data_csv), worker_processes=1, optimize_params=PARAMS,
                                          warmup_bars=200),
                       OptunaConfig(sampler="random", seed=1, n_trials=2))
        assert run.summary.total_trials == 2
        assert not stale.exists()
        assert sorted(run_tmpdirs(tmp)) == sorted(kept)  # and the run removed its own
    finally:
        live.kill()
        live.wait()


def test_a_killed_parents_tmpdir_is_removed_by_the_next_run(procs, data_csv, tmp_path, monkeypatch):
    out, study = tmp_path / "out", "killed-study"
    proc = procs.spawn(["optimize", "--data", str(data_csv), "--strategy", SLOW, "--params", *PARAMS,
                        "--warmup", "200", "--budget", "trials:400", "--workers", "2", "--sampler", "random",
                        "--study", study, "--out", str(out)])
    wait_for(lambda: [t for t in journal_trials(out / "study.journal", study) if t.state.is_finished()],
             what="a finished trial", proc_output=lambda: procs.output(proc))
    (left,) = [p for p in run_tmpdirs(procs.tmpdir) if tmpdir_owner(p) == proc.pid]
    proc.kill()
    proc.wait(10)
    assert_gone(owner_pids(journal_trials(out / "study.journal", study)))  # its workers see the parent gone
    assert (left / "prepared.npz").exists()
    # the next run on this machine removes it (a young folder is kept: see the test above)
    monkeypatch.setattr(tempfile, "tempdir", str(procs.tmpdir))
    past = time.time() - 60
    os.utime(left, (past, past))
    run = optimize(OptimizationConfig(data=str(data_csv), worker_processes=1, optimize_params=PARAMS,
                                      warmup_bars=200),
                   OptunaConfig(sampler="random", seed=1, n_trials=2))
    assert run.summary.total_trials == 2
    assert not left.exists()
    assert not run_tmpdirs(procs.tmpdir)
