"""Orchestration: validate, set up the study, start workers, watch, stop, rebuild results, clean up.

The parent never computes trials when it has worker processes: it creates the
study (configuration in the study's user attrs), fills the trial queue, starts
N processes on :func:`~merlin_kit.optimize.worker.run_worker`, watches the
storage for progress, enforces the deadline and Stop, then rebuilds every
result from the trials' user attrs.  With one worker the same loop runs in the
calling process (a thread for :func:`start_optimization`), so one worker and N
workers optimise exactly the same function.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from ..backtest import Backtester, load_data
from ..data import PreparedData, fingerprint, prepare
from ..errors import ConfigError, MerlinError, OptimizationError, StrategyError
from ..metrics import METRIC_NAMES, compute_metrics, month_starts
from ..scoring import score_all
from ..strategies import IndicatorCache, StrategyOutput
from .config import OptimizationConfig, OptunaConfig, target_direction, target_metric, validate
from .runconfig import RunConfig, store_run_config, strategy_to_ref
from .storage import host_id, journal_location, journal_path, kind_of, open_storage, redact, sync_journal
from .worker import (
    ERROR_ATTR, FINISHED_STATES, METRICS_ATTR, OWNER_ATTR, PRUNE_REASON_ATTR, STOP_ATTR, TRACEBACK_ATTR,
    WORKER_STATUS_PREFIX, StaleTrialReaper, WorkerLoop, converged_attr, is_better, pid_alive, run_worker,
    trials_since_improvement,
)

log = logging.getLogger("merlin_kit.optimize")

DEFAULT_RUNS_DIR = "merlin_runs"
NO_TRACEBACK_HINT = (
    "not recorded: the workers died before joining the study (see their stderr). In a script, start the "
    "optimisation under `if __name__ == \"__main__\":` - spawn and forkserver workers re-import the main module."
)
JOURNAL_NAME = "study.journal"
POLL_SECONDS = 0.2
#: WAITING trials kept queued ahead of the workers on a database (at least; more at high trial rates)
RDB_QUEUE_WINDOW = 16
#: the same on a journal, where a queued trial is cheap but 100,000 of them are not (seconds to write,
#: and every storage read and the dashboard would walk them)
JOURNAL_QUEUE_WINDOW = 256
#: how often the monitor looks for RUNNING trials whose worker is gone (on any machine)
REAP_SECONDS = 1.0
#: after Stop, workers get this long to finish their trial before SIGTERM, then SIGKILL
STOP_GRACE_SECONDS = 3.0
KILL_GRACE_SECONDS = 1.5
#: a time-budget run that overruns its deadline by this much (a stuck trial) is stopped
DEADLINE_OVERRUN_SECONDS = 10.0


@dataclass
class OptimizationResult:
    """One trial rebuilt from storage: parameters (fixed ones included), every metric, scores."""

    trial_number: int
    state: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    objective: float | None
    score: float | None
    worker: int | None = None
    error: str | None = None
    prune_reason: str | None = None
    run_id: str | None = None

    run: "OptimizationRun | None" = field(default=None, repr=False, compare=False)

    def backtest(self):
        """Re-run this result's parameters as a full backtest (trades, curves) on its run's window."""
        if self.run is None:
            raise ValueError("this result is not attached to a run; use run.backtest(result)")
        return self.run.backtest(self)


@dataclass
class _Worker:
    worker_id: int
    process: multiprocessing.process.BaseProcess | None = None
    thread: threading.Thread | None = None
    error: str | None = None

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


def safe_name(name: str) -> str:
    """A study name made safe as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "study"


def default_study_name(strategy_id: str) -> str:
    return f"{strategy_id}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


