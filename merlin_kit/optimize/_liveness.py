"""Whether the process behind a RUNNING trial is still alive, and what happens when it is not.

A worker may die anywhere (SIGKILL, power loss, lost network).  Its RUNNING
trial would then stay RUNNING forever (Optuna's journal storages have no
heartbeat), so a trials budget would never be reached.  This module is the one
place that decides a trial is orphaned and marks it FAIL:

* :class:`TrialHeartbeat` (in every worker) shows that a long trial's worker is
  alive: Optuna's heartbeat table on PostgreSQL/MySQL, a trial user attr on
  journals and Redis;
* :class:`StaleTrialReaper` (in the parent, while it watches and once more when
  the run ends) fails the RUNNING trials whose owner is provably gone.

Trial ownership is recorded by the worker in the trial's ``merlin.owner``
attr: ``host`` (:func:`host_id`) and ``pid`` let a process on the same machine
check liveness directly; other machines are judged by their heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from typing import Any, Collection

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ._attrs import BEAT_ATTR, ERROR_ATTR, OWNER_ATTR
from ._storage import StorageLocation, heartbeat_grace, heartbeat_interval

log = logging.getLogger("merlin_kit.optimize")

# We run the heartbeat ourselves around ask/tell (TrialHeartbeat), which Optuna cannot see.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def host_id() -> str:
    """Identifies this machine in trial ownership records (pid liveness is only checked locally).

    ``MERLIN_HOST_ID`` overrides the host name, for machines (containers) that share one.
    """
    return os.environ.get("MERLIN_HOST_ID") or socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
            except Exception:  # a storage hiccup must not end the worker; the next beat retries
                log.warning("heartbeat of trial %s failed", trial_id, exc_info=True)


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
