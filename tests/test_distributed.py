"""Several machines on one study: PostgreSQL, MySQL/MariaDB and Redis storages and ``merlin-kit worker``,
on real servers.

The servers come from ``.ci/services.sh`` (``.ci/run`` starts them): the tests
read ``MERLIN_TEST_POSTGRES_URL``, ``MERLIN_TEST_MYSQL_URL`` and
``MERLIN_TEST_REDIS_URL`` and skip, saying how to start them, when those are
unset; in CI (``CI=true`` or ``MERLIN_KIT_REQUIRE_SERVERS=1``) a missing
server fails the test instead.  Every ``merlin-kit worker`` is a
separate process of the command line, standing in for a machine;
``MERLIN_HOST_ID`` makes one look like another host, so that only its
heartbeat (not its pid) can tell that it died.  Each test uses its own study
(PostgreSQL) or key prefix (Redis) and removes it afterwards.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit import cli
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization
from merlin_kit.optimize._storage import CONNECT_TIMEOUT, close_storage, open_storage, redact
from merlin_kit.strategies import S01TrailingMA
from merlin_kit.optimize._attrs import BEAT_ATTR, OWNER_ATTR, WORKER_STATUS_PREFIX, converged_attr

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["closeCountLong", "closeCountShort", "stopLongX"]
SLOW = "tests._strategies:SlowS01"  # S01 plus 0.25 s a trial: trials are in flight when a test acts
#: the environment variable of each database server's URL
SERVER_VARS = {"postgres": "MERLIN_TEST_POSTGRES_URL", "mysql": "MERLIN_TEST_MYSQL_URL"}
#: short heartbeats so that a dead worker's trial is failed within seconds (parent and workers read these)
HEARTBEAT_ENV = {"MERLIN_HEARTBEAT_INTERVAL": "1", "MERLIN_HEARTBEAT_GRACE": "3"}
PROC_TIMEOUT = 90

pytestmark = pytest.mark.timeout(240)


def servers_required() -> bool:
    """CI (``CI=true``, or ``MERLIN_KIT_REQUIRE_SERVERS=1`` as .ci/run sets) must run these tests, not skip them."""
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("MERLIN_KIT_REQUIRE_SERVERS") == "1")


def _server_url(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        missing = pytest.fail if servers_required() else pytest.skip
        missing(f"{var} is not set: start PostgreSQL, MariaDB and Redis with `source .ci/services.sh && "
                "start_services` (.ci/run does) to run the multi-machine tests")
    return url


@pytest.fixture(scope="module")
def data_csv(write_sample_csv) -> Path:
    return write_sample_csv("bars.csv", 3000)


@pytest.fixture(scope="module")
def other_csv(write_sample_csv) -> Path:
    return write_sample_csv("other.csv", 3000, seed=7)


@pytest.fixture(autouse=True)
def short_heartbeats(monkeypatch):
    for k, v in HEARTBEAT_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MERLIN_HOST_ID", raising=False)


class Cluster:
    """One study on one server, the parent run and the worker processes of a test, and their clean-up."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.tag = f"merlin-test-{uuid.uuid4().hex[:10]}"
        self.study_name = f"{self.tag}-study"
        if backend in SERVER_VARS:
            self.location = _server_url(SERVER_VARS[backend])
        else:
            base = _server_url("MERLIN_TEST_REDIS_URL")
            self.location = f"{base}{'&' if '?' in base else '?'}prefix={self.tag}"
        self.procs: list[subprocess.Popen] = []
        self.runs: list = []
        self._storage = None

    # -- the parent -------------------------------------------------------
    def start(self, data: Path, *, strategy: str = SLOW, **optuna_kwargs):
        opt = OptimizationConfig(data=str(data), strategy=strategy, worker_processes=0, optimize_params=PARAMS,
                                 warmup_bars=200)
        cfg = OptunaConfig(sampler="random", seed=11, study_name=self.study_name, storage=self.location,
                           output_dir=self.tmp_path / "run", **optuna_kwargs)
        run = start_optimization(opt, cfg)
        self.runs.append(run)
        return run

    # -- machines ---------------------------------------------------------
    def worker(self, worker_id: int, *, data: Path | None = None, host: str | None = None,
               workers: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
        args = [sys.executable, "-m", "merlin_kit", "worker", "--storage", self.location, "--study", self.study_name,
                "--worker-id", str(worker_id), "--workers", str(workers), "--allow-module", "tests"]
        if data is not None:
            args += ["--data", str(data)]
        return self.spawn(args, host=host, name=f"worker{worker_id}", env=env)

    def spawn(self, args: list[str], *, host: str | None = None, name: str = "proc",
              env: dict[str, str] | None = None) -> subprocess.Popen:
        env = {**os.environ, **(env or {}),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        if host is not None:
            env["MERLIN_HOST_ID"] = host
        log = open(self.tmp_path / f"{name}-{len(self.procs)}.log", "w+")
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        proc.log.flush()  # type: ignore[attr-defined]
        proc.log.seek(0)  # type: ignore[attr-defined]
        return proc.log.read()  # type: ignore[attr-defined]

    def wait_all(self, procs: list[subprocess.Popen], timeout: float = PROC_TIMEOUT) -> list[int]:
        end = time.monotonic() + timeout
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(max(0.1, end - time.monotonic())))
            except subprocess.TimeoutExpired:
                pytest.fail(f"process {p.args} still running after {timeout} s:\n{self.output(p)}")
        return codes

    # -- the database -----------------------------------------------------
    def storage(self):
        if self._storage is None:
            self._storage = open_storage(self.location, heartbeat=False)
        return self._storage

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=self.study_name, storage=self.storage()).get_trials(deepcopy=False)

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout} s waiting for {what}")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            p.log.close()  # type: ignore[attr-defined]
        for run in self.runs:
            if not run.done:
                run.stop()
        if self.backend in SERVER_VARS:
            storage = self.storage()
            for s in storage.get_all_studies():
                if s.study_name.startswith(self.tag):
                    optuna.delete_study(study_name=s.study_name, storage=storage)
            close_storage(storage)
        else:
            import redis

            client = redis.Redis.from_url(_server_url("MERLIN_TEST_REDIS_URL"))
            keys = list(client.scan_iter(match=f"{self.tag}:*"))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture(params=["postgres", "mysql", "redis"])
