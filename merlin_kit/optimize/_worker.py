"""The worker: the only code a child process runs.

:func:`run_worker` is a module-level function that receives nothing but a
storage location, a study name and a worker id, so it starts the same way under
``spawn``, ``forkserver`` and ``fork``, from a notebook, a script, papermill or
``merlin-kit worker`` on another machine.  Everything else (data, strategy,
search space, budget) is read from the study itself; the strategy only after
the worker's trust key and allowed modules accept it (:mod:`._trust`).

Budgets are enforced through the storage (:mod:`._budget`): a worker runs
only trials it claimed from the parent's queue, starts none after the deadline,
and stops once the run has converged.  While a trial runs, a heartbeat
(:mod:`._liveness`) shows the worker is alive, so a dead worker's trial can be
failed by the parent.  Ctrl-C or SIGTERM (:class:`SignalStop`) lets the trial in flight
finish, or gives it back to the queue on a second signal (:meth:`WorkerLoop._give_back`).
Once a study's budget is spent, a worker goes on to the next study of a chain
(:mod:`._chain`: a walk-forward's windows) instead of exiting.
A sweep (points known in advance: :mod:`._sweep`) runs :class:`~._sweep_worker.SweepWorker` instead of ask/tell.
The parent imports only the two entry points from here:
:func:`run_worker` (child processes) and :class:`WorkerLoop` (its in-process worker).
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import Trial, TrialState

from ..backtest import Backtester
from ..data import PreparedData
from ..errors import ConfigError
from ..scoring import minmax_score
from ..strategies import IndicatorCache
from ._attrs import (
    ERROR_ATTR, FINISHED_STATES, METRICS_ATTR, OWNER_ATTR, PRUNE_REASON_ATTR, RETURNED_ATTR, STOP_ATTR,
    TRACEBACK_ATTR, converged_attr, worker_status_attr,
)
from ._batched_storage import params_batch
from ._budget import budget_fully_queued, claim_queued_trial, trials_without_progress, waiting_trials
from ._constraints import violations
from ._chain import wait_for_next
from ._logs import plain_optuna_logs
from ._outcome import failure_attrs, judge
from ._liveness import TrialHeartbeat, host_id, parent_alive
from ._runconfig import RunConfig, load_run_config
from ._samplers import SAMPLER_NAMES, check_sampler, make_sampler
from ._start import adopt_kit_settings
from ._storage import StorageLocation, storage_unavailable
from ._trust import TrustPolicy
from .config import PRUNERS, is_sweep

log = logging.getLogger("merlin_kit.worker")

#: exit code of a worker whose storage stopped answering
EXIT_STORAGE_GONE = 3
#: how long a trials-mode worker waits for the queue to be filled before giving up
QUEUE_WAIT_SECONDS = 10.0
#: after a first Ctrl-C / SIGTERM, how long the trial in flight may run on before it is given back
SIGNAL_GRACE_SECONDS = 30.0


def signal_grace() -> float:
    """Seconds a signalled worker lets its trial finish (``MERLIN_SIGNAL_GRACE``, default 30)."""
    raw = os.environ.get("MERLIN_SIGNAL_GRACE")
    try:
        value = float(raw) if raw else SIGNAL_GRACE_SECONDS
    except ValueError:
        raise ConfigError(f"MERLIN_SIGNAL_GRACE must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"MERLIN_SIGNAL_GRACE must be more than 0 seconds, got {raw!r}")
    return value


def _signal_main_thread(signum: int) -> None:
    """Deliver ``signum`` to the main thread: a real signal (POSIX) also wakes a blocking call there."""
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signum)
    else:
        _thread.interrupt_main(signum)


class TrialInterrupted(BaseException):
    """Raised in a worker's main thread to abandon the trial it computes.

    A BaseException, so that :meth:`TrialRunner.evaluate` (which turns a strategy's exceptions into
    a FAIL) lets it through to :meth:`WorkerLoop.run`, which gives the trial back.
    """


class SignalStop:
    """Ctrl-C, SIGTERM (``timeout``, ``docker stop``, systemd) and SIGHUP in a worker process.

    First signal: the worker claims no new trial and lets the trial in flight finish.  A second
    signal, or ``grace`` seconds without the trial finishing, abandons it: :class:`TrialInterrupted`
    is raised in the main thread, but only while it computes the backtest (never in the middle of a
    storage write; a numba-compiled backtest notices it when the compiled call returns), and
    :meth:`WorkerLoop.run` gives the trial back.  Installed by :func:`run_worker` in its main thread.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.signum: int | None = None
        self.abandon = False
        self.computing = False
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return "" if self.signum is None else signal.Signals(self.signum).name

    def install(self, signums: tuple[int, ...]) -> None:
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("%s: this worker starts no new trial; the trial in flight may finish within %g s "
                        "(signal again to give it back to the queue now)", self.name, self.grace)
            # the grace period ends like a second signal, delivered to the main thread
            self._timer = threading.Timer(self.grace, _signal_main_thread, args=(signum,))
            self._timer.daemon = True
            self._timer.start()
            return
        self.abandon = True
        if self.computing:
            raise TrialInterrupted

    @contextlib.contextmanager
    def computing_section(self) -> Iterator[None]:
        """Where :class:`TrialInterrupted` may be raised: a trial's backtest."""
        if self.abandon:
            raise TrialInterrupted
        self.computing = True
        try:
            yield
        finally:
            self.computing = False


