"""Whether the process behind a RUNNING trial is still alive, and what happens when it is not.

A worker may die anywhere (SIGKILL, power loss, lost network).  Its RUNNING
trial would then stay RUNNING forever (Optuna's journal storages have no
heartbeat), so a trials budget would never be reached.  This module is the one
place that decides a trial is orphaned and marks it FAIL:

* :class:`TrialHeartbeat` (in every worker) shows that a long trial's worker is
  alive: Optuna's heartbeat table on PostgreSQL/MySQL, a trial user attr on
  journals and Redis;
* :class:`StaleTrialReaper` (in the parent, while it watches and once more when
  the run ends) fails the RUNNING trials whose owner is provably gone;
* :class:`RunLease` keeps a second run off a study (and a run folder) that a
  live run is using, and lets a dead run's claim expire;
* :class:`LocalWorker` is the parent's handle on one of its own workers.

Trial ownership is recorded by the worker in the trial's ``merlin.owner``
attr: ``host`` (:func:`host_id`) and ``pid`` let a process on the same machine
check liveness directly; other machines are judged by their heartbeat.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from .._platform import host_id, pid_alive, write_text_atomic
from ..errors import ConfigError
from ._attrs import BEAT_ATTR, ERROR_ATTR, LEASE_ATTR, OWNER_ATTR
from ._storage import StorageLocation, heartbeat_grace, heartbeat_interval, storage_unavailable

log = logging.getLogger("merlin_kit.optimize")

# We run the heartbeat ourselves around ask/tell (TrialHeartbeat), which Optuna cannot see.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _warn_storage_trouble(what: str, exc: Exception) -> None:
    """One line for a storage that went away (the run reports it once), a traceback for anything else."""
    if storage_unavailable(exc, "the storage") is not None:
        log.warning("%s: %s: %s", what, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc) else "")
    else:
        log.warning(what, exc_info=True)


def parent_alive(parent_pid: int) -> bool:
    """Whether the process that started this worker still runs.

    A worker that is a ``multiprocessing`` child asks its parent's sentinel
    (a pipe end, right on every OS and immune to pid reuse); otherwise the pid is
    checked (:func:`pid_alive`).
    """
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid == parent_pid:
        return parent.is_alive()
    return pid_alive(parent_pid)


def end_processes(processes: Collection[Any], grace: float = 5.0) -> None:
    """Terminate and join the processes a failed start left running (``Process.terminate``: every OS)."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage keeps Optuna heartbeats (an RDBStorage opened with heartbeat_interval)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    return get_interval is not None and get_interval() is not None


class TrialHeartbeat:
    """Shows, while a trial runs, that its worker is alive, so a dead worker's trial can be failed.

    RDB storages with heartbeats enabled (PostgreSQL, MySQL): the first beat is
    recorded before the trial starts and then every ``heartbeat_interval()``
    seconds (``storage.record_heartbeat``), which
    ``optuna.storages.fail_stale_trials`` reads.  Journal storages (file,
    Redis): a trial user attr ``merlin.beat`` is bumped every interval, which
    :class:`StaleTrialReaper` watches; trials shorter than the interval write
    nothing.  One daemon thread per worker serves every trial.
    """

    def __init__(self, storage: BaseStorage) -> None:
        self.storage = storage
        self.rdb = heartbeat_enabled(storage)
        self.interval = float(heartbeat_interval())
        self._cond = threading.Condition()
        self._trial_id: int | None = None
        self._since = 0.0
        self._beats = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self, trial_id: int) -> None:
        if self.rdb:
            self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
        with self._cond:
            self._trial_id, self._since, self._beats = trial_id, time.monotonic(), 0
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="merlin-heartbeat")
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._trial_id = None

    def close(self) -> None:
        with self._cond:
            self._trial_id, self._closed = None, True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                trial_id = self._trial_id
                wait = None if trial_id is None else self._since + self.interval - time.monotonic()
                if wait is None or wait > 0:
                    self._cond.wait(wait)
                    continue
                self._since = time.monotonic()
                self._beats += 1
                beats = self._beats
            try:
                if self.rdb:
                    self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
                else:
                    self.storage.set_trial_user_attr(trial_id, BEAT_ATTR, beats)
            except UpdateFinishedTrialError:
                pass  # the trial ended meanwhile
            except Exception as exc:  # a storage hiccup must not end the worker; the next beat retries
                _warn_storage_trouble(f"heartbeat of trial {trial_id} failed", exc)


