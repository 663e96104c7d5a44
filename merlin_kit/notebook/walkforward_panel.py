"""The panel's walk-forward mode: its inputs, the live view of a running analysis and the final result.

:class:`WalkForwardMode` is the part of :class:`~merlin_kit.notebook.ConfigPanel`
that belongs to walk-forward: the mode selector (Optimise / Walk-forward), the IS
days, OOS days and anchored inputs, their check against the data (the engine's
own :func:`~merlin_kit.walkforward.split_windows`, so "too few days" shows beside
the inputs before anything starts) and the start of the analysis
(:func:`~merlin_kit.walkforward.start_walk_forward`, which does not block).

:class:`WalkForwardView` watches the running analysis from a daemon thread:
the window layout, "window k of N" with the current window's trial progress and
the finished windows so far; at the end (or after Stop: the finished windows) the
windows table, the stitched OOS equity with its windows shaded, IS vs OOS per
window and the stitched metrics.  The figures are those of
:mod:`~merlin_kit.notebook.validation_figures` (the ones 05_validate.ipynb shows).
:func:`show_walkforward` displays the same for a :class:`~merlin_kit.walkforward.WalkForwardResult`
of the blocking :func:`~merlin_kit.walkforward.walk_forward`.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from typing import Any, Callable

import ipywidgets as W
import plotly.graph_objects as go

from ..errors import ConfigError, MerlinError
from ..optimize.report import fmt_seconds, progress_text
from ._lifecycle import claim_cell
from ._refresh import RefreshLoop
from .controls import LABEL_WIDTH, FieldError, _err_html, _show
from .results import show_static
from .validation_figures import is_oos_scatter_figure, stitched_equity_figure, window_layout_figure

log = logging.getLogger("merlin_kit.notebook")

MODES = (("Optimise", "optimize"), ("Walk-forward", "walkforward"))
#: the stitched metrics shown, in order: (key of ``StitchedResult.metrics``, label, format)
STITCHED_METRICS = (("net_profit_pct", "net profit", "{:.2f} %"), ("max_drawdown_pct", "max drawdown", "{:.2f} %"),
                    ("total_trades", "trades", "{:d}"), ("wfe", "WFE", "{:.1f} %"),
                    ("oos_win_rate", "OOS win rate", "{:.1f} %"))
_TABLE_COLUMNS = ("window", "is_start", "oos_start", "oos_end", "is_net_profit_pct", "oos_net_profit_pct",
                  "oos_max_drawdown_pct", "oos_total_trades", "trials", "flat")


class WalkForwardMode:
    """The mode selector and the walk-forward inputs of the panel (see the module doc)."""

    def __init__(self, on_change: Callable[..., None]) -> None:
        label = {"description_width": LABEL_WIDTH}
        self.mode = W.ToggleButtons(options=list(MODES), value="optimize", description="Mode", style=label,
                                    tooltips=["one optimisation of the whole period",
                                              "optimise each in-sample window, trade its best on the next "
                                              "out-of-sample window, stitch the OOS pieces"])
        self.is_days = W.IntText(value=90, description="IS days", style=label, layout=W.Layout(width="230px"))
        self.oos_days = W.IntText(value=30, description="OOS days", style={"description_width": "70px"},
                                  layout=W.Layout(width="150px"))
        self.anchored = W.Checkbox(value=False, description="anchored (every IS window starts at the first)",
                                   indent=False, layout=W.Layout(width="330px"))
        self.error = _err_html()
        self.box = W.VBox([
            W.HBox([self.is_days, self.oos_days, self.anchored]),
            self.error,
            W.HTML("<span style='font-size:90%;color:#555'>calendar days; the next window starts OOS days later; "
                   "the budget below is per window; the data window (start/end) bounds the whole analysis</span>"),
        ])
        self._frames: dict[Any, Any] = {}
        self.interval = 1.0  #: seconds between two refreshes of the view of a run
        self.mode.observe(self._on_mode, names="value")
        for w in (self.is_days, self.oos_days, self.anchored):
            w.observe(on_change, names="value")
        self._on_change: Callable[..., None] = lambda *_: None
        self._on_mode()
        self._on_change = on_change

    @property
    def active(self) -> bool:
        """Whether the panel is in walk-forward mode."""
        return self.mode.value == "walkforward"

    def _on_mode(self, *_: Any) -> None:
        _show(self.box, self.active)
        self._on_change()

    def set(self, *, is_days: int | None = None, oos_days: int | None = None, anchored: bool | None = None,
            active: bool = True) -> None:
        """Switch to walk-forward mode (``active=False``: back to Optimise) with the given inputs."""
        for widget, value in ((self.is_days, is_days), (self.oos_days, oos_days), (self.anchored, anchored)):
            if value is not None:
                widget.value = value
        self.mode.value = "walkforward" if active else "optimize"

    def values(self) -> dict[str, Any]:
        """``is_days``, ``oos_days``, ``anchored``: the keyword arguments of the walk-forward functions."""
        return {"is_days": int(self.is_days.value), "oos_days": int(self.oos_days.value),
                "anchored": bool(self.anchored.value)}

    # -- check ------------------------------------------------------------------
    def _frame(self, data: Any) -> Any:
        """The loaded data, cached per source (a path by its modification time); None when it cannot be read
        (the engine names that problem at Run)."""
        from ..data import load_data

        if isinstance(data, (str, os.PathLike)):
            text = os.fspath(data)
            try:
                key: Any = (text, os.stat(text).st_mtime_ns) if text != "sample" else "sample"
            except OSError:
                return None
        elif isinstance(data, (bytes, bytearray)):
            key = ("bytes", len(data), hash(bytes(data)))
        else:
            key = ("object", id(data))
        if key not in self._frames:
            try:
                frame = load_data(data)
            except (MerlinError, ValueError, OSError):
                return None
            self._frames = {key: frame}  # one source at a time
        return self._frames[key]

    def windows(self, data: Any, start: Any, end: Any) -> list[Any] | None:
        """The windows of the inputs on ``data`` between ``start`` and ``end``; a :class:`FieldError` (on
        ``walkforward``, or ``window`` for a start after the data) when not even one analysis fits."""
        from ..walkforward import split_windows

        frame = self._frame(data)
        if frame is None:
            return None
        try:
            return split_windows(frame, start=start, end=end, **self.values())
        except ConfigError as exc:
            if exc.field in ("start", "end"):
                raise FieldError("window", str(exc)) from None
            if exc.field in ("is_days", "oos_days"):
                raise FieldError("walkforward", f"{exc.field[:-5].upper()} days {exc.reason}") from None
            raise FieldError("walkforward", str(exc)) from None

    def check(self, source: Callable[[], Any], dates: Callable[[], tuple[Any, Any]]) -> None:
        """The panel's check: nothing in Optimise mode or when the data or dates are invalid (their own checks
        say so), else :meth:`windows`."""
        if not self.active:
            return
        try:
            data, (start, end) = source(), dates()
        except FieldError:
            return
        self.windows(data, start, end)

    # -- run --------------------------------------------------------------------
    def start(self, opt: Any, cfg: Any, cluster: Any = None) -> Any:
        """Start the analysis of ``opt``/``cfg`` with the inputs; returns the :class:`WalkForwardRun` at once."""
        from ..walkforward import start_walk_forward

        return start_walk_forward(opt, cfg, cluster=cluster, **self.values())

    def watch(self, run: Any, *, live: bool, on_finish: Callable[[Any], None] | None = None) -> "WalkForwardView":
        return WalkForwardView(run, live=live, interval=self.interval, on_finish=on_finish)


# -- result -----------------------------------------------------------------------
def stitched_text(result: Any) -> str:
    """One line of the stitched metrics (net profit, max drawdown, trades, WFE, OOS win rate)."""
    m = result.stitched.metrics
    parts = []
    for key, label, fmt in STITCHED_METRICS:
        value = m.get(key)
        parts.append(f"{label} {'—' if value is None else fmt.format(int(value) if fmt == '{:d}' else value)}")
    return "Stitched OOS: " + ", ".join(parts)


def windows_table(result: Any) -> Any:
    """The per-window table (:meth:`WalkForwardResult.windows_frame`) with the optimised parameters."""
    return result.windows_frame()


def walkforward_figures(result: Any) -> dict[str, go.Figure]:
    """``{"layout", "stitched", "scatter"}`` figures of a result (empty when no window finished)."""
    if not result.windows:
        return {}
    return {"layout": window_layout_figure([w.window for w in result.windows]),
            "stitched": stitched_equity_figure(result),
            "scatter": is_oos_scatter_figure(result.windows_frame())}


def result_status(result: Any) -> str:
    """"finished: N windows …" or "stopped after k of N windows …" from a result's summary."""
    s = result.summary
    total = s.get("total_windows", s.get("windows", len(result.windows)))
    done = len(result.windows)
    trials = s.get("total_trials", sum(w.trials for w in result.windows))
    if s.get("complete", True):
        return f"finished: {done} windows, {trials} trials"
    reason = s.get("stop_reason") or "stopped"
    return f"{reason}: {done} of {total} windows finished, {trials} trials"