def make_pruner(cfg: RunConfig) -> optuna.pruners.BasePruner:
    o = cfg.optuna
    if o.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
    if o.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
    if o.pruner == "none":
        return optuna.pruners.NopPruner()
    # a study made by a version that offered other pruners ("patient"): say so rather than not prune
    raise ConfigError(f"the study's pruner {o.pruner!r} is not supported; allowed: {', '.join(PRUNERS)}")


@dataclass
class WorkerStats:
    trials: int = 0
    failed: int = 0
    last_error: str | None = None
    stop_reason: str = ""
    #: the signal that stopped the worker (``merlin-kit worker`` exits with 128 + it), None otherwise
    signal: int | None = None


class TrialRunner:
    """Evaluates one claimed trial: suggest, backtest, score, store metrics, tell."""

    def __init__(self, study: optuna.Study, cfg: RunConfig, worker_id: int, data_path: str | None = None,
                 prepared: PreparedData | None = None, trust: TrustPolicy | None = None) -> None:
        self.study = study
        self.cfg = cfg
        self.worker_id = worker_id
        data = prepared if prepared is not None else cfg.load_prepared(data_path)
        # one thread per worker: an optimisation's parallelism is its worker processes
        self.backtester = Backtester(cfg.load_strategy(trust), data, cache=IndicatorCache(threads=1))
        self.owner = {"worker": worker_id, "pid": os.getpid(), "host": host_id(), "run": cfg.run_id}
        self.stats = WorkerStats()
        self.signals: SignalStop | None = None  # set by WorkerLoop in a process that handles signals
        self.objectives, self.constraints = cfg.objectives, cfg.constraints

    def suggest(self, trial: Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        with params_batch(trial.storage):  # one journal write for all of them, before the backtest
            for dim in self.cfg.space:
                if dim.kind == "categorical":
                    params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices or ()))
                elif dim.kind == "int":
                    params[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high),
                                                         step=int(dim.step or 1))
                else:
                    params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step)
        return params

    def measure(self, params: dict[str, Any]) -> dict[str, Any]:
        """The backtest's metrics (and score) of one point of the space; the fixed parameters are added."""
        with self.signals.computing_section() if self.signals is not None else contextlib.nullcontext():
            metrics, _, _ = self.backtester.run({**self.cfg.fixed_params, **params})
        return {**metrics, "score": minmax_score(metrics, self.cfg.score)}

    def evaluate(self, trial: Trial) -> None:
        trial.set_user_attr(OWNER_ATTR, self.owner)
        self.stats.trials += 1
        try:
            metrics = self.measure(self.suggest(trial))
        except Exception as exc:  # a strategy error must fail this trial only, never the worker
            if storage_unavailable(exc, "") is not None:
                raise  # not the trial's fault: the worker stops (one line, see run_worker)
            self._fail(trial, exc)
            return
        trial.set_user_attr(METRICS_ATTR, metrics)
        for constraint, violation in zip(self.constraints, violations(self.constraints, metrics)):
            trial.set_constraint(constraint.text, violation)  # samplers, best_trials, the dashboard read these
        outcome = judge(metrics, self.objectives, self.cfg.min_profit)
        for key, attr in outcome.attrs.items():
            trial.set_user_attr(key, attr)
        if outcome.reported:
            trial.report(outcome.value, 0)
        if outcome.state == TrialState.COMPLETE and self.cfg.optuna.pruner != "none":
            trial.report(outcome.value, 0)
            if trial.should_prune():
                self._prune(trial, f"pruned by the {self.cfg.optuna.pruner} pruner")
                return
        self.stats.failed += outcome.state == TrialState.FAIL
        self.study.tell(trial, outcome.value if outcome.state == TrialState.COMPLETE else None, state=outcome.state)

    def _prune(self, trial: Trial, reason: str) -> None:
        trial.set_user_attr(PRUNE_REASON_ATTR, reason)
        self.study.tell(trial, state=TrialState.PRUNED)

    def _fail(self, trial: Trial, exc: BaseException) -> None:
        attrs = failure_attrs(exc)
        log.error("worker %s: trial %s failed:\n%s", self.worker_id, trial.number, attrs[TRACEBACK_ATTR])
        self.stats.failed += 1
        self.stats.last_error = attrs[ERROR_ATTR]
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self.study.tell(trial, state=TrialState.FAIL)