class StaleTrialReaper:
    """Marks FAIL the RUNNING trials whose worker is gone; the only code that does.

    A trial is orphaned when

    * RDB storages: ``optuna.storages.fail_stale_trials`` finds no heartbeat for the grace period;
    * its owner is on this machine and its pid no longer exists (or is one of
      ``dead_pids``, the parent's own workers known to have exited);
    * journal storages, an owner on another machine: its ``merlin.beat`` has not
      changed for ``heartbeat_grace()`` seconds of *this* process's clock (so
      the machines' clocks need not agree);
    * it stayed without an owner for the grace period (its worker died between
      claiming it and recording itself) -- or, at the end of a run on a
      journal (``final=True``), at once when none of the run's own workers is alive.
    """

    def __init__(self, study: optuna.Study, location: StorageLocation) -> None:
        self.study = study
        self.storage = study._storage
        self.study_id = study._study_id
        self.location = location
        self.rdb = location.kind == "rdb" and heartbeat_enabled(self.storage)
        self.grace = float(heartbeat_grace())
        self.here = host_id()
        self._seen: dict[int, tuple[Any, float]] = {}

    def reap(self, dead_pids: Collection[int] = (), *, final: bool = False, workers_alive: bool = True) -> list[int]:
        """FAIL the stale trials now; returns their numbers.

        ``final``: the run is ending; an ownerless trial on a journal is failed
        without waiting for the grace period once ``workers_alive`` is False.
        """
        if self.location.kind == "rdb":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        now = time.monotonic()
        reaped: list[int] = []
        running = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,))
        for t in running:
            why = self._why_orphaned(t, now, dead_pids, final and not workers_alive and self.location.kind == "journal")
            if why is not None and self._fail(t, why):
                reaped.append(t.number)
        alive = {t._trial_id for t in running}
        self._seen = {k: v for k, v in self._seen.items() if k in alive}
        if reaped:
            log.warning("marked FAIL the trials %s of workers that are gone", reaped)
        return reaped

    def _why_orphaned(self, t: FrozenTrial, now: float, dead_pids: Collection[int], ownerless_dead: bool) -> str | None:
        owner = t.user_attrs.get(OWNER_ATTR)
        if owner is not None and owner.get("host") == self.here:
            if owner.get("pid") in dead_pids or not pid_alive(owner["pid"]):
                return f"worker {owner.get('worker')} (pid {owner.get('pid')}) ended during this trial"
            return None
        if owner is None and ownerless_dead:
            return "its worker ended before recording itself"
        if owner is not None and self.rdb:
            return None  # fail_stale_trials judged it
        marker = (owner is not None, t.user_attrs.get(BEAT_ATTR))
        seen = self._seen.get(t._trial_id)
        if seen is None or seen[0] != marker:
            self._seen[t._trial_id] = (marker, now)
            return None
        if now - seen[1] <= self.grace:
            return None
        if owner is not None:
            return (f"worker {owner.get('worker')} on {owner.get('host')} (pid {owner.get('pid')}) sent no "
                    f"heartbeat for {self.grace:.0f} s")
        return f"its worker vanished before recording itself ({self.grace:.0f} s)"

    def _fail(self, t: FrozenTrial, why: str) -> bool:
        try:
            self.storage.set_trial_user_attr(t._trial_id, ERROR_ATTR, why)
            return self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False  # it finished meanwhile


#: a lease not renewed for this long (by the holder's wall clock) belongs to a run that is gone
LEASE_GRACE_SECONDS = 30.0
LEASE_RENEW_SECONDS = 5.0
#: after writing its lease a run reads it back this much later: of two runs that start together (both
#: read "free" before either wrote, i.e. within one storage round trip), the later writer wins and the
#: other refuses.  A few round trips of a remote database; it adds to every run's start-up.
LEASE_SETTLE_SECONDS = 0.05
FOLDER_LOCK_NAME = ".merlin-run.json"
#: the runs of this process that hold a lease now (a lease record naming this pid but no run here is void:
#: its run ended without its release reaching the storage)
_ACTIVE_RUNS: set[str] = set()


def _describe(lease: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(lease.get("started_at") or 0)))
    return f"run {lease.get('run')} (host {lease.get('host')}, pid {lease.get('pid')}, started {started})"


