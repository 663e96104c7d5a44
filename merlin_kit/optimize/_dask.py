"""Hand a run's kit workers to a Dask cluster (``cluster=`` of optimize, start_optimization, walk_forward).

Why: researchers who outgrow one machine often already have a Dask cluster
(LocalCluster, dask-jobqueue on SLURM/PBS, Kubernetes); the kit uses it instead
of asking someone to start ``merlin-kit worker`` on every machine.

How: the parent creates the study and queues the budget exactly as for remote
workers; then it submits one long-running task per kit worker.  Each task runs
:func:`~._worker.run_worker` -- the same loop as ``merlin-kit worker`` -- so
budgets, Stop (the study's stop flag), heartbeats and results are those of
local processes.  The engine sees each task as a :class:`ClusterWorker` (alive
while its future is pending), so progress, the end of the run and Stop work as
for its own processes.  A Dask worker that dies mid-trial is a dead worker: the
parent's reaper fails its trial (pid check on this machine, heartbeat
elsewhere), which counts as one of a trials budget's N (as for a killed local
process), so the run still ends with exactly N; Dask may run the lost task again
on a surviving or restarted worker, which then simply joins the study again.

Number of tasks: ``worker_processes`` when it is more than 1, otherwise one per
Dask worker thread (``sum(client.nthreads().values())``).  Data: the study's
data path when every Dask worker can read it; otherwise the file's bytes are
scattered once (to every Dask worker) and a worker that lacks the path writes them to a temporary
file (the fingerprint check of :meth:`RunConfig.load_prepared` applies as usual).

``distributed`` is imported only here, and only when a cluster is given.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._platform import host_id
from ..errors import ConfigError
from ._storage import StorageLocation

log = logging.getLogger("merlin_kit.optimize")

EXTRA_HINT = 'pip install "merlin-kit[dask]"'
#: seconds to reach a scheduler given by its address
CONNECT_SECONDS = 10
#: how often the monitor asks the scheduler where each task runs
ADDRESS_REFRESH_SECONDS = 2.0


def import_distributed() -> Any:
    """``distributed``, or a ConfigError naming the extra that installs it."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"cluster: Dask's 'distributed' package is not installed; install the extra: {EXTRA_HINT}",
                          field="cluster") from None
    return distributed


def open_client(cluster: Any) -> tuple[Any, bool]:
    """``(client, owned)`` for ``cluster``: a ``distributed.Client`` (the caller's), a Dask cluster object or a
    scheduler address such as ``"tcp://host:8786"`` (then the kit owns the client and closes it)."""
    distributed = import_distributed()
    if isinstance(cluster, distributed.Client):
        return cluster, False
    if isinstance(cluster, str) and cluster.strip():
        try:
            return distributed.Client(cluster.strip(), timeout=CONNECT_SECONDS, set_as_default=False), True
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cluster: cannot reach the Dask scheduler at {cluster!r} within {CONNECT_SECONDS} s "
                              f"({type(exc).__name__}: {exc}); is `dask scheduler` running there?",
                              field="cluster") from None
    if hasattr(cluster, "scheduler_address"):  # LocalCluster, SLURMCluster, ...
        return distributed.Client(cluster, set_as_default=False), True
    raise ConfigError(f"cluster must be a distributed.Client, a Dask cluster object or a scheduler address such as "
                      f"'tcp://host:8786', got {cluster!r}", field="cluster")


def worker_hosts(client: Any) -> set[str]:
    """The kit's host id (:func:`host_id`) of every Dask worker now connected."""
    return set(client.run(host_id).values()) if client.nthreads() else set()


def check_cluster_storage(storage: Any, client: Any) -> None:
    """Refuse a storage the Dask workers cannot share (sqlite), and the default temporary journal unless every
    Dask worker runs on this machine (a LocalCluster)."""
    allowed = ("storage= a PostgreSQL/MySQL URL, a redis:// URL, or a journal file path on a filesystem that "
               "every Dask worker sees")
    if storage is None:
        hosts = worker_hosts(client)
        if hosts and hosts <= {host_id()}:
            return  # a LocalCluster: the run's temporary journal is readable by its workers
        where = "has no worker yet" if not hosts else f"has workers on other machines ({', '.join(sorted(hosts))})"
        raise ConfigError(f"storage: the Dask cluster {where}, and the default temporary journal lives on this "
                          f"machine only; give {allowed}", field="storage")
    location = StorageLocation.parse(storage)
    if location.url.lower().startswith("sqlite"):
        raise ConfigError(f"storage: SQLite (and an in-memory database) cannot be shared by Dask workers; give "
                          f"{allowed}", field="storage")


def task_count(worker_processes: int, client: Any) -> int:
    """How many kit workers to submit: ``worker_processes`` above 1, else one per Dask worker thread."""
    if worker_processes > 1:
        return worker_processes
    threads = sum(client.nthreads().values())
    if threads == 0:
        raise ConfigError("worker_processes: the Dask cluster has no worker yet; wait for them "
                          "(client.wait_for_workers(n)) or set worker_processes to the number of kit workers "
                          "to submit", field="worker_processes")
    return threads


