"""The worker: the only code a child process runs.

:func:`run_worker` is a module-level function that receives nothing but a
storage location, a study name and a worker id, so it starts the same way under
``spawn``, ``forkserver`` and ``fork``, from a notebook, a script, papermill or
``merlin-kit worker`` on another machine.  Everything else (data, strategy,
search space, budget) is read from the study itself.

Budgets are enforced through the storage, never through process-local counters:

* ``trials``: the parent enqueues exactly ``n_trials`` WAITING trials and a
  worker only runs trials it has *claimed* from that queue (the storage's
  atomic WAITING -> RUNNING transition), so the study ends with exactly
  ``n_trials`` finished trials however many workers race for them;
* ``time``: no trial starts after the run's deadline (an absolute time stored
  in the study);
* ``convergence``: no trial starts once ``convergence_patience`` consecutive
  finished trials of this run have not improved on the best value.

A worker may die anywhere (SIGKILL, power loss, lost network).  Its RUNNING
trial then becomes FAIL: on this machine because its pid is gone, on other
machines because its heartbeat stops (:class:`TrialHeartbeat`: Optuna's
heartbeat table on PostgreSQL/MySQL, a trial user attr on journals and Redis;
:class:`StaleTrialReaper` in the parent does the marking).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from ..backtest import Backtester
from ..data import PreparedData
from ..errors import ConfigError
from ..scoring import minmax_score
from ..strategies import IndicatorCache
from .runconfig import RunConfig, load_run_config
from .storage import heartbeat_grace, heartbeat_interval, host_id, kind_of, open_storage, redact

log = logging.getLogger("merlin_kit.worker")

# We run the heartbeat ourselves around ask/tell (TrialHeartbeat), which Optuna cannot see.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

#: user attr keys written on trials and on the study
OWNER_ATTR = "merlin.owner"
METRICS_ATTR = "metrics"
ERROR_ATTR = "error"
TRACEBACK_ATTR = "traceback"
PRUNE_REASON_ATTR = "prune_reason"
STOP_ATTR = "merlin.stop"
#: journal storages' heartbeat of a long trial (RDB storages use Optuna's heartbeat table)
BEAT_ATTR = "merlin.beat"
WORKER_STATUS_PREFIX = "merlin.worker."
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: how long a trials-mode worker waits for the queue to be filled before giving up
QUEUE_WAIT_SECONDS = 10.0


def make_sampler(cfg: RunConfig, worker_id: int) -> optuna.samplers.BaseSampler:
    """The run's sampler; each worker gets ``seed + worker_id`` so workers never duplicate each other."""
    o = cfg.optuna
    seed = None if o.seed is None else o.seed + worker_id
    if o.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=o.n_startup_trials
    )