def cluster(request, tmp_path):
    c = Cluster(request.param, tmp_path)
    yield c
    c.cleanup()


@pytest.fixture(params=["postgres", "mysql"])
def rdb_cluster(request, tmp_path):
    """A SQL database (Optuna's RDBStorage): PostgreSQL and MySQL/MariaDB."""
    c = Cluster(request.param, tmp_path)
    yield c
    c.cleanup()


@pytest.fixture
def redis_cluster(tmp_path):
    c = Cluster("redis", tmp_path)
    yield c
    c.cleanup()


def _finished(trials):
    return [t for t in trials if t.state.is_finished()]


# -- three machines fill one study ------------------------------------------------------------------------
def test_three_machines_fill_the_study_exactly(cluster, data_csv):
    n = 36  # more than a database's queue window: the parent tops the queue up while the machines work
    run = cluster.start(data_csv, n_trials=n)
    workers = [cluster.worker(k) for k in range(3)]
    assert run.wait(PROC_TIMEOUT), "the parent did not see the budget reached"
    codes = cluster.wait_all(workers)
    assert codes == [0, 0, 0], [cluster.output(p) for p in workers]

    trials = cluster.trials()
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials)
    # every trial was run by one of the three machines, and they account for all of them
    owners = {t.user_attrs[OWNER_ATTR]["worker"] for t in trials}
    assert owners <= {0, 1, 2}
    statuses = cluster.storage().get_study_user_attrs(run._study_id)
    reports = [statuses[f"{WORKER_STATUS_PREFIX}{run.run_id}.{k}"] for k in range(3)]
    assert sum(r["trials"] for r in reports) == n
    assert all(r["stop_reason"] == "trial budget reached" for r in reports)
    for p in workers:
        assert "trial budget reached" in cluster.output(p)

    # the parent's results are the database's trials, rebuilt
    assert run.summary.total_trials == n and run.summary.completed_trials == n
    fixed = run.run_config.fixed_params
    from_db = {t.number: ("COMPLETE", {**fixed, **t.params}, t.value, t.user_attrs["metrics"]) for t in trials}
    from_run = {r.trial_number: (r.state, r.params, r.objective, r.metrics) for r in run.results}
    assert from_run == from_db
    best = run.best
    fresh = run.backtest(best).metrics
    assert {k: v for k, v in best.metrics.items() if k != "score"} == fresh  # the stored metrics are the backtest's
    # no password in the summary, nor in the configuration stored in the study (readable by dashboards)
    assert run.summary.storage == statuses["merlin.config"]["optuna"]["storage"] == redact(cluster.location)
    password = urlsplit(cluster.location).password
    if password:
        assert f":{password}@" not in json.dumps(statuses["merlin.config"]) + json.dumps(run.summary, default=str)
    assert (cluster.tmp_path / "run" / "results.csv").read_text().count("\n") == 1 + n


