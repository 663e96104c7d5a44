"""The panel's walk-forward mode, driven from Python (no browser), with real analyses on the bundled sample.

The browser test (tests/browser/test_jupyterlab_walkforward.py) checks that the
same view reaches JupyterLab.
"""

from __future__ import annotations

import html
import re
import time

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from merlin_kit.notebook import ConfigPanel
from merlin_kit.notebook.walkforward_panel import (
    WalkForwardView, show_walkforward, stitched_text, walkforward_figures,
)
from merlin_kit.notebook.widgets import is_visible
from merlin_kit.optimize import OptimizationConfig, OptunaConfig
from merlin_kit.walkforward import walk_forward

PARAMS = ["maLength", "closeCountLong"]
#: ~50 days of the sample: 30 IS + 10 OOS days give 2 windows; to 2024-03-01: 3 windows
END_2 = "2024-02-20"
END_3 = "2024-03-01"


def wf_opt(end: str = END_2, workers: int = 1, **kw) -> OptimizationConfig:
    return OptimizationConfig(data="sample", optimize_params=PARAMS, warmup_bars=500, worker_processes=workers,
                              end=end, **kw)


def wf_cfg(out, **kw) -> OptunaConfig:
    return OptunaConfig(**{"n_trials": 20, "sampler": "random", "seed": 1, "save_study": True,
                           "output_dir": str(out), **kw})