def run_cluster_task(location: str, study_name: str, worker_id: int, trust_key: str, data_path: str,
                     data: bytes | None = None) -> dict[str, Any]:
    """One kit worker, in a Dask worker's thread: :func:`run_worker` on the study; the data from ``data_path``
    when this machine has it, else from the scattered ``data`` bytes (written to a temporary file)."""
    from ._worker import run_worker  # the loop `merlin-kit worker` runs (imported here: spawn-safe, light parent)

    try:
        from distributed import get_worker
        address: str | None = get_worker().address
    except (ImportError, ValueError):
        address = None
    tmp = None
    path = None
    if data is not None and not os.path.exists(data_path):
        tmp = tempfile.mkdtemp(prefix="merlin-dask-data-")
        path = os.path.join(tmp, os.path.basename(data_path) or "data.csv")
        Path(path).write_bytes(data)
    try:
        stats = run_worker(location, study_name, worker_id, None, path, trust_key=trust_key, address=address)
    except SystemExit as exc:  # run_worker's exit codes: its traceback is in the study's worker status
        raise RuntimeError(f"kit worker {worker_id} on {address} ended with code {exc.code}; see the run's "
                           "worker errors (the study's worker status) or the Dask worker's log") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"worker": worker_id, "address": address, "trials": 0 if stats is None else stats.trials,
            "stop_reason": "" if stats is None else stats.stop_reason}


@dataclass
class ClusterWorker:
    """The engine's handle on one kit worker task (the same interface as :class:`~._liveness.LocalWorker`)."""

    worker_id: int
    future: Any
    pool: "ClusterPool"
    process: None = None
    thread: None = None
    error: str | None = None
    pid: int | None = None  # its process is on a Dask worker; the monitor shows the address instead
    shareable: bool = False  # a walk-forward submits new tasks per window (cheap: the Dask workers are warm)

    @property
    def address(self) -> str | None:
        return self.pool.address_of(self)

    def alive(self) -> bool:
        return not self.future.done()

    @property
    def exitcode(self) -> int | None:
        status = self.future.status
        if status in ("pending", "lost"):
            return None
        if status == "error":
            if self.error is None:
                exc = self.future.exception()
                self.error = f"{type(exc).__name__}: {exc}"
            return 1
        return 0  # finished, or cancelled after a Stop

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not self.future.done() and time.monotonic() < end:
            time.sleep(0.05)

    def terminate(self) -> None:
        """Cancel the task; a thread already running it ends at its next trial (it reads the study's stop flag)."""
        if not self.future.done():  # a finished task keeps its result (where it ran)
            self.future.cancel()

    def kill(self, grace: float) -> None:
        """Dask cannot kill a running thread: the stop flag in the study ends it."""


@dataclass
class ClusterPool:
    """A run's client and tasks: submits the kit workers, knows where they run, releases everything at the end."""

    client: Any
    owned: bool
    workers: list[ClusterWorker] = field(default_factory=list)
    _addresses: dict[str, str] = field(default_factory=dict)
    _finished: set[str] = field(default_factory=set)
    _asked: float = 0.0
    _data: Any = None

    @classmethod
    def open(cls, cluster: Any, storage: Any, keep_workers: bool = False) -> "ClusterPool":
        if keep_workers:  # a chain hands processes from run to run; a cluster run submits its own tasks
            raise ConfigError("cluster: keep_workers chains local worker processes; with a cluster every run "
                              "submits its own tasks (walk_forward(cluster=) does so per window)", field="cluster")
        client, owned = open_client(cluster)
        try:
            check_cluster_storage(storage, client)
        except BaseException:
            if owned:
                client.close()
            raise
        return cls(client, owned)

    def submit(self, worker_processes: int, location: str, study_name: str, run_id: str, trust_key: str,
               data_path: str) -> list[ClusterWorker]:
        """Submit the kit worker tasks (:func:`task_count` of them; distinct keys, ``pure=False``, no retries)."""
        n = task_count(worker_processes, self.client)
        data = self._data_for_workers(data_path)
        for i in range(n):
            future = self.client.submit(run_cluster_task, location, study_name, i, trust_key, data_path, data,
                                        key=f"merlin-worker-{run_id}-{i}", pure=False, retries=0)
            self.workers.append(ClusterWorker(i, future, self))
        log.info("submitted %d kit workers to the Dask cluster %s", n, self.client.scheduler.address)
        return self.workers

    def _data_for_workers(self, data_path: str) -> Any:
        """None when every Dask worker reads ``data_path`` itself, else a future of the file's bytes."""
        if data_path == "sample" or not os.path.isfile(data_path):
            return None
        seen = self.client.run(os.path.exists, data_path) if self.client.nthreads() else {}
        if seen and all(seen.values()):
            return None
        # on every worker: each task needs it, and a replica survives the death of one Dask worker
        self._data = self.client.scatter(Path(data_path).read_bytes(), hash=False, broadcast=True)
        return self._data

    def address_of(self, worker: ClusterWorker) -> str | None:
        """The Dask worker running ``worker``'s task (asked at most every few seconds), or where it ran."""
        key = str(worker.future.key)
        if worker.future.status == "finished" and key not in self._finished:
            try:  # the task's own answer (a short task may have ended between two questions to the scheduler)
                self._addresses[key] = worker.future.result(timeout=5)["address"] or self._addresses.get(key)
            except Exception:  # the result is not essential: keep what the scheduler said
                pass
            self._finished.add(key)
        if worker.alive() and time.monotonic() - self._asked > ADDRESS_REFRESH_SECONDS:
            self._asked = time.monotonic()
            try:
                processing = self.client.processing()
            except Exception:  # the scheduler being away must not stop the monitor
                processing = {}
            for address, keys in processing.items():
                for key in keys:
                    self._addresses[str(key)] = address
        return self._addresses.get(key)

    def close(self) -> None:
        """Release the futures (a running thread ends at its next trial) and close a client the kit made."""
        for w in self.workers:
            if not w.future.done():
                w.future.cancel()
        if self._data is not None:
            self._data.release()
            self._data = None
        if self.owned:
            self.owned = False  # closed once, however often the run cleans up
            self.client.close()