def show_walkforward(result: Any) -> None:
    """Static display of a :class:`~merlin_kit.walkforward.WalkForwardResult` (papermill, a script)."""
    from IPython.display import display

    print(result_status(result))
    if not result.windows:
        return
    print(stitched_text(result))
    display(windows_table(result))
    for fig in walkforward_figures(result).values():
        show_static(fig)


def _table_html(frame: Any) -> str:
    """The windows table as HTML: the main columns (every optimised parameter among them), short UTC times."""
    frame = frame[[c for c in frame.columns if c in _TABLE_COLUMNS or c not in _HIDDEN_COLUMNS]].copy()
    for col in ("is_start", "oos_start", "oos_end"):
        if col in frame:
            frame[col] = frame[col].map(lambda t: t.strftime("%Y-%m-%d %H:%M"))
    return ("<div style='max-height:360px;overflow:auto;max-width:100%'>"
            + frame.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="", border=0) + "</div>")


_HIDDEN_COLUMNS = {"is_end", "is_bars", "oos_bars", "is_max_drawdown_pct", "is_total_trades", "is_sharpe_ratio",
                   "is_target", "oos_sharpe_ratio", "oos_target", "oos_return_pct", "oos_open_at_end",
                   "best_trial", "flat_reason", "reused", "study"}