def test_redis_budget_of_several_queue_windows_is_exact(redis_cluster, data_csv):
    """600 fast trials on Redis: the queue (a journal window) is refilled more than twice; exactly n run."""
    from merlin_kit.optimize._budget import JOURNAL_QUEUE_WINDOW

    c = redis_cluster
    n = 2 * JOURNAL_QUEUE_WINDOW + 88
    opt = OptimizationConfig(data=str(data_csv), worker_processes=2, optimize_params=["closeCountLong", "stopLongX"],
                             warmup_bars=200)
    run = start_optimization(opt, OptunaConfig(n_trials=n, sampler="random", seed=5, study_name=c.study_name,
                                               storage=c.location))
    c.runs.append(run)
    # a queue that is never refilled leaves the workers idle: fail after a bound instead of hanging
    assert run.wait(90), f"not finished after 90 s: {run.progress()}"
    trials = c.trials()
    counts = {s: sum(1 for t in trials if t.state == s) for s in {t.state for t in trials}}
    assert counts == {TrialState.COMPLETE: n}
    assert run.summary.total_trials == n


def test_cli_optimize_waits_for_cli_workers(redis_cluster, data_csv, tmp_path):
    c = redis_cluster
    parent = c.spawn([sys.executable, "-m", "merlin_kit", "optimize", "--data", str(data_csv), "--strategy", SLOW,
                      "--params", *PARAMS, "--warmup", "200", "--budget", "trials:8", "--sampler", "random",
                      "--seed", "3", "--storage", c.location, "--workers", "0", "--study", c.study_name,
                      "--out", str(tmp_path / "out"), "--json"], name="parent")
    c.wait_for(lambda: c.study_name in [s.study_name for s in c.storage().get_all_studies()], 60, "the study")
    machine = c.worker(10, workers=2)  # one machine, two worker processes (ids 10 and 11)
    assert c.wait_all([parent, machine]) == [0, 0], c.output(parent) + c.output(machine)
    summary = json.loads(c.output(parent).strip().splitlines()[-1])
    assert summary["total_trials"] == 8 and summary["completed_trials"] == 8
    assert summary["storage"] == redact(c.location)
    trials = c.trials()
    assert len(_finished(trials)) == 8 == len(trials)
    assert {t.user_attrs[OWNER_ATTR]["worker"] for t in trials} <= {10, 11}
    results = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 8


def test_local_workers_and_a_remote_machine_share_a_database_budget(rdb_cluster, data_csv, monkeypatch):
    """worker_processes=2 on PostgreSQL plus one `merlin-kit worker` elsewhere: still exactly n trials,
    and the remote machine ran some of them (the local workers wait until it has run one)."""
    c = rdb_cluster
    n = 30
    monkeypatch.setenv("MERLIN_TEST_GATE_FILE", str(c.tmp_path / "remote-ran-a-trial"))
    monkeypatch.setenv("MERLIN_TEST_REMOTE_HOST", "machine-b")
    monkeypatch.setenv("MERLIN_TEST_PARENT_PID", str(os.getpid()))
    # spawn: the workers must see the gate variables set here (a forkserver's workers inherit the server's)
    opt = OptimizationConfig(data=str(data_csv), strategy="tests._strategies:RemoteFirstS01", worker_processes=2,
                             optimize_params=PARAMS, warmup_bars=200, start_method="spawn")
    run = start_optimization(opt, OptunaConfig(n_trials=n, sampler="random", seed=2, study_name=c.study_name,
                                               storage=c.location))
    c.runs.append(run)
    remote = c.worker(50, host="machine-b")
    assert run.wait(PROC_TIMEOUT)
    assert c.wait_all([remote]) == [0]
    trials = c.trials()
    assert len(trials) == n == run.summary.total_trials and all(t.state == TrialState.COMPLETE for t in trials)
    owners = [t.user_attrs[OWNER_ATTR] for t in trials]
    assert {o["worker"] for o in owners} <= {0, 1, 50}
    remote_trials = [o for o in owners if o["worker"] == 50]
    assert len(remote_trials) >= 1, "the remote machine ran no trial"
    assert all(o["pid"] == remote.pid and o["host"] == "machine-b" for o in remote_trials), remote_trials[:2]
    assert sorted(r.trial_number for r in run.results) == [t.number for t in trials]