def study_id_of(storage: BaseStorage, location: StorageLocation, study_name: str) -> int:
    try:
        return storage.get_study_id_from_name(study_name)
    except KeyError:
        names = [s.study_name for s in storage.get_all_studies()]
        raise ConfigError(
            f"no study named {study_name!r} in {location.display}"
            + (f"; studies there: {', '.join(names[:20])}" if names else " (it holds no study yet)")
        ) from None


def check_join(location: str, study_name: str, data_path: str | None = None, *, trust_key: str | None = None,
               allow_modules: Sequence[str] = ()) -> RunConfig:
    """What ``merlin-kit worker`` checks before it starts any process: storage, study, strategy, data.

    Raises :class:`ConfigError`/:class:`DataError` with one readable line: a
    wrong URL or password, a study that does not exist, data missing on this
    machine, data whose fingerprint differs from the study's, a sampler whose package is
    not installed here, or a strategy this worker does not trust (``trust_key``/``allow_modules``, see :class:`TrustPolicy`).
    """
    trust = TrustPolicy.resolve(trust_key, allow_modules)
    where = StorageLocation.parse(location)
    if where.url.startswith("sqlite"):  # the run's own process already writes it: a second one is not safe
        raise ConfigError("storage: a SQLite study is for one worker process (the run's own) and cannot be joined; "
                          "run the study on a journal file, PostgreSQL/MySQL or Redis to add workers",
                          field="storage")
    storage = where.open(create=False)  # a mistyped journal path must not become an empty file
    cfg = load_run_config(storage, study_id_of(storage, where, study_name))
    path = data_path or cfg.data_path
    if path != "sample" and not os.path.exists(path):
        what = "--data" if data_path else "the study's data file"
        raise ConfigError(f"{what} {path!r} is not on this machine; pass --data PATH (a copy of {cfg.data_name!r})")
    cfg.load_strategy(trust)
    cfg.load_prepared(data_path)
    if cfg.optuna.sampler in SAMPLER_NAMES:  # its package installed here too (cmaes, scipy, torch)
        check_sampler(cfg.optuna.sampler, cfg.optuna.sampler_options, n_objectives=1, constrained=False)
    return cfg