def lease_is_live(lease: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether the run behind ``lease`` still holds it: its pid lives (this machine) or it renewed recently."""
    if not lease or lease.get("released"):
        return False
    if lease.get("host") == host_id():
        if lease.get("pid") == os.getpid():
            return lease.get("run") in _ACTIVE_RUNS
        return pid_alive(int(lease.get("pid") or 0))
    now = time.time() if now is None else now
    return now - float(lease.get("renewed_at") or 0) < LEASE_GRACE_SECONDS


class RunLease:
    """One run per study and per run folder.

    The lease is a study user attr (so it works for a journal, a database or
    Redis, from any machine) plus a small file in the run folder; a thread
    renews both every few seconds.  A second run on the same study or folder
    is refused with a message naming the live run; a run that died (pid gone
    on this machine, or no renewal for :data:`LEASE_GRACE_SECONDS`) loses its
    lease to the next one.  ``merlin-kit worker`` processes join a run on
    purpose and take no lease.
    """

    def __init__(self, storage: BaseStorage, study_id: int, study_name: str, run_id: str,
                 folder: Path | None = None) -> None:
        self.storage = storage
        self.study_id = study_id
        self.study_name = study_name
        self.folder_file = None if folder is None else Path(folder) / FOLDER_LOCK_NAME
        now = time.time()
        self.record = {"run": run_id, "host": host_id(), "pid": os.getpid(), "started_at": now, "renewed_at": now,
                       "study": study_name, "released": False}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held_study = self._held_folder = False

    def acquire(self) -> None:
        """Take the study and the folder, or raise :class:`ConfigError` naming the run that holds them."""
        self._take_folder()
        try:
            self._take_study()
        except BaseException:
            self.release()
            raise
        _ACTIVE_RUNS.add(self.record["run"])
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="merlin-lease")
        self._thread.start()

    def _take_study(self) -> None:
        current = self.storage.get_study_user_attrs(self.study_id).get(LEASE_ATTR)
        if current and current.get("run") != self.record["run"] and lease_is_live(current):
            raise self._busy(f"study {self.study_name!r}", current)
        self.storage.set_study_user_attr(self.study_id, LEASE_ATTR, self.record)
        self._held_study = True
        time.sleep(LEASE_SETTLE_SECONDS)
        winner = self.storage.get_study_user_attrs(self.study_id).get(LEASE_ATTR) or {}
        if winner.get("run") != self.record["run"]:
            self._held_study = False
            raise self._busy(f"study {self.study_name!r}", winner)

    def _take_folder(self) -> None:
        if self.folder_file is None:
            return
        try:
            current = json.loads(self.folder_file.read_text())
        except FileNotFoundError:
            current = None
        except (OSError, ValueError):
            current = None  # a torn or unreadable lock file belongs to nobody
        if current and current.get("run") != self.record["run"] and lease_is_live(current):
            raise self._busy(f"run folder {str(self.folder_file.parent)!r}", current)
        self._write_folder()
        self._held_folder = True

    def _write_folder(self) -> None:
        assert self.folder_file is not None
        write_text_atomic(self.folder_file, json.dumps(self.record))

    def _busy(self, what: str, holder: dict[str, Any]) -> ConfigError:
        return ConfigError(
            f"{what} is in use by {_describe(holder)}; wait for it to finish or stop it, use another study name / "
            f"run folder, or join it from another machine with `merlin-kit worker`", field="study_name")

    def _renew_loop(self) -> None:
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            self.record["renewed_at"] = time.time()
            try:
                if self._held_study:
                    self.storage.set_study_user_attr(self.study_id, LEASE_ATTR, self.record)
                if self._held_folder:
                    self._write_folder()
            except Exception as exc:  # storage trouble: the run itself will notice; the next renewal retries
                _warn_storage_trouble("could not renew the run's lease", exc)

    def release(self) -> None:
        """Give the study and the folder back (idempotent; never raises: the run is ending anyway)."""
        self._stop.set()
        _ACTIVE_RUNS.discard(self.record["run"])
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        try:
            if self._held_study:
                current = self.storage.get_study_user_attrs(self.study_id).get(LEASE_ATTR) or {}
                if current.get("run") == self.record["run"]:
                    self.storage.set_study_user_attr(self.study_id, LEASE_ATTR, {**self.record, "released": True})
        except Exception as exc:
            _warn_storage_trouble("could not release the study's lease (it expires by itself)", exc)
        self._held_study = False
        if self._held_folder and self.folder_file is not None:
            try:
                current = json.loads(self.folder_file.read_text())
                if current.get("run") == self.record["run"]:
                    self.folder_file.unlink()
            except (OSError, ValueError):
                pass  # already gone or replaced
        self._held_folder = False


def others_run_trials(storage: BaseStorage, study_id: int, run_id: str, our_pids: Collection[int | None]) -> bool:
    """Whether processes other than ``our_pids`` on this machine (``merlin-kit worker`` elsewhere, a Dask
    task) run RUNNING trials of run ``run_id``."""
    here = host_id()
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_ATTR)
        ours_here = owner is not None and owner.get("host") == here and owner.get("pid") in our_pids
        if owner and owner.get("run") == run_id and not ours_here:
            return True
    return False


@dataclass
class LocalWorker:
    """One of a run's own workers, as the parent sees it: a child process, or the in-process worker (a thread or
    the caller); alive and exit code whichever it is."""

    worker_id: int
    process: multiprocessing.process.BaseProcess | None = None
    thread: threading.Thread | None = None
    error: str | None = None
    #: where it runs when not a plain process of this machine (a Dask worker's address, see ._dask)
    address: str | None = None

    @property
    def shareable(self) -> bool:
        """Whether the next run of a chain may take it over (a process; the in-process worker ends with its run)."""
        return self.process is not None

    def join(self, timeout: float) -> None:
        if self.process is not None:
            self.process.join(timeout)
        elif self.thread is not None:
            self.thread.join(timeout)

    def terminate(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()

    def kill(self, grace: float) -> None:
        """After :meth:`terminate`: wait ``grace`` seconds, then SIGKILL a process that is still there."""
        if self.process is not None:
            self.process.join(grace)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(grace)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else os.getpid()

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.is_alive()
        return self.thread is not None and self.thread.is_alive()

    @property
    def exitcode(self) -> int | None:
        if self.process is not None:
            return self.process.exitcode
        if self.thread is not None and not self.thread.is_alive():
            return 1 if self.error else 0
        return None