def make_pruner(cfg: RunConfig) -> optuna.pruners.BasePruner:
    o = cfg.optuna
    if o.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
    if o.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
    if o.pruner == "patient":
        inner = optuna.pruners.MedianPruner(n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
        return optuna.pruners.PatientPruner(inner, patience=o.pruner_patience)
    return optuna.pruners.NopPruner()


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


def converged_attr(run_id: str) -> str:
    """Study user attr set by the first worker that sees the run converge (every worker then stops)."""
    return f"merlin.converged.{run_id}"


def is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None:
        return True
    return value > best if direction == "maximize" else value < best


def trials_since_improvement(trials: list[FrozenTrial], first_run_number: int, direction: str) -> int:
    """Finished trials of this run (numbers >= first_run_number) since the best value last improved."""
    best: float | None = None
    since = 0
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in FINISHED_STATES:
            continue
        improved = t.state == TrialState.COMPLETE and t.value is not None and is_better(t.value, best, direction)
        if improved:
            best = t.value
        if t.number >= first_run_number:
            since = 0 if improved else since + 1
    return since


@dataclass
class WorkerStats:
    trials: int = 0
    failed: int = 0
    last_error: str | None = None
    stop_reason: str = ""


class TrialRunner:
    """Evaluates one claimed trial: suggest, backtest, score, store metrics, tell."""

    def __init__(self, study: optuna.Study, cfg: RunConfig, worker_id: int, data_path: str | None = None,
                 prepared: PreparedData | None = None) -> None:
        self.study = study
        self.cfg = cfg
        self.worker_id = worker_id
        data = prepared if prepared is not None else cfg.load_prepared(data_path)
        # one thread per worker: an optimisation's parallelism is its worker processes
        self.backtester = Backtester(cfg.load_strategy(), data, cache=IndicatorCache(threads=1))
        self.owner = {"worker": worker_id, "pid": os.getpid(), "host": host_id(), "run": cfg.run_id}
        self.stats = WorkerStats()

    def suggest(self, trial: Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for dim in self.cfg.space:
            if dim.kind == "categorical":
                params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices or ()))
            elif dim.kind == "int":
                params[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high), step=int(dim.step or 1))
            else:
                params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step)
        return params

    def evaluate(self, trial: Trial) -> None:
        trial.set_user_attr(OWNER_ATTR, self.owner)
        self.stats.trials += 1
        try:
            params = {**self.cfg.fixed_params, **self.suggest(trial)}
            metrics, _, _ = self.backtester.run(params)
            metrics = {**metrics, "score": minmax_score(metrics, self.cfg.score)}
        except Exception as exc:  # a strategy error must fail this trial only, never the worker
            self._fail(trial, exc)
            return
        trial.set_user_attr(METRICS_ATTR, metrics)
        value = metrics[self.cfg.metric]
        if value is None:
            self._prune(trial, f"target metric {self.cfg.metric!r} is undefined for this result (e.g. too few trades)")
            return
        value = float(value)
        if not math.isfinite(value):
            self.stats.failed += 1
            trial.set_user_attr(ERROR_ATTR, f"objective is {value}")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        min_profit = self.cfg.min_profit
        if min_profit is not None and metrics["net_profit_pct"] < min_profit:
            trial.report(value, 0)
            self._prune(trial, f"net profit {metrics['net_profit_pct']:.4g}% is below the minimum {min_profit}%")
            return
        if self.cfg.optuna.pruner != "none":
            trial.report(value, 0)
            if trial.should_prune():
                self._prune(trial, f"pruned by the {self.cfg.optuna.pruner} pruner")
                return
        self.study.tell(trial, value)

    def _prune(self, trial: Trial, reason: str) -> None:
        trial.set_user_attr(PRUNE_REASON_ATTR, reason)
        self.study.tell(trial, state=TrialState.PRUNED)

    def _fail(self, trial: Trial, exc: BaseException) -> None:
        tb = traceback.format_exc()
        log.error("worker %s: trial %s failed:\n%s", self.worker_id, trial.number, tb)
        self.stats.failed += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr(ERROR_ATTR, self.stats.last_error)
        trial.set_user_attr(TRACEBACK_ATTR, tb[-4000:])
        self.study.tell(trial, state=TrialState.FAIL)


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
    """Marks FAIL the RUNNING trials whose worker is gone (what the parent calls while it watches).

    * RDB storages: ``optuna.storages.fail_stale_trials`` (no heartbeat for the grace period);
    * an owner on this machine whose pid no longer exists;
    * journal storages, an owner on another machine: its ``merlin.beat`` has not
      changed for ``heartbeat_grace()`` seconds of *this* process's clock (so
      the machines' clocks need not agree);
    * any storage: a trial that stayed without an owner for the grace period
      (its worker died between claiming it and recording itself).
    """

    def __init__(self, study: optuna.Study, location: str) -> None:
        self.study = study
        self.storage = study._storage
        self.study_id = study._study_id
        self.rdb = kind_of(location) == "rdb" and heartbeat_enabled(self.storage)
        self.grace = float(heartbeat_grace())
        self.here = host_id()
        self._seen: dict[int, tuple[Any, float]] = {}

    def reap(self) -> list[int]:
        """FAIL the stale trials now; returns their numbers."""
        if self.rdb:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        now = time.monotonic()
        reaped: list[int] = []
        running = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,))
        for t in running:
            owner = t.user_attrs.get(OWNER_ATTR)
            why = None
            if owner is not None and owner.get("host") == self.here:
                if not pid_alive(owner["pid"]):
                    why = f"worker {owner.get('worker')} (pid {owner.get('pid')}) ended during this trial"
            elif owner is None or not self.rdb:
                marker = (owner is not None, t.user_attrs.get(BEAT_ATTR))
                seen = self._seen.get(t._trial_id)
                if seen is None or seen[0] != marker:
                    self._seen[t._trial_id] = (marker, now)
                elif now - seen[1] > self.grace:
                    why = (f"worker {owner.get('worker')} on {owner.get('host')} (pid {owner.get('pid')}) sent no "
                           f"heartbeat for {self.grace:.0f} s" if owner is not None else
                           f"its worker vanished before recording itself ({self.grace:.0f} s)")
            if why is not None and self._fail(t, why):
                reaped.append(t.number)
        alive = {t._trial_id for t in running}
        self._seen = {k: v for k, v in self._seen.items() if k in alive}
        if reaped:
            log.warning("marked FAIL the trials %s of workers that are gone", reaped)
        return reaped

    def _fail(self, t: FrozenTrial, why: str) -> bool:
        try:
            self.storage.set_trial_user_attr(t._trial_id, ERROR_ATTR, why)
            return self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False  # it finished meanwhile