# -- a machine dies --------------------------------------------------------------------------------------
@pytest.mark.posix_only  # SIGKILL
def test_killed_worker_leaves_no_running_trial(cluster, data_csv):
    """SIGKILL a worker "on another machine" mid-trial: its heartbeat stops and its trial becomes FAIL."""
    n = 10
    run = cluster.start(data_csv, n_trials=n)
    victim = cluster.worker(7, host="machine-that-dies")

    def victim_running():
        return [t for t in cluster.trials() if t.state == TrialState.RUNNING
                and (t.user_attrs.get(OWNER_ATTR) or {}).get("host") == "machine-that-dies"]

    cluster.wait_for(victim_running, 60, "a trial running on the victim")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    stuck = [t.number for t in cluster.trials() if t.state == TrialState.RUNNING]
    assert stuck, "the victim was between two trials when killed"

    survivors = [cluster.worker(k) for k in (1, 2)]
    assert run.wait(PROC_TIMEOUT)
    assert cluster.wait_all(survivors) == [0, 0]

    trials = cluster.trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(trials) == n == run.summary.total_trials
    failed = {t.number for t in trials if t.state == TrialState.FAIL}
    assert failed == set(stuck)
    assert all(t.state == TrialState.COMPLETE for t in trials if t.number not in failed)
    if cluster.backend == "redis":  # journal: our beat watcher names the silent machine
        for t in trials:
            if t.number in failed:
                assert "machine-that-dies" in t.user_attrs["error"] and "heartbeat" in t.user_attrs["error"]


# -- a machine with other data --------------------------------------------------------------------------
def test_worker_with_other_data_is_refused(redis_cluster, data_csv, other_csv, tmp_path):
    c = redis_cluster
    run = c.start(data_csv, n_trials=3)
    bad = c.worker(1, data=other_csv)
    missing = c.worker(2, data=tmp_path / "nowhere.csv")
    assert c.wait_all([bad, missing]) == [2, 2]
    out = c.output(bad).strip()
    assert len(out.splitlines()) == 1, out
    assert "other.csv" in out and "bars.csv" in out and "fingerprint" in out
    fingerprints = [w.rstrip("…") for w in out.split() if len(w.rstrip("…")) == 16]
    assert len(fingerprints) == 2 and fingerprints[0] != fingerprints[1]
    assert run.run_config.data_fingerprint.startswith(fingerprints[1])
    out = c.output(missing).strip()
    assert len(out.splitlines()) == 1 and "nowhere.csv" in out and "not on this machine" in out
    assert not _finished(c.trials())  # nothing ran
    run.stop()
    assert run.done


# -- servers that cannot be used ---------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a stalled server or a middlebox)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield srv.getsockname()[1]
    srv.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _with_password(url: str, password: str, user: str | None = None) -> str:
    scheme, rest = url.split("://", 1)
    hostpart = rest.split("@", 1)[-1]
    old_user = rest.split("@", 1)[0].split(":")[0] if "@" in rest else ""
    return f"{scheme}://{user or old_user}:{password}@{hostpart}"