def wait_until(predicate, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# -- inputs ---------------------------------------------------------------------------------------
def test_mode_selector_shows_the_walkforward_inputs():
    panel = ConfigPanel(wf_opt())
    wf = panel.walkforward
    assert wf.mode.value == "optimize" and not wf.active and not is_visible(wf.box)
    assert [v for _, v in wf.mode.options] == ["optimize", "walkforward"]
    assert wf.mode in panel.children and wf.box in panel.children
    wf.mode.value = "walkforward"
    assert wf.active and is_visible(wf.box)
    # the defaults (90 + 30 days) do not fit in ~50 days of data: said on the field, Run disabled
    assert "walkforward" in panel.errors and panel.run_button.disabled
    wf.is_days.value, wf.oos_days.value, wf.anchored.value = 30, 10, True
    assert not panel.errors and not panel.run_button.disabled
    assert wf.values() == {"is_days": 30, "oos_days": 10, "anchored": True}
    assert panel.config()[0].end == END_2  # the optimisation config is the same in both modes
    wf.mode.value = "optimize"
    assert not is_visible(wf.box) and not panel.errors


@pytest.mark.parametrize("is_days, oos_days, end, text", [
    (300, 10, None, "needs at least is_days + oos_days = 300 + 10 = 310 days, but only 250 trading days"),
    (30, 10, "2024-02-10", "at least 2 windows needed"),
    (0, 10, None, "IS days must be an integer > 0"),
    (30, -5, None, "OOS days must be an integer > 0"),
])
def test_too_few_days_is_shown_on_the_field_before_anything_starts(tmp_path, is_days, oos_days, end, text):
    panel = ConfigPanel(wf_opt(end=end), wf_cfg(tmp_path / "out"), walk_forward={"is_days": is_days,
                                                                                  "oos_days": oos_days})
    assert panel.walkforward.active
    assert text in panel.errors["walkforward"] and html.escape(text) in panel.walkforward.error.value
    assert panel.run_button.disabled and "fix the settings" in panel.status.value
    assert panel.start() is None and panel.run is None
    assert not (tmp_path / "out").exists(), "nothing may start with a bad walk-forward setting"
    with pytest.raises(Exception, match="walkforward"):
        panel.config()


def test_an_uploaded_file_is_checked_too():
    import datetime

    from merlin_kit.data import sample

    content = sample(2000).to_csv(index_label="time").encode()  # ~21 days
    panel = ConfigPanel(wf_opt(end=None), walk_forward={"is_days": 30, "oos_days": 10})
    panel.data_mode.value = "upload"
    panel.upload.value = ({"name": "short.csv", "type": "text/csv", "size": len(content), "content": memoryview(content),
                           "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert "but only 21 trading days are available" in panel.errors["walkforward"]
    panel.walkforward.set(is_days=5, oos_days=5)
    assert not panel.errors and not panel.run_button.disabled


def test_an_unreadable_csv_is_marked_on_the_data_field_at_run(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("this is,not\nohlcv,data\n")
    panel = ConfigPanel(wf_opt(end=None), wf_cfg(tmp_path / "out"), walk_forward={"is_days": 30, "oos_days": 10})
    panel.data_mode.value = "path"
    panel.data_path.value = str(bad)
    assert not panel.errors  # the content is read by the engine at Run
    assert panel.start() is None and panel.run is None
    assert "data" in panel.errors and "not started" in panel.status.value


def test_a_start_after_the_data_is_shown_on_the_window_field():
    panel = ConfigPanel(wf_opt(end=None), walk_forward={"is_days": 30, "oos_days": 10})
    panel.start_date.value = "2030-01-01"
    assert "after the last bar" in panel.errors["window"] and "walkforward" not in panel.errors


# -- the result of the blocking walk_forward ------------------------------------------------------
@pytest.fixture(scope="module")
def blocking_result(tmp_path_factory):
    return walk_forward(wf_opt(), wf_cfg(tmp_path_factory.mktemp("wf"), n_trials=8), is_days=30, oos_days=10)


def test_figures_and_metrics_of_a_walk_forward_result(blocking_result, capsys):
    r = blocking_result
    figs = walkforward_figures(r)
    assert set(figs) == {"layout", "stitched", "scatter"}
    assert [t.name for t in figs["stitched"].data] == ["stitched OOS equity"]
    assert len(figs["stitched"].layout.shapes) >= len(r.windows)  # one shaded rectangle per OOS window
    assert list(figs["scatter"].data[0].text) == [f"w{w.number:02d}" for w in r.windows]
    text = stitched_text(r)
    m = r.stitched.metrics
    assert f"net profit {m['net_profit_pct']:.2f} %" in text and f"WFE {m['wfe']:.1f} %" in text
    assert f"trades {m['total_trades']}" in text and "max drawdown" in text and "OOS win rate" in text
    show_walkforward(r)
    out = capsys.readouterr().out
    assert "finished: 2 windows, 16 trials" in out and "Stitched OOS" in out


# -- Run / Stop with real analyses (the non-blocking WalkForwardRun) -----------------------------------
def test_run_shows_windows_progress_and_the_stitched_result(tmp_path):
    from merlin_kit.walkforward import WalkForwardRun

    out = tmp_path / "wf"
    panel = ConfigPanel(wf_opt(end=END_3), wf_cfg(out), live=True, walk_forward={"is_days": 30, "oos_days": 10})
    panel.walkforward.interval = 0.2  # windows of 20 short trials take about a second each
    seen: list[str] = []
    t0 = time.monotonic()
    panel.run_button.click()
    assert time.monotonic() - t0 < 15, "Run must return at once"
    run, view = panel.run, panel.monitor
    view.window_label.observe(lambda change: seen.append(change["new"]), names="value")
    view.trials_label.observe(lambda change: seen.append(change["new"]), names="value")
    assert isinstance(run, WalkForwardRun) and isinstance(view, WalkForwardView)
    assert panel.monitor_area.children == (view.widget,)
    assert panel.run_button.disabled and not panel.stop_button.disabled and panel.dashboard_button.disabled
    assert panel.start() is None and panel.run is run  # a second Run while running does nothing
    # the window layout at once, then "window k of 3" and the current window's trials
    assert [t.name for t in view.layout_figure.data] == ["IS", "OOS"] and len(view.layout_figure.data[0].y) == 3
    assert panel.wait(180), "the analysis ends"
    assert any(re.search(r"window \d of 3</b> \(\d done", s) for s in seen), seen
    assert any(re.search(r"window \d: <b>\d+ / 20 trials", s) for s in seen), seen
    assert view.finished.is_set() and view.result is panel.walkforward_result
    r = panel.walkforward_result
    assert len(r.windows) == 3 and r.summary["complete"] and r.summary["total_trials"] == 60
    assert view.windows_bar.value == 1.0 and view.windows_bar.bar_style == "success"
    assert not is_visible(view.trials_row), "the last window's trial bar is hidden once the analysis ended"
    assert [t.name for t in view.stitched.data] == ["stitched OOS equity"]
    assert len(view.stitched.layout.shapes) >= 3 and list(view.scatter.data[0].text) == ["w01", "w02", "w03"]
    assert view.metrics_label.value.startswith("<b>Stitched OOS: net profit ")
    assert "WFE" in view.metrics_label.value and "OOS win rate" in view.metrics_label.value
    assert "oos_net_profit_pct" in view.table_html.value and "maLength" in view.table_html.value
    assert "finished: 3 windows, 60 trials" in panel.status.value
    assert not panel.run_button.disabled and panel.stop_button.disabled
    assert (out / "windows.csv").exists() and (out / "walkforward.journal").exists()


def test_stop_stops_promptly_and_shows_the_finished_windows(tmp_path):
    panel = ConfigPanel(wf_opt(end=END_3), wf_cfg(tmp_path / "wf", budget_mode="time", time_limit=6, n_trials=None),
                        live=True, walk_forward={"is_days": 30, "oos_days": 10})
    run = panel.start()
    view = panel.monitor

    def in_window_2() -> bool:
        p = run.progress()
        return p.window == 2 and p.current is not None and p.current.finished >= 1

    wait_until(in_window_2, 120, "window 2 to run trials")
    t0 = time.monotonic()
    panel.stop_button.click()
    assert panel.stop_button.disabled
    assert run.wait(30) and view.finished.wait(30)
    took = time.monotonic() - t0
    assert took < 15, f"Stop took {took:.1f} s"
    r = panel.walkforward_result
    assert r is not None and not r.summary["complete"] and len(r.windows) == 1
    assert "stopped by user: 1 of 3 windows finished" in panel.status.value
    assert view.windows_bar.bar_style == "warning" and "Stopped" in view.status.value
    assert list(view.scatter.data[0].text) == ["w01"] and [t.name for t in view.stitched.data] == ["stitched OOS equity"]
    assert not panel.run_button.disabled


def test_stop_in_the_first_window_says_no_window_finished(tmp_path):
    panel = ConfigPanel(wf_opt(end=END_3), wf_cfg(tmp_path / "wf", budget_mode="time", time_limit=60, n_trials=None),
                        live=True, walk_forward={"is_days": 30, "oos_days": 10})
    run = panel.start()
    wait_until(lambda: run.progress().current is not None, 120, "window 1 to start")
    panel.stop()
    assert panel.wait(30, show=False)
    assert panel.walkforward_result.windows == [] and not panel.walkforward_result.summary["complete"]
    assert "stopped by user: 0 of 3 windows finished" in panel.status.value
    assert [c.value for c in panel.monitor.final_box.children] == ["No window finished."]


def test_without_a_frontend_wait_shows_static_figures(tmp_path, capsys):
    panel = ConfigPanel(wf_opt(), wf_cfg(tmp_path / "wf", n_trials=6), live=False,
                        walk_forward={"is_days": 30, "oos_days": 10})
    run = panel.start()
    assert run is not None and panel.monitor_area.children == ()
    assert panel.wait(180)
    out = capsys.readouterr().out
    assert "finished: 2 windows, 12 trials" in out and "Stitched OOS: net profit" in out
    assert set(panel.monitor.figures) == {"layout", "stitched", "scatter"}
    assert panel.walkforward_result is run.result()