def study_id_of(storage: BaseStorage, location: str, study_name: str) -> int:
    try:
        return storage.get_study_id_from_name(study_name)
    except KeyError:
        names = [s.study_name for s in storage.get_all_studies()]
        raise ConfigError(
            f"no study named {study_name!r} in {redact(location)}"
            + (f"; studies there: {', '.join(names[:20])}" if names else " (it holds no study yet)")
        ) from None


def check_join(location: str, study_name: str, data_path: str | None = None) -> RunConfig:
    """What ``merlin-kit worker`` checks before it starts any process: storage, study, strategy, data.

    Raises :class:`ConfigError`/:class:`DataError` with one readable line: a
    wrong URL or password, a study that does not exist, data missing on this
    machine, or data whose fingerprint differs from the study's.
    """
    storage = open_storage(location)
    cfg = load_run_config(storage, study_id_of(storage, location, study_name))
    path = data_path or cfg.data_path
    if path != "sample" and not os.path.exists(path):
        where = "--data" if data_path else "the study's data file"
        raise ConfigError(f"{where} {path!r} is not on this machine; pass --data PATH (a copy of {cfg.data_name!r})")
    cfg.load_strategy()
    cfg.load_prepared(data_path)
    return cfg


class WorkerLoop:
    """Claims and runs trials until the run's global budget, a stop request or the parent's death ends it."""

    def __init__(self, location: str, study_name: str, worker_id: int, *, parent_pid: int | None = None,
                 stop_event: threading.Event | None = None, data_path: str | None = None,
                 refill: Callable[[], None] | None = None, prepared: PreparedData | None = None) -> None:
        self.storage = open_storage(location)
        self.study_id = study_id_of(self.storage, location, study_name)
        self.cfg = load_run_config(self.storage, self.study_id)
        self.study = optuna.load_study(
            study_name=study_name, storage=self.storage,
            sampler=make_sampler(self.cfg, worker_id), pruner=make_pruner(self.cfg),
        )
        self.worker_id = worker_id
        self.parent_pid = parent_pid
        self.stop_event = stop_event
        # prepared: the run's own process passes the window it validated (no second load)
        self.runner = TrialRunner(self.study, self.cfg, worker_id, data_path, prepared)
        self.heartbeat = TrialHeartbeat(self.storage)
        self.refill = refill  # in the run's own process: tops up a database's queue when it runs dry
        self.stop_reason = ""

    def should_stop(self) -> bool:
        if self.stop_event is not None and self.stop_event.is_set():
            self.stop_reason = "stop requested"
            return True
        if self.parent_pid is not None and not pid_alive(self.parent_pid):
            self.stop_reason = "parent process ended"
            return True
        attrs = self.storage.get_study_user_attrs(self.study_id)
        if attrs.get(STOP_ATTR) == self.cfg.run_id:
            self.stop_reason = "stop requested"
            return True
        o = self.cfg.optuna
        if o.budget_mode == "time" and time.time() >= self.cfg.deadline:
            self.stop_reason = "time limit reached"
            return True
        if o.budget_mode == "convergence":
            declared = converged_attr(self.cfg.run_id)
            if attrs.get(declared) is not None:
                self.stop_reason = f"converged: no improvement in {attrs[declared]} trials"
                return True
            trials = self.storage.get_all_trials(self.study_id, deepcopy=False, states=FINISHED_STATES)
            since = trials_since_improvement(trials, self.cfg.first_trial_number, self.cfg.direction)
            if since >= (o.convergence_patience or 0):
                # declared once for every machine: an improving trial still in flight elsewhere does not
                # restart a run whose other workers have already stopped
                self.storage.set_study_user_attr(self.study_id, declared, since)
                self.stop_reason = f"converged: no improvement in {since} trials"
                return True
        return False

    def claim(self) -> Trial | None:
        """The next trial to run: a claimed WAITING trial (trials budget) or a new one."""
        if self.cfg.optuna.budget_mode != "trials":
            return self.study.ask()
        waited_since = time.monotonic()
        while True:
            waiting = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,))
            for frozen in waiting:
                try:
                    claimed = self.storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
                except UpdateFinishedTrialError:
                    continue
                if claimed:
                    # What Study.ask does after popping a waiting trial: drop the per-trial cache so
                    # the sampler sees the trials other workers finished meanwhile.
                    self.study._thread_local.cached_all_trials = None
                    return Trial(self.study, frozen._trial_id)
            if not waiting and self._budget_fully_queued():
                self.stop_reason = "trial budget reached"
                return None
            if not waiting and self.refill is not None:
                self.refill()
            if time.monotonic() - waited_since > QUEUE_WAIT_SECONDS:
                self.stop_reason = "no queued trial appeared"
                return None
            time.sleep(0.01 if waiting else 0.05)  # lost a race: retry at once; empty queue: poll gently

    def _budget_fully_queued(self) -> bool:
        return bool(self.storage.get_study_user_attrs(self.study_id).get(f"merlin.queued.{self.cfg.run_id}"))

    def run(self) -> WorkerStats:
        log.info("worker %s (pid %s) joined study %r", self.worker_id, os.getpid(), self.study.study_name)
        try:
            while not self.should_stop():
                trial = self.claim()
                if trial is None:
                    break
                self.heartbeat.start(trial._trial_id)
                try:
                    self.runner.evaluate(trial)
                except (UpdateFinishedTrialError, ValueError):
                    # another process marked this trial FAIL (it took it for dead): keep working
                    if not self.storage.get_trial(trial._trial_id).state.is_finished():
                        raise
                    log.warning("worker %s: trial %s was ended by another process", self.worker_id, trial.number)
                finally:
                    self.heartbeat.stop()
        finally:
            self.heartbeat.close()
        log.info("worker %s finished %s trials: %s", self.worker_id, self.runner.stats.trials, self.stop_reason)
        self._report_status("ok")
        return self.runner.stats

    def _report_status(self, status: str, error: str | None = None) -> None:
        stats = self.runner.stats
        self.storage.set_study_user_attr(
            self.study_id,
            f"{WORKER_STATUS_PREFIX}{self.cfg.run_id}.{self.worker_id}",
            {"status": status, "pid": os.getpid(), "host": host_id(), "trials": stats.trials,
             "failed": stats.failed, "last_error": error or stats.last_error, "stop_reason": self.stop_reason},
        )


