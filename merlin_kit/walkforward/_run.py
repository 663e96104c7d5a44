"""A walk-forward analysis in progress: :class:`WalkForwardRun`, :func:`start_walk_forward`, :func:`walk_forward`.

The analysis runs in one background thread: window by window, the window's
optimisation (an :class:`~merlin_kit.optimize.OptimizationRun` on the IS
window, its study in the analysis's storage), then the OOS backtest of its
choice (:meth:`~._runner.WalkForwardPlan.window_result`).  The handle shows
progress, stops, waits and returns the result.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..optimize import Progress, close_storage, open_cluster_client, open_storage, redact, start_optimization
from ._runner import (
    STOPPED_REASONS, WINDOW_ATTR, WalkForwardPlan, WalkForwardResult, WindowResult, _finished_record,
    _journal_exists_or_server,
    _json_default, plan_walk_forward,
)
from ._windows import Window

#: the stop reason of a walk-forward stopped by :meth:`WalkForwardRun.stop` without a reason
STOPPED_BY_USER = "stopped by user"


@dataclass(frozen=True)
class WalkForwardProgress:
    """Where a walk-forward analysis stands."""

    #: 1-based number of the window being optimised, or None (between windows, or finished)
    window: int | None
    total_windows: int
    #: windows finished (optimised or reused, and backtested on their OOS window)
    windows_done: int
    #: the current window's optimisation progress, or None
    current: Progress | None
    finished: list[WindowResult] = field(default_factory=list)
    #: seconds since the analysis started
    elapsed: float = 0.0


class WalkForwardRun:
    """A running (or finished) walk-forward analysis: progress, stop, wait, result.

    Made by :func:`start_walk_forward`; every configuration error is raised
    there, before anything starts.
    """

    def __init__(self, plan: WalkForwardPlan, on_window: Callable[[int, int, Any], None] | None = None,
                 cluster: Any = None) -> None:
        self._plan = plan
        #: cluster=: each window submits its kit workers as Dask tasks (no chain: the Dask workers stay warm)
        self._cluster = cluster
        self._owns_cluster = False  # a client made from an address: closed when the analysis ends
        self._on_window = on_window
        self._started = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._done = threading.Event()
        self._finished: list[WindowResult] = []
        self._current: Any = None
        self._current_window: int | None = None
        self._result: WalkForwardResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="merlin-walkforward")

    # -- public -----------------------------------------------------------------
    @property
    def windows(self) -> list[Window]:
        """The windows of the split (:func:`~merlin_kit.walkforward.split_windows`)."""
        return list(self._plan.windows)

    @property
    def plan(self) -> WalkForwardPlan:
        return self._plan

    def progress(self) -> WalkForwardProgress:
        with self._lock:
            run, number, finished = self._current, self._current_window, list(self._finished)
        return WalkForwardProgress(
            window=number, total_windows=len(self._plan.windows), windows_done=len(finished),
            current=None if run is None else run.progress(), finished=finished, elapsed=time.time() - self._started)

    def stop(self, reason: str | None = None) -> None:
        """Stop the current window's optimisation promptly; no further window starts.

        The finished windows are kept (in the storage, for a resume, and in :meth:`result`).
        """
        if self._done.is_set():
            return
        with self._lock:
            self._stop_reason = self._stop_reason or reason or STOPPED_BY_USER
            self._stop.set()
            run = self._current
        if run is not None:
            run.stop(self._stop_reason)
        self._done.wait(30)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the analysis has finished (or stopped); True when it has."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def result(self) -> WalkForwardResult:
        """The result (waits for it): after a stop, the finished windows with ``summary["complete"] = False``."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    # -- the analysis -----------------------------------------------------------
    def _start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        plan = self._plan
        storage = None
        waiting: Any = None  # the run whose worker processes wait for the next window (see start_optimization)
        pending: tuple[Any, ...] | None = None  # a window optimised, its OOS backtest not done yet
        try:
            if _journal_exists_or_server(plan.storage_url):
                storage = open_storage(plan.storage_url, heartbeat=False)
            keys = {w.number: plan.key(w) for w in plan.windows}
            records = {w.number: _finished_record(storage, plan.study_name(w), keys[w.number]) for w in plan.windows}
            to_run = [w.number for w in plan.windows if records[w.number] is None and w.is_bars > 0]
            for w in plan.windows:
                if self._stop.is_set():
                    break
                t_w = time.time()
                record = records[w.number]
                if w.number not in to_run:
                    if pending is not None:
                        self._emit(*pending)
                        pending = None
                    reused = record is not None
                    self._emit(w, record or plan.record(keys[w.number], None), None, reused, time.time() - t_w)
                    continue
                more = any(n > w.number for n in to_run) and self._cluster is None
                run = self._start_window(w, keep_workers=more, workers_from=waiting)
                if run is None:
                    break
                waiting = run if more else None
                if pending is not None:  # the previous window's OOS backtest while this window's trials run
                    self._emit(*pending)
                    pending = None
                run.wait()
                with self._lock:
                    self._current, self._current_window = None, None
                if self._stopped_during(run):
                    break
                record = plan.record(keys[w.number], run)
                if plan.complete(run):
                    if storage is None:
                        storage = open_storage(plan.storage_url, heartbeat=False)
                    storage.set_study_user_attr(storage.get_study_id_from_name(plan.study_name(w)), WINDOW_ATTR,
                                                json.loads(json.dumps(record, default=_json_default)))
                pending = (w, record, run, False, time.time() - t_w)
            if pending is not None:
                self._emit(*pending)
            with self._lock:
                stop_reason = self._stop_reason if self._stop.is_set() else None
                finished = list(self._finished)
            if stop_reason is not None and len(finished) == len(plan.windows):
                stop_reason = None  # stopped after the last window: nothing is missing
            self._result = plan.result(finished, seconds=time.time() - self._started, stop_reason=stop_reason)
        except BaseException as exc:
            self._error = exc
        finally:
            if waiting is not None:  # stopped or failed before the next window took its workers
                waiting.end_chain()
            if storage is not None:
                close_storage(storage)
            if self._owns_cluster:
                self._cluster.close()
            with self._lock:
                self._current, self._current_window = None, None
            self._done.set()

    def _emit(self, w: Window, record: dict[str, Any], run: Any, reused: bool, seconds: float) -> None:
        """A window is finished: its OOS backtest, its record among the results, ``on_window``.

        ``seconds``: the time the window took before its OOS backtest (its optimisation).
        """
        t_oos = time.time()
        result = self._plan.window_result(w, record, run=run, reused=reused, seconds=seconds)
        result.seconds += time.time() - t_oos
        with self._lock:
            self._finished.append(result)
        if self._on_window is not None:
            self._on_window(w.number, len(self._plan.windows), run)

    def _start_window(self, w: Window, *, keep_workers: bool, workers_from: Any) -> Any:
        """Start the window's optimisation (on the previous window's worker processes when there are some)."""
        opt, cfg = self._plan.window_configs(w)
        with self._lock:
            if self._stop.is_set():
                return None
            run = start_optimization(opt, cfg, keep_workers=keep_workers, workers_from=workers_from,
                                     cluster=self._cluster)
            self._current, self._current_window = run, w.number
        return run

    def _stopped_during(self, run: Any) -> bool:
        """Whether the window's optimisation was stopped (by :meth:`stop`, Ctrl-C in its worker, ...)."""
        reason = None if run.summary is None else run.summary.stop_reason
        if not self._stop.is_set() and reason not in STOPPED_REASONS:
            return False
        with self._lock:
            self._stop.set()
            self._stop_reason = self._stop_reason or reason or STOPPED_BY_USER
        return True