class OptimizationRun:
    """A running (or finished) optimisation: progress, wait, stop, results."""

    def __init__(self, opt: OptimizationConfig, cfg: OptunaConfig) -> None:
        checked = validate(opt, cfg)  # normalised copies: the caller's configs stay as they were
        self.opt, self.config = checked.opt, checked.config
        self.strategy, self.space, self.score_config = checked.strategy, checked.space, checked.score
        self.metric = target_metric(cfg.target)
        self.direction = target_direction(cfg.target)
        self.run_id = uuid.uuid4().hex[:12]
        self.study_name = cfg.study_name or default_study_name(self.strategy.id)
        self._tmpdir = tempfile.mkdtemp(prefix="merlin-run-")
        os.chmod(self._tmpdir, 0o700)
        self.run_dir: Path | None = None
        self.location = ""
        self.results: list[OptimizationResult] = []
        self.summary: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._workers: list[_Worker] = []
        self._stop_event = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {}
        self._stop_reason = ""
        self._queue_lock = threading.Lock()
        self._to_enqueue = 0
        self._monitor: threading.Thread | None = None
        self._prepared: PreparedData | None = None
        self._final_study: optuna.Study | None = None
        try:
            self._setup()
        except BaseException:
            self._cleanup()
            raise

    # -- set-up -------------------------------------------------------------
    def _setup(self) -> None:
        opt, cfg = self.opt, self.config
        data_path, data_name = self._materialise_data(opt.data)
        frame = load_data(data_path, name=data_name)
        self._prepared = prepare(frame, opt.start, opt.end, opt.warmup_bars)
        self._check_strategy()
        strategy_ref = strategy_to_ref(opt.strategy, self.strategy)

        self.location = self._storage_location()
        storage = open_storage(self.location)
        try:
            study = optuna.create_study(
                study_name=self.study_name, storage=storage, direction=self.direction, load_if_exists=True
            )
        except ValueError as exc:  # optuna raises ValueError for direction mismatches on resume
            raise ConfigError(f"study {self.study_name!r}: {exc}") from None
        if study.direction.name.lower() != self.direction:
            raise ConfigError(
                f"study {self.study_name!r} exists with direction {study.direction.name.lower()}, but target "
                f"{cfg.target!r} needs {self.direction}; use another study_name"
            )
        self._storage = storage
        self._study = study
        self._study_id = storage.get_study_id_from_name(self.study_name)
        existing = storage.get_all_trials(self._study_id, deepcopy=False)
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
            fixed_params={k: self.strategy.param(k).validate(v) for k, v in dict(opt.fixed_params or {}).items()},
            min_profit=opt.min_profit,
            space=self.space,
            score=self.score_config,
            # the study is readable by whoever reads the database (dashboards, exports): no password in it
            optuna=replace(cfg, storage=None if cfg.storage is None else redact(os.fspath(cfg.storage))),
            metric=self.metric,
            direction=self.direction,
            first_trial_number=len(existing),
            started_at=started,
            deadline=started + float(cfg.time_limit) if cfg.budget_mode == "time" else None,
            local_copy=self._save_prepared_for_workers(),
        )
        store_run_config(storage, self._study_id, self.run_config)
        self._started = started

    def _save_prepared_for_workers(self) -> dict[str, str] | None:
        """Worker processes on this machine read the validated window, not the CSV (private temp file)."""
        if self.opt.worker_processes < 2:
            return None  # the in-process worker gets the window itself
        assert self._prepared is not None
        path = os.path.join(self._tmpdir, "prepared.npz")
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._prepared.save(path)
        return {"path": path, "host": host_id()}

    def _materialise_data(self, source: Any) -> tuple[str, str]:
        """A path every worker can read: the user's file, ``sample``, or a private temp copy (mode 0600)."""
        if isinstance(source, str) and source == "sample" and not os.path.exists(source):
            return "sample", "sample"
        if isinstance(source, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(source))
            return path, os.fspath(source)
        if isinstance(source, PreparedData):
            raise ConfigError("data: pass the OHLCV source (path, bytes, file object or DataFrame), not prepared data; "
                              "the window is set with start/end/warmup_bars")
        target = os.path.join(self._tmpdir, "data.csv")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(source, (bytes, bytearray)):
                fh.write(bytes(source))
                name = "<uploaded bytes>"
            elif isinstance(source, pd.DataFrame):
                frame = load_data(source, name="<DataFrame>")
                fh.write(frame.to_csv(index=True, index_label="time").encode("utf-8"))
                name = "<DataFrame>"
            else:
                content = source.read()
                fh.write(content.encode("utf-8") if isinstance(content, str) else bytes(content))
                name = getattr(source, "name", None) or "<file object>"
                name = name if isinstance(name, str) else "<file object>"
        return target, name

    def _check_strategy(self) -> None:
        """One timed backtest in the parent: a strategy that raises, returns malformed output or is too
        slow fails here with a StrategyError, before any worker starts."""
        assert self._prepared is not None
        params = dict(self.opt.fixed_params or {})  # the schema's defaults for everything else
        label = f"strategy {self.strategy.id or self.strategy!r}"
        full = self.strategy.validate_params(params)
        cache = IndicatorCache()
        starts = month_starts(self._prepared.time)
        took = self._test_backtest(full, label, cache, starts)
        limit = self.opt.max_backtest_seconds
        if limit is None or took <= limit:
            return
        # the first call may include one-off compilation (numba JIT): judge a second, warm run
        first = took
        took = self._test_backtest(full, label, IndicatorCache(), starts)
        if took > limit:
            raise StrategyError(
                f"{label} is too slow: one backtest of {self._prepared.n_bars} bars took {took:.1f} s "
                f"(first call {first:.1f} s), above max_backtest_seconds={limit:g}, so the optimisation was not "
                f"started. Speed it up (compile the bar loop with numba, cache indicators with the IndicatorCache "
                f"passed to run(), test on a shorter window with start/end), or raise the limit: "
                f"OptimizationConfig(..., max_backtest_seconds={math.ceil(2 * max(took, limit))}) "
                f"(None turns the check off)."
            )

    def _test_backtest(self, full: dict[str, Any], label: str, cache: IndicatorCache, starts: Any) -> float:
        """Run the strategy once, check what it returned; the seconds it took (run + metrics)."""
        assert self._prepared is not None
        n_bars = self._prepared.n_bars
        t0 = time.perf_counter()
        try:
            output = self.strategy.run(self._prepared, full, cache)
        except MerlinError:
            raise
        except Exception as exc:
            raise StrategyError(
                f"{label} failed on a test backtest with {full}: "
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            ) from exc
        if not isinstance(output, StrategyOutput):
            raise StrategyError(
                f"{label}: run() returned {type(output).__name__}, not a StrategyOutput; return "
                "StrategyOutput(direction, entry_idx, exit_idx, entry_price, exit_price, size, net_pnl, profit_pct, "
                "balance, equity, initial_capital) or output_from_kernel(kernel_result, capital)"
            )
        try:
            output.check(n_bars, where=label)
            for name in ("direction", "entry_idx", "exit_idx"):
                if getattr(output, name).dtype.kind not in "iu":
                    raise StrategyError(f"{label}: trade array {name!r} must hold integers, got dtype {getattr(output, name).dtype}")
        except StrategyError as exc:
            raise StrategyError(f"{exc} (malformed output of the test backtest with {full})") from None
        except Exception as exc:
            raise StrategyError(
                f"{label} returned a malformed StrategyOutput ({type(exc).__name__}: {exc}); every trade field "
                f"must be a 1-D numpy array with one value per trade and balance/equity one value per bar ({n_bars})"
            ) from exc
        try:
            compute_metrics(output, starts)
        except Exception as exc:
            raise StrategyError(
                f"{label}: the metrics of its test backtest could not be computed: {type(exc).__name__}: {exc}"
            ) from exc
        return time.perf_counter() - t0

    def _storage_location(self) -> str:
        cfg = self.config
        if cfg.output_dir is not None or (cfg.save_study and cfg.storage is None):
            # results.csv/summary.json go to output_dir with any storage (a server's study included)
            self.run_dir = Path(cfg.output_dir) if cfg.output_dir is not None else Path(DEFAULT_RUNS_DIR) / safe_name(self.study_name)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.storage is not None:
            loc = os.fspath(cfg.storage)
            if kind_of(loc) == "journal":
                path = journal_path(loc) or loc
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                if loc.startswith("journal+open://"):
                    return loc
                return journal_location(path)
            return loc
        if cfg.save_study:
            assert self.run_dir is not None
            return journal_location(self.run_dir / JOURNAL_NAME)
        return journal_location(os.path.join(self._tmpdir, JOURNAL_NAME))

    # -- execution ----------------------------------------------------------
    def _start(self, inline: bool = False) -> None:
        n = self.opt.worker_processes
        if n == 1:
            worker = _Worker(0)
            self._workers.append(worker)
            if not inline:
                worker.thread = threading.Thread(target=self._thread_worker, args=(worker,), daemon=True,
                                                 name="merlin-worker-0")
                worker.thread.start()
        elif n > 1:
            ctx = multiprocessing.get_context(self.opt.start_method)
            if self.opt.start_method == "forkserver":
                # a no-op once the server runs: its first start decides what it preloads
                ctx.set_forkserver_preload(["__main__", "merlin_kit.optimize._preload"])
            for i in range(n):
                proc = ctx.Process(target=run_worker, args=(self.location, self.study_name, i, os.getpid()),
                                   name=f"merlin-worker-{i}", daemon=True)
                proc.start()
                self._workers.append(_Worker(i, process=proc))
        if self.config.budget_mode == "trials":
            self._fill_queue()
        if not inline:
            self._monitor = threading.Thread(target=self._watch, daemon=True, name="merlin-monitor")
            self._monitor.start()

    def _fill_queue(self) -> None:
        """Queue exactly the run's trial budget as WAITING trials (workers only run claimed ones).

        The budget is queued in windows
        (:meth:`_top_up_queue`, called by the monitor and by an in-process
        worker that finds the queue empty): Optuna re-reads every unfinished
        trial of a study from the server on each trial, so a queue of the whole
        budget would make every trial cost O(budget) on PostgreSQL/MySQL.
        """
        waiting = self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.WAITING,))
        n = int(self.config.n_trials or 0)
        for extra in waiting[n:]:  # a stopped earlier run left more than needed
            self._storage.set_trial_user_attr(extra._trial_id, ERROR_ATTR, "cancelled: queued by an earlier run")
            self._storage.set_trial_state_values(extra._trial_id, state=TrialState.FAIL)
        with self._queue_lock:
            self._to_enqueue = max(0, n - len(waiting))
        self._top_up_queue(min(len(waiting), n))

    def _top_up_queue(self, waiting: int | None = None) -> None:
        with self._queue_lock:
            if self._to_enqueue <= 0:
                return
            if waiting is None:
                waiting = len(self._storage.get_all_trials(self._study_id, deepcopy=False,
                                                           states=(TrialState.WAITING,)))
            rate = float(self._progress.get("trials_per_second") or 0.0)
            least = RDB_QUEUE_WINDOW if kind_of(self.location) == "rdb" else JOURNAL_QUEUE_WINDOW
            window = max(least, math.ceil(4 * rate * POLL_SECONDS))
            if waiting > window // 2:
                return
            k = min(self._to_enqueue, window - waiting)
            for _ in range(k):
                self._study.enqueue_trial({}, skip_if_exists=False)
            self._to_enqueue -= k
            if self._to_enqueue == 0:
                self._storage.set_study_user_attr(self._study_id, f"merlin.queued.{self.run_id}", True)

    def _thread_worker(self, worker: _Worker) -> None:
        try:
            WorkerLoop(self.location, self.study_name, worker.worker_id, stop_event=self._stop_event,
                       refill=self._top_up_queue, prepared=self._prepared).run()
        except Exception:
            worker.error = traceback.format_exc()
            log.error("worker 0 crashed:\n%s", worker.error)

    def _run_inline(self) -> None:
        """``worker_processes == 1`` with :func:`optimize`: trials run in the calling thread."""
        self._start(inline=True)
        worker = self._workers[0]
        try:
            WorkerLoop(self.location, self.study_name, 0, stop_event=self._stop_event, refill=self._top_up_queue,
                       prepared=self._prepared).run()
        except KeyboardInterrupt:
            self._stop_reason = "interrupted"
        except Exception:
            worker.error = traceback.format_exc()
            log.error("worker 0 crashed:\n%s", worker.error)
        self._finish()

    def _watch(self) -> None:
        reaper = StaleTrialReaper(self._study, self.location)
        next_reap = 0.0
        try:
            while True:
                if time.monotonic() >= next_reap:  # dead workers' trials -> FAIL, so the end can be reached
                    reaper.reap()
                    next_reap = time.monotonic() + REAP_SECONDS
                self._refresh_progress()
                if self.config.budget_mode == "trials":
                    self._top_up_queue()
                if self._budget_reached_without_local_workers():
                    break
                if self._workers and not any(w.alive() for w in self._workers) and not self._remote_trials_running():
                    break
                if self._stop_event.is_set():
                    self._terminate_workers()
                    self._wait_for_remote_trials(STOP_GRACE_SECONDS)
                    break
                if self.config.budget_mode == "time" and time.time() > self.run_config.deadline + DEADLINE_OVERRUN_SECONDS:
                    self._stop_reason = "time limit reached (stuck trials stopped)"
                    self._request_stop()
                    self._terminate_workers()
                    break
                self._pause()
        except Exception as exc:  # the monitor must always finish the run
            self.error = exc
            log.exception("monitor failed")
            self._terminate_workers()
        self._finish()

    def _pause(self) -> None:
        """One poll interval, cut short when a worker process ends (the run's end is seen at once)."""
        sentinels = [w.process.sentinel for w in self._workers if w.process is not None and w.alive()]
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout=POLL_SECONDS)
        else:
            self._stop_event.wait(POLL_SECONDS)

    def _remote_trials_running(self) -> bool:
        """Whether workers other than ours (``merlin-kit worker`` elsewhere) still run trials of this run."""
        ours = {w.pid for w in self._workers}
        here = host_id()
        for t in self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get(OWNER_ATTR)
            ours_here = owner is not None and owner.get("host") == here and owner.get("pid") in ours
            if owner and owner.get("run") == self.run_id and not ours_here:
                return True
        return False

    def _wait_for_remote_trials(self, timeout: float) -> None:
        """After Stop: give remote workers' trials in flight a moment to finish (they stop at the next trial)."""
        end = time.monotonic() + timeout
        while self._remote_trials_running() and time.monotonic() < end:
            time.sleep(POLL_SECONDS)

    def _budget_reached_without_local_workers(self) -> bool:
        """With worker_processes=0 (remote workers only) the parent decides when the run is over."""
        if self._workers:
            return False
        p = self._progress
        mode = self.config.budget_mode
        if mode == "trials":
            return p.get("finished", 0) >= (self.config.n_trials or 0) and p.get("running", 0) == 0
        if mode == "time":
            return time.time() >= self.run_config.deadline and p.get("running", 0) == 0
        converged = (p.get("since_improvement", 0) >= (self.config.convergence_patience or 0)
                     or self._storage.get_study_user_attrs(self._study_id).get(converged_attr(self.run_id)) is not None)
        return converged and p.get("running", 0) == 0

    def _request_stop(self) -> None:
        self._stop_event.set()
        try:
            self._storage.set_study_user_attr(self._study_id, STOP_ATTR, self.run_id)
        except Exception:  # storage trouble must not prevent terminating the processes
            log.exception("could not write the stop flag to the study")

    def _terminate_workers(self) -> None:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in self._workers:
            if w.process is not None:
                w.process.join(max(0.0, deadline - time.monotonic()))
            elif w.thread is not None:
                w.thread.join(max(0.0, deadline - time.monotonic()))
        for w in self._workers:
            if w.process is not None and w.process.is_alive():
                w.process.terminate()
        for w in self._workers:
            if w.process is not None:
                w.process.join(KILL_GRACE_SECONDS)
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(KILL_GRACE_SECONDS)

    # -- progress -------------------------------------------------------------
    def _run_trials(self) -> list[FrozenTrial]:
        first = self.run_config.first_trial_number
        return [t for t in self._storage.get_all_trials(self._study_id, deepcopy=False) if t.number >= first]

    def _refresh_progress(self) -> dict[str, Any]:
        trials = self._run_trials()
        finished = [t for t in trials if t.state in FINISHED_STATES]
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        best = None
        for t in complete:
            if t.value is not None and (best is None or is_better(t.value, best.value, self.direction)):
                best = t
        elapsed = time.time() - self._started
        mode = self.config.budget_mode
        n_fin = len(finished)
        rate = n_fin / elapsed if elapsed > 0 else 0.0
        if mode == "trials":
            budget: float = float(self.config.n_trials or 0)
            done_units = float(n_fin)
            eta = (budget - n_fin) / rate if rate > 0 else None
        elif mode == "time":
            budget = float(self.config.time_limit or 0)
            done_units = min(elapsed, budget)
            eta = max(0.0, budget - elapsed)
        else:
            budget = float(self.config.convergence_patience or 0)
            all_finished = self._storage.get_all_trials(self._study_id, deepcopy=False, states=FINISHED_STATES)
            done_units = float(trials_since_improvement(all_finished, self.run_config.first_trial_number, self.direction))
            eta = None
        counts: dict[int, int] = {}
        for t in finished:
            owner = t.user_attrs.get(OWNER_ATTR) or {}
            if "worker" in owner:
                counts[owner["worker"]] = counts.get(owner["worker"], 0) + 1
        progress = {
            "study_name": self.study_name,
            "budget_mode": mode,
            "budget": budget,
            "done": done_units,
            "fraction": min(1.0, done_units / budget) if budget else 0.0,
            "finished": n_fin,
            "complete": len(complete),
            "pruned": sum(t.state == TrialState.PRUNED for t in finished),
            "failed": sum(t.state == TrialState.FAIL for t in finished),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "since_improvement": done_units if mode == "convergence" else None,
            "best_value": None if best is None else best.value,
            "best_trial": None if best is None else best.number,
            "best_params": {} if best is None else {**self.run_config.fixed_params, **best.params},
            "elapsed": elapsed,
            "trials_per_second": rate,
            "eta_seconds": eta,
            "workers": [
                {"id": w.worker_id, "pid": w.pid, "alive": w.alive(), "exitcode": w.exitcode,
                 "trials": counts.get(w.worker_id, 0)}
                for w in self._workers
            ],
            "finished_run": self._done.is_set(),
        }
        with self._lock:
            self._progress = progress
        return progress

    def progress(self) -> dict[str, Any]:
        """Latest progress snapshot: finished/budget, best value and params, rate, ETA, worker states."""
        with self._lock:
            if self._progress:
                return dict(self._progress)
        return self._refresh_progress()

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (an in-memory copy once a temporary journal has been removed)."""
        return self._final_study if self._final_study is not None else self._study

    # -- control ------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has finished (results ready); KeyboardInterrupt acts like :meth:`stop`."""
        try:
            finished = self._done.wait(timeout)
        except KeyboardInterrupt:
            self.stop()
            return True
        if finished and self.error is not None:
            raise self.error
        return finished

    def stop(self) -> None:
        """Stop all workers (within ~5 s), keep what was computed, and finish the run."""
        if self._done.is_set():
            return
        self._stop_reason = self._stop_reason or "stopped by user"
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
            self._terminate_workers()
            self._fail_orphaned_trials()
            self._refresh_progress()
            self._collect_results()
            sync_journal(self.location)
            self._write_outputs()
            if self._is_temporary_storage():
                self._final_study = _in_memory_copy(self.study_name, self._storage)
        except BaseException as exc:
            self.error = self.error or exc
            log.exception("finishing the run failed")
        finally:
            self._cleanup()
            with self._lock:
                if self._progress:
                    self._progress["finished_run"] = True
            self._done.set()

    def _fail_orphaned_trials(self) -> None:
        """Mark FAIL the RUNNING trials whose worker process is dead (never a live worker's trial)."""
        if kind_of(self.location) == "rdb":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self._study)
        local_pids = {w.pid for w in self._workers if not w.alive()}
        here = host_id()
        for t in self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get(OWNER_ATTR)
            if owner is None:
                dead = kind_of(self.location) == "journal" and not any(w.alive() for w in self._workers)
                why = "its worker ended before recording itself"
            else:
                dead = owner.get("host") == here and (owner.get("pid") in local_pids or not pid_alive(owner["pid"]))
                why = f"worker {owner.get('worker')} (pid {owner.get('pid')}) ended during this trial"
            if dead:
                self._storage.set_trial_user_attr(t._trial_id, ERROR_ATTR, why)
                self._study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)

    def _collect_results(self) -> None:
        trials = self._storage.get_all_trials(self._study_id, deepcopy=False)
        fixed = self.run_config.fixed_params
        results: list[OptimizationResult] = []
        for t in trials:
            if t.state not in FINISHED_STATES:
                continue
            owner = t.user_attrs.get(OWNER_ATTR) or {}
            results.append(OptimizationResult(
                trial_number=t.number,
                state=t.state.name,
                params={**fixed, **t.params},
                metrics=dict(t.user_attrs.get(METRICS_ATTR) or {}),
                objective=t.value if t.state == TrialState.COMPLETE else None,
                score=None,
                worker=owner.get("worker"),
                error=t.user_attrs.get(ERROR_ATTR),
                prune_reason=t.user_attrs.get(PRUNE_REASON_ATTR),
                run_id=owner.get("run"),
                run=self,
            ))
        complete = [r for r in results if r.state == "COMPLETE" and r.metrics]
        for r, s in zip(complete, score_all([r.metrics for r in complete], self.score_config)):
            r.score = s
        min_score = self.score_config.min_score
        if min_score is not None:
            results = [r for r in results if r.score is None or r.score >= min_score]
        self.results = sort_results(results, self.metric, self.direction)
        self._build_summary(trials)

    def _build_summary(self, trials: list[FrozenTrial]) -> None:
        first = self.run_config.first_trial_number
        run_trials = [t for t in trials if t.number >= first and t.state in FINISHED_STATES]
        elapsed = time.time() - self._started
        best = self.results[0] if self.results and self.results[0].state == "COMPLETE" else None
        workers = []
        statuses = self._storage.get_study_user_attrs(self._study_id)
        prefix = f"{WORKER_STATUS_PREFIX}{self.run_id}."
        for w in self._workers:
            status = statuses.get(prefix + str(w.worker_id), {})
            workers.append({
                "id": w.worker_id, "pid": w.pid, "exitcode": w.exitcode,
                "trials": status.get("trials"), "failed": status.get("failed"),
                "last_error": status.get("last_error") or (w.error.strip().splitlines()[-1] if w.error else None),
                "traceback": status.get("traceback") or w.error,
            })
        failed_workers = [w for w in workers if w["exitcode"] not in (0, None)]
        n_complete = sum(t.state == TrialState.COMPLETE for t in run_trials)
        self.summary = {
            "method": "optuna",
            "study_name": self.study_name,
            "strategy": self.strategy.id,
            "target": self.config.target,
            "direction": self.direction,
            "budget_mode": self.config.budget_mode,
            "total_trials": len(run_trials),
            "completed_trials": n_complete,
            "pruned_trials": sum(t.state == TrialState.PRUNED for t in run_trials),
            "failed_trials": sum(t.state == TrialState.FAIL for t in run_trials),
            "study_trials": sum(t.state in FINISHED_STATES for t in trials),
            "best_trial_number": None if best is None else best.trial_number,
            "best_value": None if best is None else (best.score if self.metric == "score" else best.objective),
            "best_objective": None if best is None else best.objective,
            "best_params": {} if best is None else best.params,
            "optimization_time_seconds": elapsed,
            "trials_per_second": len(run_trials) / elapsed if elapsed > 0 else 0.0,
            "workers": max(1, self.opt.worker_processes) if self._workers else 0,
            "worker_reports": workers,
            "storage": None if self._is_temporary_storage() else redact(self.location),
            "multiprocess_mode": self.opt.worker_processes > 1,
            "start_method": self.opt.start_method if self.opt.worker_processes > 1 else None,
            "sampler": self.config.sampler,
            "stop_reason": self._stop_reason or self._natural_stop_reason(len(run_trials)),
        }
        if self._workers and len(failed_workers) == len(self._workers) and n_complete == 0:
            first_tb = next((w["traceback"] for w in failed_workers if w["traceback"]), None)
            raise OptimizationError(
                f"every worker failed ({', '.join('worker %s: exit %s' % (w['id'], w['exitcode']) for w in failed_workers)}); "
                f"first traceback:\n{first_tb or NO_TRACEBACK_HINT}"
            )
        if run_trials and n_complete == 0 and all(t.state == TrialState.FAIL for t in run_trials):
            first_fail = next(t for t in run_trials if t.state == TrialState.FAIL)
            raise OptimizationError(
                f"all {len(run_trials)} trials failed; first failure (trial {first_fail.number}): "
                f"{first_fail.user_attrs.get(ERROR_ATTR)}\n{first_fail.user_attrs.get(TRACEBACK_ATTR, '')}"
            )

    def _natural_stop_reason(self, n_finished: int) -> str:
        if self.config.budget_mode == "trials" and n_finished < (self.config.n_trials or 0):
            return "workers ended before the budget was reached (see worker_reports)"
        return "budget reached"

    def _is_temporary_storage(self) -> bool:
        path = journal_path(self.location)
        return path is not None and os.path.dirname(path) == self._tmpdir

    def _write_outputs(self) -> None:
        if self.run_dir is None:
            return
        import json

        self.results_frame().to_csv(self.run_dir / "results.csv", index=False)
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str))

    def _cleanup(self) -> None:
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- results ------------------------------------------------------------
    def results_frame(self) -> pd.DataFrame:
        """Results as a table, the target first, then score, parameters and every metric."""
        return results_frame(self.results, self.metric)

    @property
    def best(self) -> OptimizationResult | None:
        complete = [r for r in self.results if r.state == "COMPLETE"]
        return complete[0] if complete else None

    def backtest(self, result: OptimizationResult):
        """Full backtest (trades, curves) of one result's parameters on the run's window."""
        assert self._prepared is not None
        return Backtester(self.strategy, self._prepared).result(result.params)