def report_worker_crash(location: str, study_name: str, worker_id: int, tb: str) -> None:
    """Best effort: record a worker's fatal traceback in the study so the parent can show it."""
    try:
        storage = open_storage(location)
        study_id = storage.get_study_id_from_name(study_name)
        cfg_run = load_run_config(storage, study_id).run_id
        storage.set_study_user_attr(
            study_id, f"{WORKER_STATUS_PREFIX}{cfg_run}.{worker_id}",
            {"status": "crashed", "pid": os.getpid(), "host": host_id(), "last_error": tb.strip().splitlines()[-1],
             "traceback": tb[-8000:]},
        )
    except Exception:  # the storage itself may be what failed; the traceback is on stderr anyway
        log.exception("worker %s could not record its crash in the study", worker_id)


def run_worker(location: str, study_name: str, worker_id: int, parent_pid: int | None = None,
               data_path: str | None = None) -> WorkerStats | None:
    """Process entry point: join the study and run trials until the global budget is spent.

    Exits with code 1 (after recording the traceback in the study) if the
    worker cannot start or crashes; a failing *trial* never ends the worker.
    """
    _configure_child_logging(worker_id)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if multiprocessing.parent_process() is not None:
        # Ctrl-C in a terminal reaches the whole process group: the parent turns it into a
        # stop request (trials in flight finish), so a child must not die mid-trial on it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loop = WorkerLoop(location, study_name, worker_id, parent_pid=parent_pid, data_path=data_path)
        stats = loop.run()
        stats.stop_reason = loop.stop_reason
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        tb = traceback.format_exc()
        log.error("worker %s crashed:\n%s", worker_id, tb)
        report_worker_crash(location, study_name, worker_id, tb)
        sys.exit(1)
    if multiprocessing.parent_process() is not None:
        # Everything is in the storage already; skipping interpreter teardown (numba, LLVM,
        # pandas) saves ~0.4 s per worker at the end of every run.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return stats


def _configure_child_logging(worker_id: int) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr,
            format=f"%(asctime)s merlin-kit worker {worker_id} [%(levelname)s] %(message)s",
        )

