"""A re-run of a notebook cell closes the widgets the cell showed before, and nothing of the new ones (issue 15).

No browser: a re-run is simulated by :func:`merlin_kit.notebook._lifecycle.claim_cell` seeing a second
execute request of the same cell.  After it, every model reachable from the new panel (children, layouts,
styles, every widget-valued trait, lists and tuples of widgets, a live monitor's charts and final widgets)
must still have its comm, and every model of the old one must be closed.  (These passed before any change
too: no widget, layout or style is shared between two panels or their monitors, so closing the old tree
cannot close a model of the new one; they keep it that way.)

The last test covers a race of the same re-run: the old monitor's thread telling the old panel that the run
finished while the re-run closes that panel.
"""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import ipywidgets as W  # noqa: E402

from merlin_kit.notebook import ConfigPanel, _lifecycle  # noqa: E402
from merlin_kit.notebook._refresh import RefreshLoop  # noqa: E402
from merlin_kit.optimize import OptimizationConfig, OptunaConfig  # noqa: E402

FEW = ["closeCountLong", "stopLongX"]


def reachable(root: W.Widget) -> Iterator[tuple[str, W.Widget]]:
    """(path, widget) of ``root`` and every widget it holds, each once."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("root", root)]
    while stack:
        path, widget = stack.pop()
        if not isinstance(widget, W.Widget) or id(widget) in seen:
            continue
        seen.add(id(widget))
        yield path, widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            if isinstance(value, W.Widget):
                stack.append((f"{path}.{name}", value))
            elif isinstance(value, (list, tuple)):
                stack.extend((f"{path}.{name}[{i}]", v) for i, v in enumerate(value))
            elif isinstance(value, dict):
                stack.extend((f"{path}.{name}[{k!r}]", v) for k, v in value.items())


def closed_in(root: W.Widget) -> list[str]:
    return [f"{path} ({type(w).__name__})" for path, w in reachable(root) if w.comm is None]


def open_in(root: W.Widget) -> list[str]:
    return [f"{path} ({type(w).__name__})" for path, w in reachable(root) if w.comm is not None]


@pytest.fixture
def cell(monkeypatch):
    """``cell.run()``: what follows runs as a new execute request of one notebook cell."""
    runs = itertools.count()

    class Cell:
        current = ("cell-1", "run-0")

        def run(self) -> None:
            self.current = ("cell-1", f"run-{next(runs) + 1}")

    c = Cell()
    monkeypatch.setattr(_lifecycle, "_cell_run", lambda: c.current)
    monkeypatch.setattr(_lifecycle, "_owners", {})
    return c


@pytest.fixture(scope="module")
def small_csv(write_sample_csv):
    return write_sample_csv("lifecycle.csv", 3000)


def small(small_csv) -> tuple[OptimizationConfig, OptunaConfig]:
    return (OptimizationConfig(data=str(small_csv), worker_processes=1, warmup_bars=200, optimize_params=FEW),
            OptunaConfig(n_trials=4, seed=3, save_study=False))


def test_a_rerun_closes_the_old_panel_and_nothing_of_the_new_one(cell):
    old = ConfigPanel()
    cell.run()
    new = ConfigPanel()
    assert not open_in(old), "the re-run leaves models of the old panel open"
    assert not closed_in(new), "the re-run closed models the new panel shows"


def test_a_rerun_after_a_finished_run_keeps_the_new_panel_and_its_monitor_open(cell, small_csv):
    old = ConfigPanel(*small(small_csv), live=True)
    old.start()
    assert old.monitor.finished.wait(120) and "equity" in old.monitor.figures
    cell.run()
    new = ConfigPanel(*small(small_csv), live=True)
    assert not open_in(old) and not open_in(old.monitor.widget)
    new.start()
    assert new.monitor.finished.wait(120) and "equity" in new.monitor.figures
    assert not closed_in(new), "models of the new panel or its monitor are closed"
    assert new.monitor_area.children == (new.monitor.widget,)


def test_a_rerun_keeps_the_new_walkforward_panel_open(cell):
    old = ConfigPanel(OptimizationConfig(data="sample", end="2024-02-20"), walk_forward={"is_days": 30, "oos_days": 10})
    cell.run()
    new = ConfigPanel(OptimizationConfig(data="sample", end="2024-02-20"), walk_forward={"is_days": 30, "oos_days": 10})
    assert not open_in(old)
    assert not closed_in(new)


class _FinishedView(RefreshLoop):
    """A view of a run that has already ended: its thread goes straight to ``on_finish``."""

    def __init__(self, on_finish) -> None:
        self.run = SimpleNamespace(done=True)
        self.interval = 0.01
        self.on_finish = on_finish
        self.error = None
        self.finished = threading.Event()
        self._halt = threading.Event()
        self._thread = None


def test_close_waits_for_the_owner_being_told_that_the_view_finished():
    """The old monitor's thread tells the old panel "finished" while a re-run closes both: the close must not
    run while the panel still sets its widgets (updates to models being closed, from another thread)."""
    entered, spans = threading.Event(), []

    def on_finish(view) -> None:
        entered.set()
        start = time.monotonic()
        time.sleep(0.3)
        spans.append((start, time.monotonic()))

    view = _FinishedView(on_finish)
    view._start_thread("test-view")
    assert entered.wait(30)
    view.close()
    closed_at = time.monotonic()
    assert view.finished.wait(30)
    assert spans and closed_at >= spans[0][1], "close() returned while on_finish was still running"