class WalkForwardView(RefreshLoop):
    """Live view of a :class:`WalkForwardRun` (see the module doc).

    ``live=False`` builds no widgets: a thread waits for the run and calls
    ``on_finish``; :meth:`show` then displays static figures.
    """

    what = "walk-forward view"

    def __init__(self, run: Any, *, live: bool = True, interval: float = 1.0,
                 on_finish: Callable[["WalkForwardView"], None] | None = None) -> None:
        self.run = run
        self.live = live
        self.interval = max(0.2, float(interval))
        self.on_finish = on_finish
        self.updates = 0
        self.result: Any = None
        self.error: str | None = None
        self.figures: dict[str, Any] = {}
        self.finished = threading.Event()
        self._halt = threading.Event()
        if live:
            claim_cell(self)  # a re-run of the cell closes the view it showed before
            self._build()
        self._start_thread("merlin-walkforward-view")

    def _build(self) -> None:
        windows = list(self.run.windows)
        self.title = W.HTML(f"<b>Walk-forward</b>: {len(windows)} windows")
        self.window_label = W.HTML("starting…")
        self.windows_bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Windows", bar_style="info",
                                           layout=W.Layout(width="60%"))
        self.trials_bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Trials", bar_style="info",
                                          layout=W.Layout(width="60%"))
        self.trials_label = W.HTML("")
        self.trials_row = W.HBox([self.trials_bar, self.trials_label])
        self.status = W.HTML("running…")
        self.finished_html = W.HTML("")
        self.layout_figure = go.FigureWidget(window_layout_figure(windows))
        self.figures = {"layout": self.layout_figure}
        self.final_box = W.VBox([])
        self.widget = W.VBox([
            self.title, self.window_label,
            W.HBox([self.windows_bar]), self.trials_row,
            self.status, self.layout_figure, self.finished_html, self.final_box,
        ], layout=W.Layout(width="100%"))
        self.widget.add_class("merlin-walkforward-view")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.live:
            display(self.widget)
        else:
            self.show()

    # -- thread (RefreshLoop) ----------------------------------------------------
    def _refresh(self) -> None:
        if self.live:
            self.update()

    def _pause(self) -> None:
        self.run.wait(self.interval)  # returns at once when the analysis ends: the result shows without delay

    def _show_error(self, line: str) -> None:
        if self.live:
            self.status.value = f"<span style='color:#b00'>view error: {html.escape(line)}</span>"

    def update(self) -> None:
        """One refresh from the run's progress (called by the thread; callable by hand)."""
        p = self.run.progress()
        self.updates += 1
        total = p.total_windows or 1
        self.windows_bar.value = min(1.0, p.windows_done / total)
        if p.window is None:
            self.window_label.value = f"<b>{p.windows_done} of {p.total_windows} windows done</b>"
        else:
            self.window_label.value = (f"<b>window {p.window} of {p.total_windows}</b> "
                                       f"({p.windows_done} done · elapsed {fmt_seconds(p.elapsed)})")
        if p.current is not None:
            self.trials_bar.value = min(1.0, float(p.current.fraction))
            self.trials_label.value = f"window {p.window}: <b>{html.escape(progress_text(p.current))}</b>"
        if p.finished:
            rows = "".join(
                f"<tr><td>w{w.number:02d}</td><td>{_pct(None if w.is_metrics is None else w.is_metrics.get('net_profit_pct'))}"
                f"</td><td>{_pct(w.oos_metrics.get('net_profit_pct'))}</td><td>{w.trials}</td>"
                f"<td>{'flat' if w.flat else ''}</td></tr>" for w in p.finished)
            self.finished_html.value = ("<b>Finished windows</b><table><tr><th>window</th><th>IS net profit</th>"
                                        f"<th>OOS net profit</th><th>trials</th><th></th></tr>{rows}</table>")
        self.status.value = "stopping…" if getattr(self.run, "stopped", False) and not self.run.done else "running…"

    # -- final state ------------------------------------------------------------
    def _finish(self) -> None:
        try:
            self.result = self.run.result()
        except Exception as exc:  # the analysis failed: its error, where the result would be
            self.error = f"{type(exc).__name__}: {exc}"
            with self._widgets() as open_:
                if self.live and open_:
                    self.windows_bar.bar_style = "danger"
                    self.status.value = f"<span style='color:#b00'>failed: {html.escape(self.error)}</span>"
            return
        with self._widgets() as open_:
            if self.live and open_:
                self.show_final()

    def status_text(self) -> str:
        """The panel's status line once the analysis has ended."""
        if self.error is not None:
            return f"failed: {self.error.splitlines()[0]}"
        return "" if self.result is None else result_status(self.result)

    def show_final(self) -> None:
        """Final widgets: status, stitched metrics, windows table, stitched equity, IS vs OOS scatter."""
        result = self.result
        complete = result.summary.get("complete", True)
        self.windows_bar.value = 1.0 if complete else len(result.windows) / max(1, len(self.run.windows))
        self.windows_bar.bar_style = "success" if complete else "warning"
        self.window_label.value = f"<b>{html.escape(result_status(result))}</b>"
        self.status.value = ("<b>Finished</b>" if complete else
                             "<b>Stopped</b>" + (": the finished windows are shown" if result.windows else ""))
        self.finished_html.value = ""
        _show(self.trials_row, False)  # the last window's trial progress says nothing once the analysis ended
        if not result.windows:
            self.final_box.children = (W.HTML("No window finished."),)
            return
        figs = walkforward_figures(result)
        self.stitched = go.FigureWidget(figs["stitched"])
        self.scatter = go.FigureWidget(figs["scatter"])
        self.figures.update(stitched=self.stitched, scatter=self.scatter)
        self.metrics_label = W.HTML(f"<b>{html.escape(stitched_text(result))}</b>")
        self.table_html = W.HTML(_table_html(windows_table(result)))
        self.final_box.children = (self.metrics_label, W.HTML("<b>Windows</b>"), self.table_html,
                                   self.stitched, self.scatter)

    def show(self) -> None:
        """Static mode: wait for the analysis, then display its result (or its error)."""
        self.wait()
        if self.result is None:
            print(self.status_text())
            return
        self.figures = walkforward_figures(self.result)
        show_walkforward(self.result)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f} %"


__all__ = ["MODES", "WalkForwardMode", "WalkForwardView", "result_status", "show_walkforward", "stitched_text",
           "walkforward_figures", "windows_table"]