def _bad_location(kind: str, silent_port: int) -> tuple[str, str]:
    """(location, what the message must say)."""
    if kind == "postgres wrong password":
        return _with_password(_server_url("MERLIN_TEST_POSTGRES_URL"), "Wr0ng-pw"), "password authentication failed"
    if kind == "redis wrong password":
        return _with_password(_server_url("MERLIN_TEST_REDIS_URL"), "Wr0ng-pw", user="merlin"), "AuthenticationError"
    if kind == "postgres unreachable":
        return f"postgresql://merlin:Wr0ng-pw@127.0.0.1:{_closed_port()}/merlin", "refused"
    if kind == "redis unreachable":
        return f"redis://:Wr0ng-pw@127.0.0.1:{_closed_port()}/0", "refused"
    if kind == "postgres silent":
        return f"postgresql://merlin:Wr0ng-pw@127.0.0.1:{silent_port}/merlin", "timeout"
    if kind == "redis silent":
        return f"redis://:Wr0ng-pw@127.0.0.1:{silent_port}/0", "Timeout"
    if kind == "mysql wrong password":
        return _with_password(_server_url("MERLIN_TEST_MYSQL_URL"), "Wr0ng-pw"), "Access denied"
    if kind == "mysql unreachable":
        pytest.importorskip("pymysql", reason="the [mysql] extra (PyMySQL) is not installed")
        return f"mysql://merlin:Wr0ng-pw@127.0.0.1:{_closed_port()}/merlin", "Can't connect"
    if kind == "mysql silent":
        pytest.importorskip("pymysql", reason="the [mysql] extra (PyMySQL) is not installed")
        return f"mysql://merlin:Wr0ng-pw@127.0.0.1:{silent_port}/merlin", "timed out"
    raise AssertionError(kind)


BAD_SERVERS = ["postgres wrong password", "mysql wrong password", "redis wrong password", "postgres unreachable",
               "mysql unreachable", "redis unreachable", "postgres silent", "redis silent", "mysql silent"]


@pytest.mark.parametrize("kind", BAD_SERVERS)
def test_bad_server_is_a_clear_error_within_seconds(kind, silent_server, data_csv):
    location, says = _bad_location(kind, silent_server)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        start_optimization(
            OptimizationConfig(data=str(data_csv), worker_processes=0, optimize_params=PARAMS, warmup_bars=200),
            OptunaConfig(n_trials=5, sampler="random", storage=location, study_name="never-created"),
        )
    elapsed = time.monotonic() - t0
    message = str(err.value)
    assert elapsed < CONNECT_TIMEOUT + 3, f"took {elapsed:.1f} s"
    assert redact(location) in message and "Wr0ng-pw" not in message
    assert says in message


@pytest.mark.parametrize("kind", ["postgres wrong password", "mysql wrong password", "redis silent"])
@pytest.mark.parametrize("command", ["worker", "optimize"])
def test_cli_bad_server_exit_code_2_one_line(kind, command, silent_server, data_csv, tmp_path):
    location, says = _bad_location(kind, silent_server)
    args = [sys.executable, "-m", "merlin_kit", command, "--storage", location, "--study", "never-created"]
    if command == "optimize":
        args += ["--workers", "0", "--data", str(data_csv), "--params", *PARAMS, "--warmup", "200",
                 "--budget", "trials:3", "--out", str(tmp_path / "out")]
    t0 = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"merlin-kit {command}: error: "), proc.stderr
    assert redact(location) in lines[0] and "Wr0ng-pw" not in proc.stderr + proc.stdout and says in lines[0]
    assert elapsed < CONNECT_TIMEOUT + 10, f"took {elapsed:.1f} s"  # interpreter start-up included


