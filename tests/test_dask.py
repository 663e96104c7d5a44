"""A study's workers as tasks on a real Dask cluster (``cluster=``, ``--cluster``), on PostgreSQL.

The cluster is real: ``dask scheduler`` and two ``dask worker`` processes (one
thread each) started from the command line, with this checkout on their
PYTHONPATH.  The tests share it (module fixture) and each uses its own study,
removed afterwards.  PostgreSQL comes from ``MERLIN_TEST_POSTGRES_URL`` (skip
when unset, fail in CI, as in test_distributed.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization
from merlin_kit.optimize._attrs import OWNER_ATTR, WORKER_STATUS_PREFIX
from merlin_kit.optimize._storage import close_storage, open_storage

from .test_distributed import HEARTBEAT_ENV, PARAMS, SLOW, _server_url

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
SLOWER = "tests._strategies:SlowerS01"  # ~1 s a trial
START_SECONDS = 60

pytestmark = [pytest.mark.timeout(180), pytest.mark.posix_only]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskCluster:
    """``dask scheduler`` + 2 x ``dask worker`` processes and a client; the processes end with the module."""

    def __init__(self, tmp: Path) -> None:
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.env = {**os.environ, **HEARTBEAT_ENV, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.env.pop("MERLIN_HOST_ID", None)
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self._spawn(["scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
                     "--no-dashboard"], "scheduler")
        for k in range(2):
            self._spawn(["worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                         "--name", f"w{k}", "--memory-limit", "0"], f"worker{k}")
        end = time.monotonic() + START_SECONDS
        while True:
            try:
                self.client = distributed.Client(self.address, timeout=5, set_as_default=False)
                break
            except (OSError, TimeoutError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)
        self.client.wait_for_workers(2, timeout=START_SECONDS)

    def _spawn(self, args: list[str], name: str) -> None:
        log = open(self.tmp / f"{name}.log", "w")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "dask", *args],
                                           cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def ready(self) -> None:
        """Two workers connected and idle (a killed worker is restarted by its nanny; a stopped task has ended)."""
        self.client.wait_for_workers(2, timeout=START_SECONDS)
        end = time.monotonic() + 30
        while any(self.client.processing().values()):
            assert time.monotonic() < end, f"tasks still running on the cluster: {self.client.processing()}"
            time.sleep(0.2)

    def close(self) -> None:
        try:
            self.client.shutdown()  # the scheduler ends its workers: faster than signalling every nanny
        except Exception:
            self.client.close()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    _server_url("MERLIN_TEST_POSTGRES_URL")  # skip (or fail in CI) before starting anything
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def data_csv(write_sample_csv) -> Path:
    return write_sample_csv("bars.csv", 3000)


@pytest.fixture
def study(dask_cluster):
    """A fresh study name on PostgreSQL (removed afterwards) and an idle cluster."""
    for k, v in HEARTBEAT_ENV.items():
        os.environ[k] = v
    dask_cluster.ready()
    url = _server_url("MERLIN_TEST_POSTGRES_URL")
    name = f"merlin-dask-{uuid.uuid4().hex[:10]}"
    yield url, name
    storage = open_storage(url, heartbeat=False)
    try:
        if name in [s.study_name for s in storage.get_all_studies()]:
            optuna.delete_study(study_name=name, storage=storage)
    finally:
        close_storage(storage)
        for k in HEARTBEAT_ENV:
            os.environ.pop(k, None)


def _configs(data: Path, url: str, name: str, tmp_path: Path, **budget):
    opt = OptimizationConfig(data=str(data), strategy=SLOW, optimize_params=PARAMS, warmup_bars=200)
    cfg = OptunaConfig(sampler="random", seed=5, study_name=name, storage=url, output_dir=tmp_path / "run", **budget)
    return opt, cfg


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        close_storage(storage)


def test_exact_budget_on_two_dask_workers(dask_cluster, study, data_csv, tmp_path):
    url, name = study
    n = 16
    run = optimize(*_configs(data_csv, url, name, tmp_path, n_trials=n), cluster=dask_cluster.client)
    trials = _trials(url, name)
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials)
    assert run.summary.total_trials == n == run.summary.completed_trials
    assert run.summary.workers == 2  # one task per Dask worker thread
    addresses = set(dask_cluster.client.nthreads())
    assert {t.user_attrs[OWNER_ATTR]["address"] for t in trials} <= addresses
    assert all(w.exitcode == 0 for w in run.workers)
    assert {w.address for w in run.progress().workers} <= addresses  # the live monitor's worker column
    statuses = run.study.user_attrs
    reports = [statuses[f"{WORKER_STATUS_PREFIX}{run.run_id}.{k}"] for k in range(2)]
    assert sum(r["trials"] for r in reports) == n and {r["address"] for r in reports} <= addresses
    assert (tmp_path / "run" / "results.csv").read_text().count("\n") == 1 + n


def test_killed_dask_worker_fails_its_trial_and_the_budget_stays_exact(dask_cluster, study, data_csv, tmp_path):
    url, name = study
    n = 10
    opt, cfg = _configs(data_csv, url, name, tmp_path, n_trials=n)
    run = start_optimization(replace(opt, strategy=SLOWER), cfg, cluster=dask_cluster.client)
    try:
        pids = set(dask_cluster.client.run(os.getpid).values())  # the Dask worker processes (not nannies)
        end = time.monotonic() + 60
        victim = None
        while victim is None:  # a trial in flight (its owner is the Dask worker process running the task)
            assert time.monotonic() < end, "no trial started on the cluster"
            running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING
                       and t.user_attrs.get(OWNER_ATTR, {}).get("pid") in pids]
            victim = running[0] if running else None
            time.sleep(0.05)
        pid = victim.user_attrs[OWNER_ATTR]["pid"]
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)  # ~1 s trials: it is still computing this one
        assert run.wait(120), "the run did not end after a Dask worker was killed"
    finally:
        run.stop()
    trials = _trials(url, name)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(trials) == n == run.summary.total_trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert victim.number in {t.number for t in failed}
    assert all(t.user_attrs[OWNER_ATTR]["pid"] == pid for t in failed)  # only the killed process's trial
    assert "ended during this trial" in next(t for t in failed if t.number == victim.number).user_attrs["error"]


def test_stop_ends_a_cluster_run_within_seconds(dask_cluster, study, data_csv, tmp_path):
    url, name = study
    run = start_optimization(*_configs(data_csv, url, name, tmp_path, n_trials=400), cluster=dask_cluster.client)
    end = time.monotonic() + 60
    while run.progress().finished < 4:
        assert time.monotonic() < end and not run.done, "no trial finished on the cluster"
        time.sleep(0.1)
    began = time.monotonic()
    run.stop()
    assert run.done and time.monotonic() - began < 12
    assert run.summary.stop_reason == "stopped by user"
    assert 4 <= run.summary.total_trials < 400 and len(run.results) == run.summary.total_trials
    dask_cluster.ready()  # the tasks' threads saw the stop flag and ended: nothing left running


def test_cluster_refuses_storage_its_workers_cannot_share(dask_cluster, data_csv, tmp_path):
    opt, cfg = _configs(data_csv, f"sqlite:///{tmp_path}/x.db", "s", tmp_path, n_trials=4)
    with pytest.raises(ConfigError, match="SQLite") as err:
        optimize(opt, cfg, cluster=dask_cluster.client)
    assert err.value.field == "storage"
    with pytest.raises(ConfigError, match="cluster must be") as err:
        optimize(opt, cfg, cluster=42)
    assert err.value.field == "cluster"
    with pytest.raises(ConfigError, match="keep_workers") as err:  # its tasks would wait for a next study
        start_optimization(opt, replace(cfg, storage=None), keep_workers=True, cluster=dask_cluster.client)
    assert err.value.field == "cluster"


def test_without_distributed_the_extra_is_named(monkeypatch, data_csv, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    opt, cfg = _configs(data_csv, "unused.journal", "s", tmp_path, n_trials=4)
    with pytest.raises(ConfigError, match=r'pip install "merlin-kit\[dask\]"'):
        optimize(opt, cfg, cluster="tcp://127.0.0.1:1")


def test_cli_optimize_on_a_cluster(dask_cluster, study, data_csv, tmp_path):
    url, name = study
    out = subprocess.run(
        [sys.executable, "-m", "merlin_kit", "optimize", "--data", str(data_csv), "--strategy", SLOW,
         "--params", *PARAMS, "--warmup", "200", "--budget", "trials:6", "--sampler", "random", "--seed", "3",
         "--storage", url, "--study", name, "--cluster", dask_cluster.address, "--out", str(tmp_path / "out"),
         "--json"], cwd=REPO, env=dask_cluster.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["total_trials"] == 6 == summary["completed_trials"] and summary["workers"] == 2
    assert len(_trials(url, name)) == 6


def test_panel_runs_on_the_cluster_and_shows_dask_addresses(dask_cluster, study, data_csv, tmp_path):
    pytest.importorskip("ipywidgets")
    from merlin_kit.notebook.live import LiveMonitor
    from merlin_kit.notebook.widgets import ConfigPanel

    url, name = study
    opt, cfg = _configs(data_csv, url, name, tmp_path, n_trials=6)
    panel = ConfigPanel(OptimizationConfig(data=str(data_csv), optimize_params=PARAMS, warmup_bars=200), cfg,
                        live=False, cluster=dask_cluster.client)
    assert panel.workers.value == 1  # the given config's worker_processes: one task per Dask thread
    run = panel.start()
    assert run is not None, panel.status.value
    assert panel.wait(90, show=False)
    assert run.summary.total_trials == 6 and run.summary.workers == 2
    shown = LiveMonitor._workers_html(run.progress().workers)
    assert all(address in shown for address in {w.address for w in run.progress().workers})
    assert "tcp://127.0.0.1:" in shown
    panel.close()


def test_walk_forward_windows_run_on_the_cluster(dask_cluster, tmp_path):
    from merlin_kit.walkforward import walk_forward

    opt = OptimizationConfig(data="sample", end="2024-03-15", optimize_params=PARAMS, warmup_bars=500)
    cfg = OptunaConfig(n_trials=6, sampler="random", seed=1, output_dir=tmp_path / "wf")  # a journal in the folder
    result = walk_forward(opt, cfg, is_days=30, oos_days=15, cluster=dask_cluster.client)
    assert len(result.windows) == 3 and [w.trials for w in result.windows] == [6, 6, 6]
    addresses = set(dask_cluster.client.nthreads())
    for w in result.windows:
        assert w.run.summary.workers == 2 and {x.address for x in w.run.progress().workers} <= addresses


def test_time_budget_on_the_cluster(dask_cluster, study, data_csv, tmp_path):
    url, name = study
    began = time.monotonic()
    run = optimize(*_configs(data_csv, url, name, tmp_path, budget_mode="time", time_limit=3),
                   cluster=dask_cluster.client)
    assert time.monotonic() - began < 20
    assert run.summary.total_trials >= 2 and all(w.exitcode == 0 for w in run.workers)
    assert not [t for t in _trials(url, name) if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_dask_worker_without_the_data_path_gets_the_scattered_bytes(dask_cluster, study, data_csv, tmp_path):
    """The task's data branch: the parent's path is missing on the Dask worker, the bytes come with the task
    (written to a temp file there; the study's fingerprint check passes)."""
    from merlin_kit.optimize._dask import run_cluster_task

    url, name = study
    opt, cfg = _configs(data_csv, url, name, tmp_path, n_trials=4)
    run = start_optimization(replace(opt, worker_processes=0), cfg)  # the parent only queues and watches
    try:
        data = dask_cluster.client.scatter(data_csv.read_bytes(), hash=False)
        future = dask_cluster.client.submit(run_cluster_task, run.location, name, 3, run.trust_key,
                                            str(tmp_path / "not-on-this-worker" / "bars.csv"), data, pure=False)
        assert future.result(timeout=60)["trials"] == 4
        assert run.wait(30)
    finally:
        run.stop()
    assert run.summary.total_trials == 4 == run.summary.completed_trials


class _FakeClient:
    """What check_cluster_storage and task_count ask of a client: its workers' threads and host ids."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts

    def nthreads(self) -> dict[str, int]:
        return {address: 1 for address in self.hosts}

    def run(self, fn, *args):
        return dict(self.hosts)


def test_default_journal_needs_every_dask_worker_on_this_machine():
    from merlin_kit._platform import host_id
    from merlin_kit.optimize._dask import check_cluster_storage, task_count

    here = host_id()
    check_cluster_storage(None, _FakeClient({"tcp://a:1": here, "tcp://a:2": here}))  # a LocalCluster
    for hosts, said in (({"tcp://a:1": here, "tcp://b:1": "node-b"}, "node-b"), ({}, "no worker yet")):
        with pytest.raises(ConfigError, match=said) as err:
            check_cluster_storage(None, _FakeClient(hosts))
        assert err.value.field == "storage" and "PostgreSQL" in str(err.value)
    check_cluster_storage("postgresql://u:p@db/merlin", _FakeClient({}))  # a server: any cluster
    with pytest.raises(ConfigError, match="SQLite"):
        check_cluster_storage("sqlite:///:memory:", _FakeClient({"tcp://a:1": here}))
    assert task_count(1, _FakeClient({"tcp://a:1": here, "tcp://b:1": here})) == 2  # one per Dask thread
    assert task_count(5, _FakeClient({})) == 5
    with pytest.raises(ConfigError, match="no worker yet") as err:
        task_count(1, _FakeClient({}))
    assert err.value.field == "worker_processes"


def test_the_data_bytes_are_scattered_only_when_a_dask_worker_lacks_the_path(tmp_path):
    from merlin_kit.optimize._dask import ClusterPool

    csv = tmp_path / "bars.csv"
    csv.write_bytes(b"time,open\n")

    class Client(_FakeClient):
        def __init__(self, seen: dict[str, bool]) -> None:
            super().__init__({address: "h" for address in seen})
            self.seen, self.scattered = seen, []

        def run(self, fn, *args):
            return dict(self.seen)

        def scatter(self, data, **kwargs):
            self.scattered.append((data, kwargs))
            return "future"

    everyone = Client({"tcp://a:1": True, "tcp://b:1": True})
    assert ClusterPool(everyone, False)._data_for_workers(str(csv)) is None and not everyone.scattered
    one_lacks = Client({"tcp://a:1": True, "tcp://b:1": False})
    assert ClusterPool(one_lacks, False)._data_for_workers(str(csv)) == "future"
    assert one_lacks.scattered == [(b"time,open\n", {"hash": False, "broadcast": True})]
    none_yet = Client({})  # workers still to come (dask-jobqueue): they get the bytes
    assert ClusterPool(none_yet, False)._data_for_workers(str(csv)) == "future"
    assert ClusterPool(none_yet, False)._data_for_workers("sample") is None