def sort_results(results: Iterable[OptimizationResult], metric: str, direction: str) -> list[OptimizationResult]:
    """COMPLETE first, best target first (post-hoc score for the score target), then PRUNED, then FAIL."""
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    sign = -1.0 if direction == "maximize" else 1.0

    def key(r: OptimizationResult) -> tuple[int, float, int]:
        value = r.score if metric == "score" else r.objective
        if value is None and r.metrics.get(metric) is not None:
            value = r.metrics[metric]
        v = sign * value if value is not None and math.isfinite(value) else math.inf
        return order.get(r.state, 3), v, r.trial_number

    return sorted(results, key=key)


def results_frame(results: list[OptimizationResult], metric: str) -> pd.DataFrame:
    rows = []
    for r in results:
        row: dict[str, Any] = {"trial": r.trial_number, "state": r.state, "objective": r.objective, "score": r.score}
        if metric != "score":
            row[metric] = r.metrics.get(metric)
        row.update(r.params)
        row.update({k: r.metrics.get(k) for k in METRIC_NAMES if k != metric})
        row["objective_score"] = r.metrics.get("score")
        row["worker"] = r.worker
        row["note"] = r.error or r.prune_reason
        rows.append(row)
    return pd.DataFrame(rows)


def _in_memory_copy(study_name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Keep the study usable (plots, analysis) after its temporary journal is deleted."""
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=study_name, from_storage=storage, to_storage=memory)
    return optuna.load_study(study_name=study_name, storage=memory)


def start_optimization(opt: OptimizationConfig, cfg: OptunaConfig | None = None) -> OptimizationRun:
    """Validate, create the study and start the workers; returns at once with a handle."""
    run = OptimizationRun(opt, cfg or OptunaConfig())
    run._start()
    return run


def optimize(opt: OptimizationConfig, cfg: OptunaConfig | None = None) -> OptimizationRun:
    """Run an optimisation to the end (blocking) and return the finished run."""
    run = OptimizationRun(opt, cfg or OptunaConfig())
    if opt.worker_processes == 1:
        run._run_inline()
        if run.error is not None:
            raise run.error
        return run
    run._start()
    run.wait()
    return run