# -- drivers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("location, modules, extra", [
    ("redis://127.0.0.1:6379/0", ["redis"], "merlin-kit[redis]"),
    ("postgresql://u:secret@127.0.0.1/db", ["psycopg2", "psycopg"], "merlin-kit[postgres]"),
    ("postgresql+psycopg2://u:secret@127.0.0.1/db", ["psycopg2"], "merlin-kit[postgres]"),
    ("mysql://u:secret@127.0.0.1/db", ["pymysql", "MySQLdb"], "merlin-kit[mysql]"),
    ("mysql+pymysql://u:secret@127.0.0.1/db", ["pymysql"], "merlin-kit[mysql]"),
])
def test_missing_driver_names_the_extra(monkeypatch, capsys, location, modules, extra):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # `import m` now raises ImportError
    with pytest.raises(ConfigError) as err:
        open_storage(location)
    assert extra in str(err.value) and "secret" not in str(err.value)
    assert cli.main(["worker", "--storage", location, "--study", "s"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and extra in err_lines[0]


# -- budgets across machines -----------------------------------------------------------------------------
def test_time_budget_across_machines(rdb_cluster, data_csv, startup_seconds):
    """A time budget shared by two `merlin-kit worker` machines: they start trials until the study's deadline only.

    The budget is long enough for both machines to start on a busy box (three times this machine's measured
    start-up of a two-worker run, at least 15 s), and the run must end within a few seconds plus that start-up
    after the deadline; a deadline that machines ignore would go on for minutes.
    """
    c = rdb_cluster
    limit = max(15, math.ceil(3 * startup_seconds))
    run = c.start(data_csv, budget_mode="time", time_limit=limit)
    deadline = run.run_config.deadline
    workers = [c.worker(k) for k in (1, 2)]
    assert run.wait(PROC_TIMEOUT + limit)
    ended = time.time()
    assert c.wait_all(workers) == [0, 0]
    trials = c.trials()
    assert trials, (f"no worker started a trial before the deadline ({limit} s, start-up {startup_seconds:.1f} s):\n"
                    + "\n".join(c.output(p) for p in workers))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # no machine started a trial after the study's deadline; the run ended soon after it
    assert max(t.datetime_start.timestamp() for t in trials) <= deadline + 0.5
    assert deadline <= ended < deadline + 5 + startup_seconds, (ended - deadline, startup_seconds)
    assert {t.user_attrs[OWNER_ATTR]["worker"] for t in trials} <= {1, 2}
    assert run.summary.total_trials == len(trials)
    for p in workers:
        assert "time limit reached" in c.output(p)


def test_convergence_across_machines(redis_cluster, data_csv):
    c = redis_cluster
    patience = 5
    run = c.start(data_csv, strategy="s01_trailing_ma", budget_mode="convergence", convergence_patience=patience)
    workers = [c.worker(k) for k in (1, 2)]
    assert run.wait(PROC_TIMEOUT)
    assert c.wait_all(workers) == [0, 0]
    attrs = c.storage().get_study_user_attrs(run._study_id)
    assert attrs[converged_attr(run.run_id)] >= patience  # declared once, in the database, for every machine
    trials = c.trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert run.summary.total_trials == len(_finished(trials)) > patience
    for p in workers:
        assert "converged" in c.output(p)


# -- the heartbeat itself ----------------------------------------------------------------------------------
class SleepyS01(S01TrailingMA):
    """S01 that sleeps MERLIN_TEST_TRIAL_SLEEP seconds a trial (set only in a worker's environment)."""

    id = "test_sleepy_s01"

    def run(self, data, params, cache=None):
        time.sleep(float(os.environ.get("MERLIN_TEST_TRIAL_SLEEP", "0")))
        return super().run(data, params, cache)


def test_long_trial_on_another_host_is_kept_alive_by_its_heartbeat(cluster, data_csv):
    """A trial lasting longer than the grace period is not taken for dead while its worker lives."""
    run = cluster.start(data_csv, strategy="tests.test_distributed:SleepyS01", n_trials=1)
    w = cluster.worker(3, host="machine-slow", env={"MERLIN_TEST_TRIAL_SLEEP": "5"})  # 5 s > grace 3 s
    assert run.wait(PROC_TIMEOUT)
    assert cluster.wait_all([w]) == [0]
    (trial,) = cluster.trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("error")
    assert (trial.datetime_complete - trial.datetime_start).total_seconds() >= 5
    if cluster.backend == "redis":
        assert trial.user_attrs[BEAT_ATTR] >= 3  # one beat a second while it ran


def test_dashboard_on_a_database_never_shows_its_password(data_csv, tmp_path):
    """optuna-dashboard on PostgreSQL: the handle, its notebook link and the CLI line mask the password."""
    from merlin_kit.notebook.dashboard import dashboard

    url = _server_url("MERLIN_TEST_POSTGRES_URL")
    password = urlsplit(url).password
    assert password
    study = f"merlin-test-{uuid.uuid4().hex[:10]}-dash"
    optimize(OptimizationConfig(data=str(data_csv), worker_processes=1, optimize_params=["maLength"],
                                warmup_bars=200),
             OptunaConfig(n_trials=2, sampler="random", storage=url, study_name=study))
    handle = dashboard(url)
    try:
        shown = handle.storage_display + repr(handle) + handle._repr_html_()
        assert f":{password}@" not in shown and ":***@" in handle.storage_display
    finally:
        handle.stop()
    proc = subprocess.Popen([sys.executable, "-m", "merlin_kit", "dashboard", "--storage", url], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert first.startswith("optuna-dashboard: http://127.0.0.1:") and ":***@" in first
    assert f":{password}@" not in first + out + err