class WorkerLoop:
    """Claims and runs trials until the run's global budget, a stop request or the parent's death ends it."""

    def __init__(self, location: str | StorageLocation, study_name: str, worker_id: int, *,
                 parent_pid: int | None = None, stop_event: threading.Event | None = None,
                 data_path: str | None = None, refill: Callable[[], None] | None = None,
                 prepared: PreparedData | None = None, trust_key: str | None = None,
                 allow_modules: Sequence[str] = (), signals: SignalStop | None = None,
                 storage: BaseStorage | None = None, address: str | None = None) -> None:
        trust = TrustPolicy.resolve(trust_key, allow_modules)  # the run's key, or MERLIN_TRUST_KEY
        where = StorageLocation.parse(location)
        # storage: the one opened for the previous study of a chain (a journal is not read again)
        self.storage = storage if storage is not None else where.open(create=False)
        self.study_id = study_id_of(self.storage, where, study_name)
        self.cfg = load_run_config(self.storage, self.study_id)
        self.study = optuna.load_study(
            study_name=study_name, storage=self.storage,
            sampler=make_sampler(self.cfg, worker_id), pruner=make_pruner(self.cfg),
        )
        self.worker_id = worker_id
        self.parent_pid = parent_pid
        self.stop_event = stop_event
        # prepared: the run's own process passes the window it validated (no second load)
        self.runner = TrialRunner(self.study, self.cfg, worker_id, data_path, prepared, trust)
        self.signals = self.runner.signals = signals
        self.address = address  # a Dask worker's address: shown by the live monitor (owner and status records)
        if address is not None:
            self.runner.owner["address"] = address
        self.heartbeat = TrialHeartbeat(self.storage)
        self.refill = refill  # in the run's own process: tops up a database's queue when it runs dry
        self.stop_reason = ""
        #: the loop ended because the run's budget is spent (then the workers may go on to a next study)
        self.budget_spent = False

    def _signalled(self) -> bool:
        if self.signals is None or self.signals.signum is None:
            return False
        self.stop_reason = self.stop_reason or f"{self.signals.name} received"
        return True

    def _interrupted(self, attrs: dict[str, Any]) -> bool:
        """A reason to stop other than the budget: a signal, Stop (here or in the study), the parent gone."""
        if self._signalled():
            return True
        if self.stop_event is not None and self.stop_event.is_set():
            self.stop_reason = "stop requested"
            return True
        if self.parent_pid is not None and not parent_alive(self.parent_pid):
            self.stop_reason = "parent process ended"
            return True
        if attrs.get(STOP_ATTR) == self.cfg.run_id:
            self.stop_reason = "stop requested"
            return True
        return False

    def should_stop(self) -> bool:
        attrs = self.storage.get_study_user_attrs(self.study_id)
        if self._interrupted(attrs):
            return True
        o = self.cfg.optuna
        if o.budget_mode == "time" and time.time() >= self.cfg.deadline:
            self.stop_reason = "time limit reached"
            self.budget_spent = True
            return True
        if o.budget_mode == "convergence":
            declared = converged_attr(self.cfg.run_id)
            if attrs.get(declared) is not None:
                self.stop_reason = f"converged: no improvement in {attrs[declared]} trials"
                self.budget_spent = True
                return True
            trials = self.storage.get_all_trials(self.study_id, deepcopy=False, states=FINISHED_STATES)
            since = trials_without_progress(trials, self.cfg.run_id, self.cfg.first_trial_number,
                                            self.cfg.objectives, self.cfg.constraints, o.hv_reference)
            if since >= (o.convergence_patience or 0):
                # declared once for every machine: an improving trial still in flight elsewhere does not
                # restart a run whose other workers have already stopped
                self.storage.set_study_user_attr(self.study_id, declared, since)
                self.stop_reason = f"converged: no improvement in {since} trials"
                self.budget_spent = True
                return True
        return False

    def next_study(self) -> str | None:
        """After the run's budget is spent: the study its workers go on to (:mod:`._chain`), or None."""
        if not self.budget_spent:
            return None
        return wait_for_next(self.storage, self.study_id, self.cfg.run_id, self._interrupted)

    def claim(self) -> Trial | None:
        """The next trial to run: a claimed WAITING trial (trials budget) or a new one."""
        if self.cfg.optuna.budget_mode != "trials":
            return self.study.ask()
        waited_since = time.monotonic()
        while not self._signalled():
            waiting = waiting_trials(self.storage, self.study_id)
            trial = claim_queued_trial(self.study, waiting)
            if trial is not None:
                return trial
            if not waiting and budget_fully_queued(self.storage, self.study_id, self.cfg.run_id):
                self.stop_reason = "trial budget reached"
                self.budget_spent = True
                return None
            if not waiting and self.refill is not None:
                self.refill()
            if time.monotonic() - waited_since > QUEUE_WAIT_SECONDS:
                self.stop_reason = "no queued trial appeared"
                return None
            time.sleep(0.01 if waiting else 0.05)  # lost a race: retry at once; empty queue: poll gently
        return None

    def run(self) -> WorkerStats:
        log.info("worker %s (pid %s) joined study %r", self.worker_id, os.getpid(), self.study.study_name)
        try:
            if is_sweep(self.cfg.optuna):
                from ._sweep_worker import SweepWorker  # points known in advance: no ask/tell (see ._sweep)
                SweepWorker(self).run()
            else:
                self._ask_and_tell()
        finally:
            self.heartbeat.close()
        log.info("worker %s finished %s trials: %s", self.worker_id, self.runner.stats.trials, self.stop_reason)
        self._report_status("ok")
        return self.runner.stats

    def _ask_and_tell(self) -> None:
        while not self.should_stop():
            trial = self.claim()
            if trial is None:
                break
            self.heartbeat.start(trial._trial_id)
            try:
                self.runner.evaluate(trial)
            except TrialInterrupted:
                self._give_back(trial)
                break
            except (UpdateFinishedTrialError, ValueError):
                # another process marked this trial FAIL (it took it for dead): keep working
                if not self.storage.get_trial(trial._trial_id).state.is_finished():
                    raise
                log.warning("worker %s: trial %s was ended by another process", self.worker_id, trial.number)
            finally:
                self.heartbeat.stop()

    def _give_back(self, trial: Trial) -> None:
        """Return an abandoned trial (second signal, or the grace period over) to the queue, honestly.

        Optuna's storages cannot move a trial from RUNNING back to WAITING (only WAITING -> RUNNING ->
        finished), and rewriting its state behind Optuna's back would leave its sampled parameters
        and start time in a WAITING trial.  So the trial is marked FAIL with ``RETURNED_ATTR`` (the
        signal) and ``ERROR_ATTR`` ("returned to the queue ..."), and under a trials budget one
        replacement WAITING trial is queued that any worker may claim.  A returned trial was never
        evaluated: :func:`~._attrs.counts_towards_budget` leaves it out of every count (the parent's
        budget, the progress, the summary, convergence) and of the results, so the run still ends
        with exactly ``n_trials`` evaluated trials, and the study (dashboard) still shows it as FAIL
        with its reason.

        The replacement is queued *before* the FAIL: nobody can see the queue empty and the budget
        spent while the trial is handed back.  Should this process die between the two, the reaper
        fails the trial as a dead worker's (which counts), so the run does one trial more than its
        budget, never fewer, and never waits for a trial that nobody will run.
        """
        tid = trial._trial_id
        name = self.signals.name if self.signals is not None else "stop"
        if self.storage.get_trial(tid).state.is_finished():
            return
        if self.cfg.optuna.budget_mode == "trials":
            self.study.enqueue_trial({}, skip_if_exists=False)
        why = f"returned to the queue: worker {self.worker_id} was stopped ({name}) before the trial finished"
        try:
            self.storage.set_trial_user_attr(tid, RETURNED_ATTR, name)
            self.storage.set_trial_user_attr(tid, ERROR_ATTR, why)
            self.storage.set_trial_state_values(tid, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # the reaper took this live worker for dead meanwhile
            log.warning("worker %s: trial %s was ended by another process while it was given back",
                        self.worker_id, trial.number)
            return
        self.runner.stats.trials -= 1  # not evaluated
        self.stop_reason = f"{name} received: trial {trial.number} {why.split(':')[0]}"
        log.warning("worker %s: trial %s %s", self.worker_id, trial.number, why)

    def _report_status(self, status: str, error: str | None = None) -> None:
        stats = self.runner.stats
        self.storage.set_study_user_attr(
            self.study_id,
            worker_status_attr(self.cfg.run_id, self.worker_id),
            {"status": status, "pid": os.getpid(), "host": host_id(), "trials": stats.trials,
             "failed": stats.failed, "last_error": error or stats.last_error, "stop_reason": self.stop_reason,
             **({"address": self.address} if self.address is not None else {})},
        )


def default_worker_id() -> int:
    """A first worker id for ``merlin-kit worker`` that differs between machines and processes.

    Worker ids offset the sampler seed: mixing this machine's name into the pid
    keeps two machines whose workers happen to have the same pid from sampling
    the same parameters.
    """
    return (zlib.crc32(f"{host_id()}:{os.getpid()}".encode()) % 10**6) * 100


def report_worker_crash(location: str, study_name: str, worker_id: int, tb: str) -> None:
    """Best effort: record a worker's fatal traceback in the study so the parent can show it."""
    try:
        storage = StorageLocation.parse(location).open()
        study_id = storage.get_study_id_from_name(study_name)
        cfg_run = load_run_config(storage, study_id).run_id
        storage.set_study_user_attr(
            study_id, worker_status_attr(cfg_run, worker_id),
            {"status": "crashed", "pid": os.getpid(), "host": host_id(), "last_error": tb.strip().splitlines()[-1],
             "traceback": tb[-8000:]},
        )
    except Exception:  # the storage itself may be what failed; the traceback is on stderr anyway
        log.exception("worker %s could not record its crash in the study", worker_id)


def run_worker(location: str, study_name: str, worker_id: int, parent_pid: int | None = None,
               data_path: str | None = None, *, trust_key: str | None = None,
               allow_modules: Sequence[str] = (), address: str | None = None,
               settings: Mapping[str, str] | None = None) -> WorkerStats | None:
    """Process entry point: join the study and run trials until the global budget is spent.

    Then, when the study is part of a chain (a walk-forward's windows, :mod:`._chain`), wait for
    the next study and go on there: one process serves every window.

    ``trust_key`` (the run's key; default ``MERLIN_TRUST_KEY``) and ``allow_modules``
    (plus ``MERLIN_ALLOW_MODULES``) decide which study strategies this worker loads.

    Exits with code 1 (after recording the traceback in the study) if the
    worker cannot start or crashes, with :data:`EXIT_STORAGE_GONE` (one log
    line) if the storage stops answering; a failing *trial* never ends the worker.
    Run in a thread of someone else's process (a Dask task, ``address`` = the Dask
    worker's), it installs no signal handler and returns instead of ending the process.
    ``settings``: the starting run's ``MERLIN_*`` variables (see :func:`~._start.adopt_kit_settings`).
    """
    adopt_kit_settings(settings)
    _configure_child_logging(worker_id)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain_optuna_logs()
    in_main = threading.current_thread() is threading.main_thread()
    child = in_main and multiprocessing.parent_process() is not None  # our own process: it may exit early
    if child:
        # Ctrl-C (and a terminal's hang-up) reach the whole process group: the parent turns them
        # into a stop request (or forwards SIGTERM), so a child must not also act on them itself.
        for ignored in _group_signals():
            signal.signal(ignored, signal.SIG_IGN)
    signals = None
    if in_main:
        # first signal: no new trial, the one in flight may finish; second (or grace over): give it back
        signals = SignalStop(signal_grace())
        signals.install((signal.SIGTERM,) if child else (signal.SIGTERM, *_group_signals()))
    try:
        storage = None
        while True:  # one study, or a chain of them (a walk-forward's windows, see ._chain)
            loop = WorkerLoop(location, study_name, worker_id, parent_pid=parent_pid, data_path=data_path,
                              trust_key=trust_key, allow_modules=allow_modules, signals=signals, storage=storage,
                              address=address)
            stats = loop.run()
            stats.stop_reason = loop.stop_reason
            stats.signal = None if signals is None else signals.signum
            following = loop.next_study()
            if following is None:
                break
            log.info("worker %s goes on to study %r", worker_id, following)
            study_name, storage = following, loop.storage
    except (KeyboardInterrupt, TrialInterrupted):  # a signal before the loop could handle it
        sys.exit(128 + (signals.signum if signals is not None and signals.signum else signal.SIGINT))
    except Exception as exc:
        gone = storage_unavailable(exc, location)
        if gone is not None:  # nothing to record it in: one line, no traceback
            log.error("worker %s stopped: %s", worker_id, gone)
            sys.exit(EXIT_STORAGE_GONE)
        tb = traceback.format_exc()
        log.error("worker %s crashed:\n%s", worker_id, tb)
        report_worker_crash(location, study_name, worker_id, tb)
        sys.exit(1)
    finally:
        if signals is not None:
            signals.restore()
    if child:
        # Everything is in the storage already; skipping interpreter teardown (numba, LLVM,
        # pandas) saves ~0.4 s per worker at the end of every run.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if stats.signal is None else 128 + stats.signal)
    return stats


def _group_signals() -> tuple[int, ...]:
    """Ctrl-C and (where it exists) the terminal's hang-up: sent to a whole process group."""
    return (signal.SIGINT, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGINT,)


def _configure_child_logging(worker_id: int) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr,
            format=f"%(asctime)s merlin-kit worker {worker_id} [%(levelname)s] %(message)s",
        )