def start_walk_forward(opt: Any, cfg: Any = None, *, is_days: int, oos_days: int, anchored: bool = False,
                       start: Any = None, end: Any = None,
                       on_window: Callable[[int, int, Any], None] | None = None,
                       cluster: Any = None) -> WalkForwardRun:
    """Start a walk-forward analysis and return at once with its :class:`WalkForwardRun`.

    Same arguments as :func:`walk_forward`; every configuration error
    (:class:`~merlin_kit.errors.ConfigError`) is raised here, before anything starts.
    """
    plan = plan_walk_forward(opt, cfg, is_days=is_days, oos_days=oos_days, anchored=anchored, start=start, end=end)
    owned = False
    if cluster is not None and not hasattr(cluster, "submit"):  # an address or a cluster: one client for all windows
        cluster, owned = open_cluster_client(cluster)
    run = WalkForwardRun(plan, on_window, cluster)
    run._owns_cluster = owned
    run._start()
    return run


def walk_forward(opt: Any, cfg: Any = None, *, is_days: int, oos_days: int, anchored: bool = False,
                 start: Any = None, end: Any = None,
                 on_window: Callable[[int, int, Any], None] | None = None, cluster: Any = None) -> WalkForwardResult:
    """Walk-forward analysis of ``opt`` / ``cfg`` (spec VALIDATION.md: windows, "Per window", "Stitched").

    ``opt`` (:class:`~merlin_kit.optimize.OptimizationConfig`) and ``cfg``
    (:class:`~merlin_kit.optimize.OptunaConfig`) are those of a plain
    optimisation; ``opt.start``/``opt.end`` (or ``start``/``end`` here, which
    win) bound the whole analysis, and each window's optimisation gets the IS
    window as its start/end.  The data is loaded once; the windows are split
    from the whole file (:func:`split_windows`).

    Per window ``k``: one optimisation (:class:`~merlin_kit.optimize.OptimizationRun`) on the IS window
    with study name ``<base>-wKK`` (``base`` = ``cfg.study_name``, default
    ``<strategy>-<is_days>d-<oos_days>d`` plus ``-anchored``); its best
    completed trial by the target (``run.best``) is backtested on the OOS
    window with ``opt.warmup_bars`` warm-up bars taken from the whole file.  No
    completed trial (or no OOS bar): the window is flat (0 %, no trades) and
    says so.  ``on_window(number, total, run)`` is called after each window
    (``run`` is ``None`` for a reused window).

    Files: every window's study lives in ONE storage, ``cfg.storage`` or the
    journal ``walkforward.journal`` in the output folder (``cfg.output_dir``,
    default ``./merlin_runs/<base>-wf``), so optuna-dashboard shows the
    analysis window by window; each window's results.csv / summary.json go to
    ``<folder>/windows/wKK``; windows.csv, oos_trades.csv, stitched_equity.csv
    and summary.json go to the folder at the end.

    Resume: when a window's optimisation ends with its whole budget, the study
    gets the attr ``merlin.walkforward.window`` (its chosen parameters, IS
    metrics, trial count and a key of everything that decides its trials: data
    fingerprint of the IS window, dates, strategy, search space, fixed
    parameters, target, filters, score settings, budget, sampler, pruner and
    seed; not the number of workers).  Calling ``walk_forward`` again with the
    same settings and storage (the same output folder) takes such windows from
    their studies without running a trial and only recomputes their OOS
    backtests; windows that did not finish (Ctrl-C, a crash) are run again in
    the same study, whose earlier trials count towards the window's choice
    (optimize()'s resume).  Changing the budget or the sampler runs every
    window again in its study (its best is then over all of the study's
    trials); changing what the trials mean (data, dates, search space, target,
    ...) is refused by optimize() naming the differences: use another
    ``study_name`` or output folder.

    Processes: the worker processes (``opt.worker_processes``) are started
    once, with the first window that runs, and go on from window to window
    (``start_optimization(keep_workers=..., workers_from=...)``, see
    ``merlin_kit.optimize._chain``): when a window's budget is spent they load
    the next window's configuration and data from its study, so a short window
    pays no process start-up.  Each window is still an ordinary optimisation
    with the exact trial budget, the time budget (measured from the window's
    start), convergence, Stop and dead-worker handling of a plain one; a dead
    worker is not replaced (the next windows run on the survivors; new
    processes only if none survives).  ``merlin-kit worker --study <any
    window's study>`` on another machine follows the windows the same way.
    With ``worker_processes=1`` each window's trials run in a thread of this
    process.  ``cluster`` (a ``distributed.Client`` or a scheduler address):
    each window's workers are Dask tasks instead (``start_optimization(cluster=)``;
    a new set per window, on the cluster's already warm workers).  Ctrl-C stops the current window and raises KeyboardInterrupt
    (finished windows are kept for a resume); :func:`start_walk_forward`
    returns a :class:`WalkForwardRun` handle instead of blocking.

    WFE (spec): annualised mean OOS net profit ÷ annualised mean IS net profit
    × 100, annualised = mean % × 365 ÷ ``oos_days`` / ``is_days`` (``is_days``
    also in anchored mode, as the spec says, although anchored IS windows grow);
    a flat window counts 0 % in both means.
"""
    run = start_walk_forward(opt, cfg, is_days=is_days, oos_days=oos_days, anchored=anchored, start=start, end=end,
                             on_window=on_window, cluster=cluster)
    try:
        while not run.wait(0.5):
            pass
    except KeyboardInterrupt:
        run.stop("interrupted")
        done = run.progress()
        raise KeyboardInterrupt(
            f"walk-forward interrupted in window {done.windows_done + 1} of {done.total_windows}; the finished "
            f"windows are kept in {redact(run.plan.storage_url)}: run it again with the same settings and folder "
            "to resume") from None
    result = run.result()
    if run.stopped and not result.summary["complete"]:
        raise KeyboardInterrupt(
            f"walk-forward {result.summary['stop_reason']} in window {len(result.windows) + 1} of "
            f"{len(run.windows)}; the finished windows are kept in {redact(run.plan.storage_url)}: run it again "
            "with the same settings and folder to resume")
    return result
