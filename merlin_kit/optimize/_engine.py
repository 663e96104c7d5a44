"""Orchestration: set up the study, start workers, watch, stop, finish.

The parent runs the pre-flight checks (:mod:`._preflight`), creates the study
with the run's configuration in its user attrs (:mod:`._runconfig`), fills the
trial queue (:mod:`._budget`), starts processes on :func:`~._worker.run_worker`
(:mod:`._start`), watches the storage for progress (:mod:`._state`) and dead
workers (:mod:`._liveness`), enforces the deadline and Stop, then rebuilds every
result from the trials (:mod:`._results`).  With one worker the same loop runs
in the calling process (a thread for :func:`start_optimization`), so one worker
and N workers optimise exactly the same function.  A caller that only waits
(the CLI; :func:`optimize` when its processes start cold) runs worker 0 in a
thread too, computing while N - 1 processes start (``parent_works``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import shutil
import threading
import time
import traceback
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .._platform import wait_event, write_text_atomic
from ..backtest import Backtester, BacktestResult
from ..data import PreparedData, fingerprint, load_data, prepare, source_as_path
from ..errors import ConfigError
from ._attrs import FINISHED_STATES, STOP_ATTR, converged_attr, counts_towards_budget, worker_status_prefix
from ._budget import TrialQueue, belongs_to_run
from ._chain import end_chain, link_next, mark_pending
from ._logs import plain_optuna_logs
from ._liveness import LocalWorker, RunLease, StaleTrialReaper, end_processes, others_run_trials
from ._preflight import check_strategy, choose_storage, default_study_name, make_run_tmpdir, save_window_for_workers
from ._results import OptimizationResult, build_results, build_summary, check_outcome, run_trials_of
from ._runconfig import RunConfig, previous_run_config, resume_differences, store_run_config, strategy_to_ref
from ._start import start_server_early, start_worker_process
from ._state import Progress, RunSummary, measure_progress
from ._sweep import SweepQueue, sweep_settings
from ._validation_methods import ValidationMethods
from ._storage import StorageLocation, StorageUnavailableError, in_memory_copy, storage_unavailable
from ._trust import run_trust_key
from ._worker import WorkerLoop
from ._constraints import parse_constraints
from ._dask import ClusterPool
from ._objectives import open_study, run_objectives
from .config import OptimizationConfig, OptunaConfig, is_sweep, validate
from .report import results_table

log = logging.getLogger("merlin_kit.optimize")

POLL_SECONDS = 0.2
#: how often the monitor looks for RUNNING trials whose worker is gone (on any machine)
REAP_SECONDS = 1.0
#: after Stop, workers get this long to finish their trial before SIGTERM, then SIGKILL
STOP_GRACE_SECONDS = 3.0
KILL_GRACE_SECONDS = 1.5
#: a time-budget run that overruns its deadline by this much (a stuck trial; keep_workers: a RUNNING one) is stopped
DEADLINE_OVERRUN_SECONDS = 10.0


class OptimizationRun(ValidationMethods):
    """A running (or finished) optimisation: progress, wait, stop, results."""
    _pool: ClusterPool | None = None  # cluster=: its client and tasks (set in __init__)

    def __init__(self, opt: OptimizationConfig, cfg: OptunaConfig, *, keep_workers: bool = False,
                 cluster: Any = None) -> None:
        checked = validate(opt, cfg)  # normalised copies: the caller's objects stay as they were
        plain_optuna_logs()
        self.opt, self.config = checked.opt, checked.config
        self.strategy, self.space, self.score_config = checked.strategy, checked.space, checked.score
        #: the first objective is the primary one: ``metric``/``direction`` (``run.best``, sorting) are its
        self.objectives = run_objectives(self.config)
        self.constraints = parse_constraints(self.config.constraints)
        self.metric, self.direction = self.objectives[0].metric, self.objectives[0].direction
        self.run_id = uuid.uuid4().hex[:12]
        self.study_name = self.config.study_name or default_study_name(self.strategy.id)
        self._tmpdir = make_run_tmpdir()  # records its owner; removes the folders of killed runs first
        self.run_dir: Path | None = None
        self.storage_location: StorageLocation | None = None
        self.results: list[OptimizationResult] = []
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self.workers: list[Any] = []  # LocalWorker, or ClusterWorker (._dask): the same interface
        self._stop_event = threading.Event()
        # written when the in-process worker thread ends (closed with the run object, by the GC)
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._stop_reason = ""
        self._queue: TrialQueue | None = None
        self._sweep: SweepQueue | None = None
        self._monitor: threading.Thread | None = None
        self._prepared: PreparedData | None = None
        self._final_study: optuna.Study | None = None
        self._lease: RunLease | None = None
        #: the workers go on to a next study once this run's budget is spent (:mod:`._chain`)
        self._keep_workers = keep_workers
        try:  # cluster=: the workers are Dask tasks (._dask); client and storage checked before the study is made
            self._pool = None if cluster is None else ClusterPool.open(cluster, cfg.storage, keep_workers)
            #: workers that start slowly (spawn, a new forkserver): a blocking caller computes meanwhile (optimize)
            self.cold_start = cluster is None and self.opt.worker_processes > 1 and start_server_early(
                self.opt.start_method)  # the server warms up while _setup parses the data
            self._setup()
        except BaseException:
            self._cleanup()
            raise

    # -- set-up -------------------------------------------------------------
    def _setup(self) -> None:
        opt, cfg = self.opt, self.config
        if isinstance(opt.data, PreparedData):
            reason = ("pass the OHLCV source (path, bytes, file object or DataFrame), not prepared data; "
                      "the window is set with start/end/warmup_bars")
            raise ConfigError(f"data: {reason}", field="data", reason=reason)
        data_path, data_name = source_as_path(opt.data, self._tmpdir)
        self._frame = load_data(data_path, name=data_name)  # the whole file, kept for run.holdout()
        self._prepared = prepare(self._frame, opt.start, opt.end, opt.warmup_bars)
        fixed = {k: self.strategy.param(k).validate(v) for k, v in dict(opt.fixed_params or {}).items()}
        took = check_strategy(self.strategy, self._prepared, fixed, opt.max_backtest_seconds, warm=is_sweep(cfg))
        self._trust_key = run_trust_key()  # MERLIN_TRUST_KEY or random; given to our workers, never stored
        strategy_ref = strategy_to_ref(opt.strategy, self.strategy, self._trust_key)

        location, self.run_dir = choose_storage(cfg, self.study_name, self._tmpdir)
        self.storage_location = location
        storage = location.open()
        study = open_study(self.study_name, storage, self.objectives)
        self._storage = storage
        self._study = study
        self._study_id = storage.get_study_id_from_name(self.study_name)
        existing = storage.get_all_trials(self._study_id, deepcopy=False)
        # one run per study (and run folder): refuse while another live run holds it
        self._lease = RunLease(storage, self._study_id, self.study_name, self.run_id, folder=self.run_dir)
        self._lease.acquire()
        started = time.time()
        self.run_config = RunConfig(
            run_id=self.run_id,
            strategy_ref=strategy_ref,
            data_path=data_path,
            data_name=data_name,
            data_fingerprint=fingerprint(self._prepared),
            start=None if opt.start is None else pd.Timestamp(opt.start).isoformat(),
            end=None if opt.end is None else pd.Timestamp(opt.end).isoformat(),
            warmup_bars=opt.warmup_bars,
            fixed_params=fixed,
            min_profit=opt.min_profit,
            space=self.space,
            score=self.score_config,
            # the study is readable by whoever reads the database (dashboards, exports): no password in it
            optuna=replace(cfg, storage=None if cfg.storage is None else StorageLocation.parse(cfg.storage).display),
            metric=self.metric,
            direction=self.direction,
            first_trial_number=len(existing),
            started_at=started,
            deadline=started + float(cfg.time_limit) if cfg.budget_mode == "time" else None,
            local_copy=(save_window_for_workers(self._prepared, self._tmpdir)  # the in-process worker has it
                        if opt.worker_processes > 1 or self._pool is not None else None),
            strategy_id=self.strategy.id,
            extra=sweep_settings(cfg, took, seed=int(uuid.uuid4().int % 2**31)) if is_sweep(cfg) else {},
        )
        previous = previous_run_config(storage, self._study_id)
        if previous is not None and existing:
            diffs = resume_differences(previous, self.run_config)
            if diffs:
                raise ConfigError(
                    f"study {self.study_name!r} holds {len(existing)} trials of a run with other settings; resuming "
                    f"would mix incompatible trials. Differences: {'; '.join(diffs)}. Resume with the same settings, "
                    "or choose another study name for a new study.", field="study_name")
        store_run_config(storage, self._study_id, self.run_config)
        if self._keep_workers:
            mark_pending(storage, self._study_id, self.run_id)
        self._started = started

    @property
    def location(self) -> str:
        """The storage as workers open it (journal path or URL; see :attr:`storage_location`)."""
        return "" if self.storage_location is None else self.storage_location.url

    @property
    def trust_key(self) -> str:
        """The run's trust key: give it to ``merlin-kit worker`` on other machines (``MERLIN_TRUST_KEY``)."""
        return self._trust_key

    @property
    def temporary_storage(self) -> bool:
        """Whether the study lives in a temporary journal that is deleted when the run ends."""
        return self.storage_location is not None and self.storage_location.in_folder(self._tmpdir)

    # -- execution ----------------------------------------------------------
    def _start(self, inline: bool = False, workers_from: "OptimizationRun | None" = None,
               parent_works: bool = False) -> None:
        """Queue the budget, then start the workers: adopted ones (a chain), Dask tasks, or local ones.

        Locally, worker 0 runs in this process when there is one worker, or with ``parent_works`` (a caller
        that only waits: its CPU works while the other workers' processes start); processes run the rest.
        """
        n = self.opt.worker_processes
        if workers_from is not None and workers_from.location != self.location:
            raise ConfigError(f"workers_from: run {workers_from.study_name!r} uses another storage "
                              f"({workers_from.storage_location.display}); its workers cannot join this study",
                              field="workers_from")
        # the live processes of the previous run of a chain wait for this study: none is started
        adopted = [w for w in workers_from.workers if w.shareable and w.alive()] if workers_from else []
        self.workers.extend(adopted)
        if self._pool is not None:  # Dask tasks, each running run_worker (._dask)
            self.workers.extend(self._pool.submit(n, self.location, self.study_name, self.run_id, self._trust_key,
                                                  self.run_config.data_path))
        if is_sweep(self.config):  # one ticket per batch of precomputed points (._sweep)
            self._sweep = SweepQueue(self._storage, self._study_id, self.run_config)
            self._sweep.fill()
        elif self.config.budget_mode == "trials":
            self._queue = TrialQueue(self._study, self.run_id, rdb=self.storage_location.kind == "rdb",
                                     poll_seconds=POLL_SECONDS)
            self._queue.fill(int(self.config.n_trials or 0))
        if workers_from is not None:  # set up and queued: the previous run's workers may come
            link_next(self._storage, self._storage.get_study_id_from_name(workers_from.study_name),
                      workers_from.run_id, self.study_name)
        local = not adopted and self._pool is None
        in_process = local and (n == 1 or (parent_works and n > 1))
        if in_process:  # first: a forkserver still importing makes each process start below wait for it
            worker = LocalWorker(0)
            self.workers.append(worker)
            if not inline:
                worker.thread = threading.Thread(target=self._thread_worker, args=(worker,), daemon=True,
                                                 name="merlin-worker-0")
                worker.thread.start()
        for i in range(int(in_process), n if local else 0):
            self.workers.append(LocalWorker(i, process=start_worker_process(
                self.opt.start_method, i, self.location, self.study_name, self._trust_key)))
        if not inline:
            self._monitor = threading.Thread(target=self._watch, daemon=True, name="merlin-monitor")
            self._monitor.start()

    def _in_process_worker(self) -> WorkerLoop:
        return WorkerLoop(self.storage_location, self.study_name, 0, stop_event=self._stop_event,
                          refill=self._top_up_queue, prepared=self._prepared, trust_key=self._trust_key)

    def _top_up_queue(self) -> None:
        if self._queue is not None:
            self._queue.top_up()

    def _thread_worker(self, worker: LocalWorker) -> None:
        try:
            self._in_process_worker().run()
        except Exception as exc:
            self._worker_crashed(worker, exc)
        finally:  # the monitor sees the end at once, as it sees a process's
            with contextlib.suppress(OSError):
                self._wake_w.send_bytes(b"")

    def _worker_crashed(self, worker: LocalWorker, exc: Exception) -> None:
        """The in-process worker ended with an exception: a lost storage ends the run, anything else is logged."""
        gone = storage_unavailable(exc, self.location)
        if gone is not None:
            worker.error = str(gone)
            self.error = self.error or gone
            log.error("worker 0 stopped: %s", gone)
            return
        worker.error = traceback.format_exc()
        log.error("worker 0 crashed:\n%s", worker.error)

    def _run_inline(self) -> None:
        """``worker_processes == 1`` with :func:`optimize`: trials run in the calling thread."""
        self._start(inline=True)
        worker = self.workers[0]
        try:
            self._in_process_worker().run()
        except KeyboardInterrupt:
            self._stop_reason = "interrupted"
        except Exception as exc:
            self._worker_crashed(worker, exc)
        self._finish()

    def _watch(self) -> None:
        reaper = StaleTrialReaper(self._study, self.storage_location)
        next_reap = next_refresh = 0.0
        try:
            while True:
                if time.monotonic() >= next_reap:  # dead workers' trials -> FAIL, so the end can be reached
                    reaper.reap()
                    if self._sweep is not None:
                        self._sweep.replace_lost()  # a dead worker's batch is re-done by others
                    next_reap = time.monotonic() + REAP_SECONDS
                if time.monotonic() >= next_refresh:  # O(trials): at most ~10 % of the monitor's time
                    began = time.monotonic()
                    progress = self._refresh_progress()
                    next_refresh = time.monotonic() + 9 * (time.monotonic() - began)
                if self._queue is not None:
                    self._queue.rate = progress.trials_per_second
                    self._queue.top_up()
                if self._budget_reached_without_local_workers(progress) or self._workers_moved_on(progress):
                    break
                if self.workers and not any(w.alive() for w in self.workers) and not self._remote_trials_running():
                    break
                if self._stop_event.is_set():
                    self._terminate_workers()
                    self._wait_for_remote_trials(STOP_GRACE_SECONDS)
                    break
                if (self.config.budget_mode == "time" and (progress.running or not self._keep_workers)
                        and time.time() > self.run_config.deadline + DEADLINE_OVERRUN_SECONDS):
                    self._stop_reason = "time limit reached (stuck trials stopped)"
                    self._request_stop()
                    self._terminate_workers()
                    break
                self._pause()
        except Exception as exc:  # the monitor must always finish the run
            gone = storage_unavailable(exc, self.location)
            self.error = gone or exc
            if gone is not None:
                log.error("%s", gone)
            else:
                log.exception("monitor failed")
            self._terminate_workers()
        self._finish()

    def _pause(self) -> None:
        """One poll interval, cut short when a local worker ends (the run's end is seen at once)."""
        sentinels = [w.process.sentinel if w.process is not None else self._wake_r
                     for w in self.workers if (w.process is not None or w.thread is not None) and w.alive()]
        if sentinels:
            if self._wake_r in multiprocessing.connection.wait(sentinels, timeout=POLL_SECONDS):
                self._wake_r.recv_bytes()
        else:
            self._stop_event.wait(POLL_SECONDS)

    def _remote_trials_running(self) -> bool:
        """Whether workers other than ours (``merlin-kit worker`` elsewhere) still run trials of this run."""
        return others_run_trials(self._storage, self._study_id, self.run_id, {w.pid for w in self.workers})

    def _wait_for_remote_trials(self, timeout: float) -> None:
        """After Stop: give remote workers' trials in flight a moment to finish (they stop at the next trial)."""
        end = time.monotonic() + timeout
        while self._remote_trials_running() and time.monotonic() < end:
            time.sleep(POLL_SECONDS)

    def _budget_reached_without_local_workers(self, p: Progress) -> bool:
        """With worker_processes=0 (remote workers only) the parent decides when the run is over."""
        if self.workers or p.running:
            return False
        mode = self.config.budget_mode
        if mode == "trials":  # a sweep's budget: its batches (a resume skips the points the study has)
            return self._sweep.finished() if self._sweep is not None else p.finished >= (self.config.n_trials or 0)
        if mode == "time":  # fresh read a second on: a trial asked for just before the deadline is RUNNING by then
            return time.time() >= self.run_config.deadline + 1.0 and not self._remote_trials_running()
        return ((p.since_improvement or 0) >= (self.config.convergence_patience or 0)
                or self._storage.get_study_user_attrs(self._study_id).get(converged_attr(self.run_id)) is not None)

    def _workers_moved_on(self, p: Progress) -> bool:
        """``keep_workers``: every live local worker has ended its loop on this study (its status is in the
        study: it waits for the next one now) and no trial of the run runs anywhere."""
        alive = [w for w in self.workers if w.alive()]
        if not self._keep_workers or not alive or p.running:
            return False
        reported = self._worker_statuses()
        return all(str(w.worker_id) in reported and reported[str(w.worker_id)].get("pid") == w.pid for w in alive)

    def end_chain(self) -> None:
        """A ``keep_workers`` run after which no study follows: its waiting workers are sent home."""
        try:
            if self._keep_workers:
                end_chain(self._storage, self._study_id, self.run_id)
        finally:  # storage trouble must not keep the processes alive
            self._terminate_workers()

    def _request_stop(self) -> None:
        self._stop_event.set()
        try:
            self._storage.set_study_user_attr(self._study_id, STOP_ATTR, self.run_id)
        except Exception:  # storage trouble must not prevent terminating the processes
            log.exception("could not write the stop flag to the study")

    def _terminate_workers(self) -> None:
        """Give every worker the grace period, then terminate (a Dask task: cancel) and kill what is left."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.kill(KILL_GRACE_SECONDS)

    # -- progress -------------------------------------------------------------
    def _worker_statuses(self) -> dict[str, Any]:
        """This run's worker status attrs (how each worker ended), by worker id."""
        prefix = worker_status_prefix(self.run_id)
        attrs = self._storage.get_study_user_attrs(self._study_id)
        return {k[len(prefix):]: v for k, v in attrs.items() if k.startswith(prefix) and isinstance(v, dict)}

    def _refresh_progress(self) -> Progress:
        cfg = self.config
        budget = {"trials": cfg.n_trials if self._sweep is None else self._sweep.to_do,  # a resume skips points
                  "time": cfg.time_limit, "convergence": cfg.convergence_patience}
        crashed = [f"worker {wid} crashed: {status.get('last_error')}"
                   for wid, status in sorted(self._worker_statuses().items()) if status.get("status") == "crashed"]
        progress = measure_progress(
            study_name=self.study_name,
            trials=self._storage.get_all_trials(self._study_id, deepcopy=False), run_id=self.run_id,
            first_trial_number=self.run_config.first_trial_number, direction=self.direction,
            fixed_params=self.run_config.fixed_params, budget_mode=cfg.budget_mode,
            budget=float(budget[cfg.budget_mode] or 0), elapsed=time.time() - self._started,
            workers=[(w.worker_id, w.pid, w.alive(), w.exitcode, w.address) for w in self.workers],
            finished_run=self._done.is_set(), worker_errors=crashed, objectives=self.objectives,
            constraints=self.constraints, hv_reference=cfg.hv_reference,
        )
        with self._lock:
            self._progress = progress
        return progress

    def progress(self) -> Progress:
        """Latest progress snapshot: finished/budget, best value and params, rate, ETA, worker states."""
        with self._lock:
            if self._progress is not None:
                return self._progress
        return self._refresh_progress()

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (an in-memory copy once a temporary journal has been removed)."""
        return self._final_study if self._final_study is not None else self._study

    # -- control ------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has finished (results ready); KeyboardInterrupt acts like :meth:`stop`."""
        try:
            finished = wait_event(self._done, timeout)  # Ctrl-C interrupts it on Windows too
        except KeyboardInterrupt:
            self.stop()
            return True
        if finished and self.error is not None:
            raise self.error
        return finished

    def stop(self, reason: str | None = None) -> None:
        """Stop all workers (within ~5 s), keep what was computed, and finish the run.

        ``reason``: the summary's stop_reason (default "stopped by user"), e.g. "terminated (SIGTERM)".
        """
        if self._done.is_set():
            return
        self._stop_reason = self._stop_reason or reason or "stopped by user"
        self._request_stop()
        if self._monitor is not None:
            self._monitor.join(STOP_GRACE_SECONDS + 2 * KILL_GRACE_SECONDS + 5)
        self._done.wait(5)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- finishing ----------------------------------------------------------
    def _finish(self) -> None:
        try:
            if self._stop_event.is_set() and not self._stop_reason:
                self._stop_reason = "stopped by user"
            if not self._keep_workers or self._stop_event.is_set() or self.error is not None:
                self._terminate_workers()  # (kept workers wait for the next study; see end_chain)
            if isinstance(self.error, StorageUnavailableError):
                return  # nothing more can be read or written; what was finished is in the study
            if self._sweep is not None:
                self._sweep.retire()  # batches the deadline or Stop left unclaimed
            StaleTrialReaper(self._study, self.storage_location).reap(
                {w.pid for w in self.workers if not w.alive()}, final=True,
                workers_alive=any(w.alive() for w in self.workers))
            self._refresh_progress()
            self._collect_results()
            self.storage_location.sync()
            self._write_outputs()
            if self.temporary_storage:
                self._final_study = in_memory_copy(self.study_name, self._storage)
        except BaseException as exc:
            gone = storage_unavailable(exc, self.location) if isinstance(exc, Exception) else None
            self.error = self.error or gone or exc
            if gone is not None:
                log.error("%s", gone)
            else:
                log.exception("finishing the run failed")
        finally:
            self._cleanup()
            with self._lock:
                if self._progress is not None:
                    self._progress = replace(self._progress, finished_run=True)
            self._done.set()

    def _collect_results(self) -> None:
        trials = self._storage.get_all_trials(self._study_id, deepcopy=False)
        self.results = build_results(trials, fixed_params=self.run_config.fixed_params, score=self.score_config,
                                     metric=self.metric, direction=self.direction, run=self,
                                     objectives=self.objectives, constraints=self.constraints)
        self.summary = build_summary(self, trials, self._worker_statuses(), time.time() - self._started,
                                     self._stop_reason)
        check_outcome(self.summary, run_trials_of(trials, self.run_id, self.run_config.first_trial_number),
                      stopped=self._stop_event.is_set())

    def _write_outputs(self) -> None:
        """results.csv and summary.json in the run folder, each replaced atomically (never half written)."""
        if self.run_dir is None or self.summary is None:
            return
        write_text_atomic(self.run_dir / "results.csv", self.results_frame().to_csv(index=False))
        write_text_atomic(self.run_dir / "summary.json", json.dumps(self.summary.to_dict(), indent=2, default=str))

    def _cleanup(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._lease is not None:
            self._lease.release()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def run_trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The trials this run ran (a resumed study's earlier trials excluded), from the study.

        ``states`` keeps only those (default: every finished trial).
        """
        first = self.run_config.first_trial_number
        return [t for t in self.study.get_trials(deepcopy=False, states=states or FINISHED_STATES)
                if belongs_to_run(t, self.run_id, first) and (not t.state.is_finished() or counts_towards_budget(t))]

    # -- results ------------------------------------------------------------
    def results_frame(self) -> pd.DataFrame:
        """Every result as a table: the target first, then trial, state, score, parameters and every metric."""
        return results_table(self)

    @property
    def best(self) -> OptimizationResult | None:
        """The feasible Pareto front's best trial by the primary (first) objective; with one objective, the best
        feasible trial; when no trial is feasible, the complete one with the least violation (see sort_results)."""
        complete = [r for r in self.results if r.state == "COMPLETE"]
        return complete[0] if complete else None

    def backtest(self, result: OptimizationResult) -> BacktestResult:
        """Full backtest (trades, curves) of one result's parameters on the run's window."""
        assert self._prepared is not None
        return Backtester(self.strategy, self._prepared).result(result.params)


def start_optimization(opt: OptimizationConfig, cfg: OptunaConfig | None = None, *, keep_workers: bool = False,
                       workers_from: OptimizationRun | None = None, cluster: Any = None,
                       parent_works: bool = False) -> OptimizationRun:
    """Validate, create the study and start the workers; returns at once with a handle.

    ``parent_works=True``: this process runs worker 0 in a thread and starts ``worker_processes - 1``
    processes, for a caller that only waits (the CLI, :func:`optimize`): its core computes trials while the
    processes start instead of idling.  A notebook leaves it off, so that the kernel stays responsive.

    A chain of runs (a walk-forward's windows) shares one set of worker processes:
    ``keep_workers=True`` keeps this run's workers once its budget is spent, waiting
    for the next study; the next run, started with ``workers_from=`` this run (same
    storage), takes them over instead of starting processes.  The last run of a
    chain is started without ``keep_workers``; a chain that ends early (a Stop, an
    error) calls :meth:`OptimizationRun.end_chain` on the run with waiting workers.

    ``cluster``: a ``distributed.Client``, a Dask cluster or a scheduler address: the workers are Dask tasks
    (``worker_processes`` of them when above 1, else one per Dask thread; see :mod:`._dask`).
    """
    if parent_works and (cluster is not None or keep_workers or workers_from is not None):
        raise ConfigError("parent_works: the calling process can only work beside its own worker processes, "
                          "not with cluster=, keep_workers or workers_from", field="parent_works")
    run = OptimizationRun(opt, cfg or OptunaConfig(), keep_workers=keep_workers, cluster=cluster)
    _start_or_clean_up(run, workers_from=workers_from, parent_works=parent_works)
    return run


def optimize(opt: OptimizationConfig, cfg: OptunaConfig | None = None, *, cluster: Any = None) -> OptimizationRun:
    """Run an optimisation to the end (blocking) and return the finished run (``cluster``: see start_optimization).

    When the worker processes start slowly (``spawn``; the session's first forkserver), this process runs
    worker 0 itself (``parent_works``) beside ``worker_processes - 1`` processes; with a warm forkserver (a
    later run of the session) every worker is a process, which keeps this process's GIL out of the trials.
    """
    run = OptimizationRun(opt, cfg or OptunaConfig(), cluster=cluster)
    if opt.worker_processes == 1 and cluster is None:
        run._run_inline()
        if run.error is not None:
            raise run.error
        return run
    _start_or_clean_up(run, parent_works=run.cold_start)
    run.wait()
    return run


def _start_or_clean_up(run: OptimizationRun, workers_from: OptimizationRun | None = None,
                       parent_works: bool = False) -> None:
    """Start the run; if that fails (a process that cannot start), leave no worker, lease or temp folder behind."""
    try:
        run._start(workers_from=workers_from, parent_works=parent_works)
    except BaseException:
        run._stop_event.set()
        end_processes([w.process for w in run.workers if w.process is not None])
        run._cleanup()
        raise
