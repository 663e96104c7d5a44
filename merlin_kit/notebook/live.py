"""Live monitor of a running optimisation: progress, workers, and plotly charts updated in place.

:class:`LiveMonitor` reads the run's study storage from a daemon thread at most
once per ``interval`` (1 s) and updates ipywidgets and ``go.FigureWidget``
charts; widget state changes made from a thread are sent to the frontend as
comm messages at once, so the charts move while the kernel is idle (or busy
with something else).  When the run ends it adds the best trial's equity and
drawdown with its trades, the parameter importances and the results table.

Without a frontend (papermill, nbclient, a script) :func:`monitor` waits for
the run and displays static figures instead of widgets: a FigureWidget saves
~5 MB of state into an executed notebook.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from typing import Any, Callable

import ipywidgets as W
import plotly.graph_objects as go
from optuna.trial import TrialState

from ..optimize import Progress, WorkerProgress
from ..optimize.report import (
    fmt_seconds, fmt_value, progress_text, results_table, summary_lines, target_column, trial_error,
)
from . import figures
from ._lifecycle import claim_cell
from .pareto import pareto_figure, run_pareto_points, update_pareto_widget
from ._refresh import RefreshLoop
from .results import run_figures, show_static

log = logging.getLogger("merlin_kit.notebook")


def prewarm() -> None:
    """Import what FigureWidget and plotly's renderers need now, before worker processes compete for the CPU.

    (plotly.io imports nbformat -> jsonschema -> rfc3987_syntax, which builds a grammar: ~3 s idle,
    far longer on a machine whose cores are busy with workers.)
    """
    try:
        import plotly.io as pio

        pio.templates["plotly_white"]
        import plotly.basewidget  # noqa: F401
    except ImportError:  # anywidget missing: FigureWidget says so when used
        pass

#: environment override of frontend detection: "1" forces live widgets, "0" static output
LIVE_ENV = "MERLIN_KIT_LIVE"
#: trial states the monitor reads (never the WAITING queue of a trials budget)
_SHOWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
#: the monitor never refreshes more often than this (seconds)
MIN_INTERVAL = 1.0


def has_frontend() -> bool:
    """Whether widgets shown now would be rendered and updated by a live frontend (JupyterLab, Notebook 7).

    ``MERLIN_KIT_LIVE=1``/``0`` decides when set.  Otherwise: only inside an IPython
    kernel, and only when a widget frontend has connected to it (its widget manager opened
    the ``jupyter.widget.control`` comm), the current request is a widget event (a button
    click), or it came from a notebook frontend (JupyterLab sends cell metadata with an
    execute request; papermill and nbclient send none).
    """
    env = os.environ.get(LIVE_ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    if getattr(W.Widget, "_control_comm", None) is not None:
        return True
    try:
        parent = shell.get_parent() if hasattr(shell, "get_parent") else shell.kernel.get_parent()
    except Exception:
        return False
    parent = parent or {}
    if (parent.get("header") or {}).get("msg_type") in ("comm_msg", "comm_open"):
        return True  # called from a widget event (a button click): a frontend sent it
    metadata = parent.get("metadata") or {}
    return any(k in metadata for k in ("cellId", "deletedCells", "recordTiming"))


def chart_interval(n_trials: int) -> float:
    """Seconds between chart redraws: every second for small studies, less often for big ones
    (a browser redrawing thousands of markers and lines every second starves the machine)."""
    if n_trials < 500:
        return MIN_INTERVAL
    if n_trials < 2000:
        return 2.0
    return 5.0


class LiveMonitor(RefreshLoop):
    """Progress, best value, rate, ETA, workers and live charts of one run (see the module doc).

    ``live=False`` builds no widgets: :meth:`show` waits and displays static figures.
    ``on_finish(monitor)`` is called (from the monitor thread) once the final state is shown.
    """

    what = "live monitor"

    def __init__(self, run: Any, *, live: bool = True, interval: float = MIN_INTERVAL,
                 on_finish: Callable[["LiveMonitor"], None] | None = None, final: bool = True,
                 start: bool = True) -> None:
        self.run = run
        self.live = live
        self.interval = max(MIN_INTERVAL, float(interval))
        self.on_finish = on_finish
        self.final = final
        self.updates = 0
        self.error: str | None = None
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._n_charted = -1
        self._charted_at = 0.0
        self._displayed = False
        self.figures: dict[str, Any] = {}
        if live:
            claim_cell(self)  # a re-run of the cell closes the monitor it showed before
            self._build()
            if start:
                self.start()

    # -- widgets ---------------------------------------------------------------
    def _build(self) -> None:
        run = self.run
        metric = target_column(run)
        self.title = W.HTML(f"<b>{html.escape(str(run.study_name))}</b> — {html.escape(run.strategy.id)}, "
                            f"target <b>{html.escape(metric)}</b> ({run.direction})")
        self.status = W.HTML("starting…")
        self.progress_bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress",
                                            bar_style="info", layout=W.Layout(width="60%"))
        self.progress_label = W.HTML("")
        self.best_label = W.HTML("best: —")
        self.rate_label = W.HTML("")
        self.workers_label = W.HTML("")
        self.errors_label = W.HTML("", layout=W.Layout(display="none"))
        self.history = go.FigureWidget(figures.history_figure((), run.direction, metric))
        self.parallel = go.FigureWidget(figures.parallel_figure((), run.space, metric, run.direction))
        self.final_box = W.VBox([])
        self.figures = {"history": self.history, "parallel": self.parallel}
        # several objectives: the Pareto front (scatter, or parallel coordinates beyond two) comes first
        self.pareto = (go.FigureWidget(pareto_figure([], run.objectives)) if len(run.objectives) > 1 else None)
        if self.pareto is not None:
            self.figures = {"pareto": self.pareto, **self.figures}
        for fw in self.figures.values():
            fw.layout.autosize = True
        self.widget = W.VBox([
            self.title,
            W.HBox([self.progress_bar, self.progress_label]),
            self.status, self.best_label, self.rate_label, self.workers_label, self.errors_label,
            *self.figures.values(), self.final_box,
        ], layout=W.Layout(width="100%"))
        self.widget.add_class("merlin-live-monitor")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self._displayed is not False and self._displayed == _execution_count():
            return  # already shown by monitor() in this cell
        self._displayed = _execution_count()
        if self.live:
            display(self.widget)
        else:
            self.show()

    # -- thread (RefreshLoop) ---------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._start_thread("merlin-live-monitor")

    def _refresh(self) -> None:
        self.update()

    def _finish(self) -> None:
        if not self._halt.is_set() and self.final:
            self.show_final()

    def _show_error(self, line: str) -> None:
        self._show_errors([f"monitor error: {line}"])

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run has ended and the final state is shown."""
        if not self.live:
            return self.run.wait(timeout)
        return super().wait(timeout)

    # -- updates ---------------------------------------------------------------
    def _trials(self) -> list[Any]:
        try:
            return self.run.run_trials(_SHOWN_STATES)
        except Exception:  # a temporary journal removed at the end of the run; the next tick reads the copy
            return []

    def update(self) -> None:
        """One refresh from the storage (called by the thread; callable by hand)."""
        run = self.run
        p = run.progress()
        self.updates += 1
        self.progress_bar.value = p.fraction
        self.progress_label.value = f"<b>{html.escape(progress_text(p))}</b>"
        if p.best_value is None:
            self.best_label.value = "best: —"
        else:
            names = {d.name for d in run.space}
            params = ", ".join(f"{k}={fmt_value(v)}" for k, v in p.best_params.items() if k in names)
            self.best_label.value = (f"best objective <b>{p.best_value:.6g}</b> (trial {p.best_trial})"
                                     f"<br><span style='font-size:90%'>{html.escape(params)}</span>")
        self.rate_label.value = (
            f"{p.trials_per_second:.1f} trials/s · elapsed {fmt_seconds(p.elapsed)}"
            + ("" if p.eta_seconds is None or run.done else f" · ETA {fmt_seconds(p.eta_seconds)}")
            + f" · {p.complete} complete, {p.pruned} pruned, {p.failed} failed, {p.running} running"
        )
        self.workers_label.value = self._workers_html(p.workers)
        trials = self._trials()
        self._show_errors(self._error_lines(p, trials))
        if run.done:
            self.status.value = "finished" if not run.error else "<span style='color:#b00'>failed</span>"
        else:
            self.status.value = "running…"
        n_finished = sum(getattr(t.state, "name", "") in ("COMPLETE", "PRUNED", "FAIL") for t in trials)
        now = time.monotonic()
        if n_finished != self._n_charted and now - self._charted_at >= chart_interval(n_finished):
            self._n_charted = n_finished
            self._charted_at = now
            self._update_charts(trials)

    def _update_charts(self, trials: list[Any]) -> None:
        if self.pareto is not None:
            update_pareto_widget(self.pareto, run_pareto_points(self.run, trials), self.run.objectives)
        numbers, values, best = figures.history_data(trials, self.run.direction)
        with self.history.batch_update():
            self.history.data[0].x = numbers
            self.history.data[0].y = values
            self.history.data[1].x = numbers
            self.history.data[1].y = best
        shown = figures.parallel_sample(trials, self.run.direction)
        dims, colour = figures.parallel_dimensions(shown, self.run.space, target_column(self.run))
        with self.parallel.batch_update():
            self.parallel.data[0].dimensions = dims
            self.parallel.data[0].line.color = colour
            self.parallel.layout.title.text = figures.parallel_title(len(shown), len(values))

    @staticmethod
    def _workers_html(workers: list[WorkerProgress]) -> str:
        if not workers:
            return ""
        cells = []
        for w in workers:
            if w.alive:
                state, color = "running", "#2a7"
            elif w.exitcode in (0, None):
                state, color = "done", "#777"
            else:
                state, color = f"exit {w.exitcode}", "#b00"
            where = html.escape(w.address) if w.address else f"pid {w.pid}"  # a Dask worker: its address
            cells.append(f"<span style='margin-right:1em'>worker {w.id} ({where}): "
                         f"<b style='color:{color}'>{state}</b>, {w.trials} trials</span>")
        return "Workers: " + "".join(cells)

    def _error_lines(self, p: Progress, trials: list[Any]) -> list[str]:
        lines = []
        for w in p.workers:
            if not w.alive and w.exitcode not in (0, None):
                lines.append(f"worker {w.id} ({w.address or f'pid {w.pid}'}) exited with code {w.exitcode}")
        failed = [t for t in trials if getattr(t.state, "name", "") == "FAIL"]
        if failed:
            last = failed[-1]
            lines.append(f"{len(failed)} failed trial(s); last (trial {last.number}): "
                         f"{trial_error(last) or 'no message recorded'}")
        lines.extend(p.worker_errors)
        summary = self.run.summary
        if summary is not None:
            for w in summary.worker_reports:
                if w.last_error and w.exitcode not in (0, None):
                    line = f"worker {w.id}: {w.last_error}"
                    if line not in lines:
                        lines.append(line)
        if self.run.done and self.run.error is not None:
            lines.append(f"run failed: {type(self.run.error).__name__}: {self.run.error}")
        return lines

    def _show_errors(self, lines: list[str]) -> None:
        if not lines:
            self.errors_label.layout.display = "none"
            return
        self.errors_label.value = ("<div style='color:#b00;white-space:pre-wrap'>"
                                   + "<br>".join(html.escape(x) for x in lines) + "</div>")
        self.errors_label.layout.display = None

    # -- final state -----------------------------------------------------------
    def show_final(self) -> None:
        """Final widgets: summary, best equity/drawdown with trades, importances, results table.

        What takes long (the best trial's backtest, the importances) is computed first; the widgets
        are made only if the monitor is still open then (a re-run of its cell may have closed it).
        """
        run = self.run
        p = run.progress()
        best = run.best
        equity: Any = None
        if best is not None:
            try:
                equity = figures.equity_figure(best.backtest(),
                                               title=f"Best trial {best.trial_number}: equity and drawdown")
            except Exception as exc:
                equity = exc
        imp, note = figures.param_importances(run.study)
        importance = figures.importance_figure(imp, note)
        trials = self._trials()
        with self._widgets() as open_:
            if open_:
                self._show_final(p, equity, importance, trials)

    def _show_final(self, p: Progress, equity: Any, importance: Any, trials: list[Any]) -> None:
        run = self.run
        self.progress_bar.value = p.fraction
        reason = run.summary.stop_reason if run.summary is not None else ""
        stopped = "stop" in reason and "budget" not in reason
        self.progress_bar.bar_style = "danger" if run.error else ("warning" if stopped else "success")
        children: list[Any] = []
        if isinstance(equity, Exception):
            children.append(W.HTML(f"<span style='color:#b00'>best-trial backtest failed: {html.escape(str(equity))}</span>"))
        elif equity is not None:
            self.equity = go.FigureWidget(equity)
            self.figures["equity"] = self.equity
            children.append(self.equity)
        self.importance = go.FigureWidget(importance)
        self.figures["importance"] = self.importance
        children.append(self.importance)
        children.append(self._results_widget())
        self.final_box.children = tuple(children)
        self._update_charts(trials)
        # last: "Finished" says that everything below is in place
        self.status.value = ("<b>Finished</b>: " + "<br>".join(html.escape(x) for x in summary_lines(run))
                             if run.summary is not None else "<b>Finished</b>")

    def _results_widget(self) -> W.Widget:
        table = results_table(self.run)
        if table.empty:
            return W.HTML("No finished trials.")
        sort = W.Dropdown(options=list(table.columns), value=table.columns[0], description="Sort by",
                          layout=W.Layout(width="320px"))
        order = W.ToggleButtons(options=[("best first", "best"), ("ascending", "asc"), ("descending", "desc")],
                                value="best", style={"button_width": "90px"})
        rows = W.IntText(value=50, description="Rows", layout=W.Layout(width="160px"))
        out = W.HTML()

        def render(*_: Any) -> None:
            if order.value == "best":
                frame = results_table(self.run, sort_by=sort.value)
            else:
                frame = results_table(self.run, sort_by=sort.value, ascending=order.value == "asc")
            out.value = ("<div style='max-height:420px;overflow:auto'>"
                         + frame.head(max(1, rows.value)).to_html(index=False, float_format=lambda x: f"{x:.6g}",
                                                                  na_rep="", border=0)
                         + "</div>")

        for w in (sort, order, rows):
            w.observe(render, names="value")
        render()
        self.results_sort = sort
        self.results_html = out
        return W.VBox([W.HTML("<b>Results</b>"), W.HBox([sort, order, rows]), out])

    # -- static ----------------------------------------------------------------
    def show(self, progress_every: float = 10.0) -> None:
        """Static mode: wait for the run (a progress line now and then), then display figures and tables."""
        from IPython.display import display

        run = self.run
        last = 0.0
        while not run.wait(0.5):
            now = time.monotonic()
            if now - last >= progress_every:
                last = now
                print(progress_text(run.progress()), flush=True)
        for line in summary_lines(run):
            print(line)
        figs = run_figures(run, top=0)  # (compare_equity(run) draws the top curves on demand)
        self.figures = figs
        for fig in figs.values():
            show_static(fig)
        display(results_table(run, top=20))
        self.finished.set()


def monitor(run: Any, live: bool | None = None, *, display: bool = True, **kwargs: Any) -> LiveMonitor:
    """Watch ``run``: live widgets when a frontend is attached (``live=None`` detects it), else static output.

    Live: returns at once with a :class:`LiveMonitor` (displayed when ``display``).
    Static: waits for the run, then displays the summary, figures and the top results.
    """
    if live is None:
        live = has_frontend()
    mon = LiveMonitor(run, live=live, **kwargs)
    if display:
        from IPython.display import display as _display

        mon._displayed = _execution_count()
        if live:
            _display(mon.widget)
        else:
            mon.show()
    return mon


def _execution_count() -> int | None:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return None if shell is None else int(shell.execution_count)
    except Exception:
        return None


__all__ = ["LiveMonitor", "has_frontend", "monitor", "progress_text"]
