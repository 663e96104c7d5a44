"""The configuration panel and the live monitor, driven from Python (no browser).

Widgets work without a frontend: values change, observers fire, buttons can be
clicked from code, so every piece of panel logic is tested here; the browser
test checks that the same updates reach JupyterLab.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import ipywidgets as W  # noqa: E402

from merlin_kit.data import sample
from merlin_kit.errors import ConfigError, StrategyError
from merlin_kit.notebook import ConfigPanel, LiveMonitor, results_table
from merlin_kit.notebook.live import has_frontend
from merlin_kit.notebook.widgets import is_visible
from merlin_kit.optimize import OptimizationConfig, OptunaConfig
from merlin_kit.optimize.config import build_search_space, validate
from merlin_kit.scoring import ScoreConfig
from merlin_kit.strategies import get_strategy

FEW = ["closeCountLong", "closeCountShort", "stopLongX", "maType"]


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    """4,000 bars of the bundled sample as a CSV file (fast trials)."""
    return write_sample_csv("small.csv", 4000)


def small_opt(small_csv, workers=2, **kw) -> OptimizationConfig:
    kw.setdefault("optimize_params", FEW)
    return OptimizationConfig(data=str(small_csv), worker_processes=workers, warmup_bars=200, **kw)


def wait_until(predicate, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# -- layout: what is shown --------------------------------------------------------------------
@pytest.mark.parametrize("mode, shown", [("trials", "n_trials"), ("time", "time_limit"), ("convergence", "patience")])
def test_budget_mode_shows_only_its_input(mode, shown):
    panel = ConfigPanel()
    panel.budget_mode.value = mode
    inputs = {"n_trials": panel.n_trials, "time_limit": panel.time_limit, "patience": panel.patience}
    assert {name for name, w in inputs.items() if is_visible(w)} == {shown}
    opt, cfg = panel.config()
    assert cfg.budget_mode == mode
    value = {"trials": cfg.n_trials, "time": cfg.time_limit, "convergence": cfg.convergence_patience}[mode]
    assert value is not None
    others = {"trials": cfg.n_trials, "time": cfg.time_limit, "convergence": cfg.convergence_patience}
    assert all(v is None for k, v in others.items() if k != mode)


def test_score_weights_only_for_the_score_target():
    panel = ConfigPanel()
    assert panel.target.value == "score" and is_visible(panel.score_box)
    panel.target.value = "romad"
    assert not is_visible(panel.score_box)
    panel.target.value = "score"
    panel.score_weights["romad"].value = 1.0
    opt, _ = panel.config()
    assert isinstance(opt.score, ScoreConfig) and opt.score.weights["romad"] == 1.0


def test_data_source_modes_show_their_input(small_csv):
    panel = ConfigPanel()
    assert panel.data_mode.value == "sample" and not is_visible(panel.data_path) and not is_visible(panel.upload_box)
    panel.data_mode.value = "path"
    assert is_visible(panel.data_path) and not is_visible(panel.upload_box)
    assert "data" in panel.errors and panel.run_button.disabled  # no path yet
    panel.data_path.value = str(small_csv)
    assert "data" not in panel.errors and not panel.run_button.disabled
    assert panel.config()[0].data == str(small_csv)
    panel.data_mode.value = "upload"
    assert is_visible(panel.upload_box) and not is_visible(panel.data_path)
    assert "upload" in panel.errors["data"] and panel.run_button.disabled


def test_uploaded_bytes_go_straight_to_the_engine(small_csv):
    content = small_csv.read_bytes()
    panel = ConfigPanel()
    panel.data_mode.value = "upload"
    panel.upload.value = ({"name": "small.csv", "type": "text/csv", "size": len(content),
                           "content": memoryview(content),
                           "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert "data" not in panel.errors
    opt, _ = panel.config()
    assert isinstance(opt.data, bytes) and opt.data == content
    assert "small.csv" in panel.upload_label.value


def test_param_rows_follow_the_strategy_schema():
    panel = ConfigPanel()
    for sid in ("s01_trailing_ma", "s04_stochrsi"):
        panel.strategy.value = sid
        strategy = get_strategy(sid)
        assert list(panel.param_rows) == strategy.param_names()
        for p in strategy.params:
            row = panel.param_rows[p.name]
            assert row.optimize.value == p.optimize
            assert is_visible(row.range_box) == p.optimize and is_visible(row.fixed_box) != p.optimize
            if p.kind in ("choice", "bool"):
                assert row.choices is not None and tuple(row.choices.options[i][1] for i in range(len(p.choices))) == p.choices
            else:
                assert row.min is not None and row.fixed.value == p.default
        # the default panel optimises exactly the schema's default space
        opt, _ = panel.config()
        assert build_search_space(strategy, opt) == build_search_space(strategy, OptimizationConfig(strategy=sid))
    row = panel.param_rows["rsiLen"]
    row.optimize.value = False
    assert not is_visible(row.range_box) and is_visible(row.fixed_box)
    row.fixed.value = 20
    opt, _ = panel.config()
    assert "rsiLen" not in opt.optimize_params and opt.fixed_params == {"rsiLen": 20}


def test_user_strategy_by_import_path():
    panel = ConfigPanel()
    panel.strategy_path.value = "tests._strategies:SlowS01"
    assert panel.strategy.value == "tests._strategies:SlowS01" and not panel.errors
    assert list(panel.param_rows) == get_strategy("tests._strategies:SlowS01").param_names()
    opt, _ = panel.config()
    assert opt.strategy == "tests._strategies:SlowS01"
    panel.strategy_path.value = "no_such_module:Nope"
    assert "cannot import module" in panel.errors["strategy"] and panel.run_button.disabled
    panel.strategy_path.value = ""
    assert not panel.errors and not panel.run_button.disabled


# -- validation ------------------------------------------------------------------------------
def _error_html(panel, field):
    return panel.param_rows[field].error.value if field in panel.param_rows else panel._field_widgets[field].value


@pytest.mark.parametrize("edit, field, text", [
    (lambda p: (setattr(p.param_rows["maLength"].min, "value", 400), setattr(p.param_rows["maLength"].max, "value", 100)),
     "maLength", "min (400) &gt; max (100)"),
    (lambda p: setattr(p.param_rows["maLength"].step, "value", 0), "maLength", "step must be &gt; 0"),
    (lambda p: setattr(p.param_rows["maLength"].max, "value", 900), "maLength", "outside the parameter"),
    (lambda p: setattr(p.param_rows["maType"].choices, "value", ()), "maType", "choices must not be empty"),
    (lambda p: (setattr(p.param_rows["stopLongX"].optimize, "value", False),
                setattr(p.param_rows["stopLongX"].fixed, "value", 99.0)), "stopLongX", "out of limits"),
    (lambda p: [setattr(r.optimize, "value", False) for r in p.param_rows.values()], "params", "at least one"),
    (lambda p: setattr(p.seed, "value", "12x"), "seed", "whole number"),
    (lambda p: setattr(p.start_date, "value", "not a date"), "window", "not a date"),
    (lambda p: (setattr(p.start_date, "value", "2025-03-01"), setattr(p.end_date, "value", "2025-01-01")),
     "window", "after end"),
    (lambda p: setattr(p.warmup, "value", -5), "window", "warmup_bars"),
    (lambda p: (setattr(p.budget_mode, "value", "trials"), setattr(p.n_trials, "value", 0)), "budget", "n_trials"),
    (lambda p: (setattr(p.budget_mode, "value", "time"), setattr(p.time_limit, "value", 0.5)), "budget", "time_limit"),
    (lambda p: (setattr(p.budget_mode, "value", "convergence"), setattr(p.patience, "value", 0)), "budget",
     "convergence_patience"),
    (lambda p: [setattr(s, "value", 0.0) for s in p.score_weights.values()], "score", "weight &gt; 0"),
    (lambda p: setattr(p.study_name, "value", "  "), None, None),  # blank name = automatic, valid
])
def test_invalid_settings_show_inline_message_and_disable_run(edit, field, text):
    panel = ConfigPanel()
    assert not panel.errors and not panel.run_button.disabled
    edit(panel)
    if field is None:
        assert not panel.errors and not panel.run_button.disabled
        return
    assert panel.run_button.disabled, panel.errors
    assert field in panel.errors
    assert text in _error_html(panel, field)
    # the other fields stay clean: the message sits beside its own field
    assert all(not _error_html(panel, f) for f in panel._field_widgets if f != field)
    with pytest.raises(ConfigError):
        panel.config()
    # Run pressed anyway (e.g. from code): nothing starts
    assert panel.start() is None and panel.run is None
    assert "fix the settings" in panel.status.value


def test_fixing_the_error_enables_run_again():
    panel = ConfigPanel()
    row = panel.param_rows["maLength"]
    row.min.value = 600  # > max (500) and outside the limits
    assert panel.run_button.disabled and row.error.value
    row.min.value = 50
    assert not panel.run_button.disabled and not row.error.value and not panel.errors


def test_several_errors_show_at_once():
    panel = ConfigPanel()
    panel.param_rows["maLength"].min.value = 600
    panel.param_rows["closeCountLong"].step.value = -1
    panel.seed.value = "x"
    assert {"maLength", "closeCountLong", "seed"} <= set(panel.errors)


def get_strategy_error(spec):
    """The error of an unknown strategy."""
    with pytest.raises(StrategyError) as info:
        get_strategy(spec)
    return info.value


def _engine_error(opt_kw=None, cfg_kw=None):
    """The error the engine's own validation raises for these settings."""
    with pytest.raises((ConfigError, StrategyError)) as info:
        validate(OptimizationConfig(**(opt_kw or {})), OptunaConfig(**(cfg_kw or {})))
    return info.value


@pytest.mark.parametrize("make_error, field, text", [
    (lambda: _engine_error(dict(param_ranges={"maLength": {"min": 5, "max": 1}})), "maLength", "min (5) &gt; max (1)"),
    (lambda: _engine_error(dict(param_ranges={"maType": {"choices": []}})), "maType", "choices must not be empty"),
    (lambda: _engine_error(dict(fixed_params={"atrPeriod": 0})), "atrPeriod", "parameter &#x27;atrPeriod&#x27;"),
    (lambda: _engine_error(dict(optimize_params=[])), "params", "no parameter is optimised"),
    (lambda: _engine_error(dict(warmup_bars=-1)), "window", "warmup_bars must be an integer &gt;= 0"),
    (lambda: _engine_error(dict(worker_processes=40)), "workers", "worker_processes must be an integer from 1 to 32"),
    (lambda: _engine_error(cfg_kw=dict(target="x")), "target", "target &#x27;x&#x27; is unknown"),
    (lambda: _engine_error(cfg_kw=dict(budget_mode="time", time_limit=0)), "budget", "time_limit must be a number"),
    (lambda: _engine_error(cfg_kw=dict(seed="a")), "seed", "seed must be an integer or None"),
    # raised by the engine when it opens the study; it carries field="study_name" like every config error
    (lambda: ConfigError("study 'abc' exists with direction maximize, but target 'max_drawdown' needs minimize; "
                         "use another study_name", field="study_name"), "study_name", "exists with direction"),
    (lambda: _engine_error(dict(score={"weights": {"romad": 2}})), "score", "must be a number in [0, 1]"),
    (lambda: _engine_error(dict(worker_processes=2), dict(storage="sqlite:///x.db")), "output",
     "SQLite cannot be shared"),
    (lambda: _engine_error(dict(start_method="thread")), "general", "start_method must be one of"),
    (lambda: _engine_error(dict(data=12345)), "data", "expected a CSV path"),
    (lambda: get_strategy_error("no_such_strategy"), "strategy", "unknown strategy"),
])
def test_engine_errors_are_marked_beside_their_field(monkeypatch, make_error, field, text):
    """An error from the engine lands beside the field its structured attributes name (no message parsing)."""
    exc = make_error()
    panel = ConfigPanel()
    assert not panel.errors

    def refuse(opt, cfg):
        raise exc

    monkeypatch.setattr("merlin_kit.notebook.widgets.start_optimization", refuse)
    assert panel.start() is None and panel.run is None
    assert set(panel.errors) == {field}
    assert text in _error_html(panel, field)
    assert "not started" in panel.status.value and panel.run_button.disabled


# -- round trip with the config objects ------------------------------------------------------------
def _same(a, b) -> None:
    """Two config pairs describe the same optimisation."""
    (o1, c1), (o2, c2) = a, b
    s1, s2 = get_strategy(o1.strategy), get_strategy(o2.strategy)
    assert s1.id == s2.id
    assert build_search_space(s1, o1) == build_search_space(s2, o2)
    d1, d2 = s1.defaults(), s2.defaults()
    assert {**d1, **dict(o1.fixed_params)} == {**d2, **dict(o2.fixed_params)}
    for name in ("start", "end", "warmup_bars", "worker_processes", "min_profit", "start_method"):
        assert getattr(o1, name) == getattr(o2, name), name
    assert o1.score_config() == o2.score_config()
    if isinstance(o1.data, pd.DataFrame):
        assert o2.data is o1.data
    else:
        assert o1.data == o2.data
    for name in ("target", "budget_mode", "sampler", "pruner", "seed", "study_name", "save_study", "storage",
                 "n_startup_trials"):
        assert getattr(c1, name) == getattr(c2, name), name
    key = {"trials": "n_trials", "time": "time_limit", "convergence": "convergence_patience"}[c1.budget_mode]
    assert getattr(c1, key) == getattr(c2, key)
    assert c1.output_dir == c2.output_dir


ROUND_TRIP = [
    (OptimizationConfig(), OptunaConfig()),
    (OptimizationConfig(worker_processes=2, optimize_params=["maLength", "maType", "stopLongX"],
                        param_ranges={"maLength": {"min": 50, "max": 300, "step": 25},
                                      "maType": {"choices": ["SMA", "EMA"]},
                                      "stopLongX": {"min": 1.5, "max": 2.5, "step": 0.5}},
                        fixed_params={"riskPerTrade": 1.5, "closeCountLong": 4},
                        start="2024-03-01", end="2024-05-01", warmup_bars=500,
                        score={"weights": {"romad": 0.5, "sharpe": 0.5}}),
     OptunaConfig(target="score", budget_mode="time", time_limit=90, sampler="random", seed=7,
                  study_name="my-study", save_study=True, output_dir="runs/x")),
    (OptimizationConfig(strategy="s04_stochrsi", param_ranges={"rsiLen": {"min": 8, "max": 20, "step": 4}},
                        min_profit=-5.0, start_method="forkserver"),
     OptunaConfig(target="romad", budget_mode="convergence", convergence_patience=40, pruner="median",
                  n_startup_trials=5)),
    (OptimizationConfig(data=b"time,open,high,low,close,volume\n", optimize_params=["maLength"]),
     OptunaConfig(target="sharpe", n_trials=12, output_dir="results-only")),
]


@pytest.mark.parametrize("opt, cfg", ROUND_TRIP)
def test_config_round_trips(opt, cfg):
    panel = ConfigPanel.from_config(opt, cfg)
    exported = panel._build()  # (bytes of an empty CSV are loaded only at start, so _build, not config())
    _same((opt, cfg), exported)
    # and panel -> config -> panel -> config is the identity
    again = ConfigPanel.from_config(*exported)._build()
    assert again == exported


def test_config_round_trips_a_dataframe_and_a_strategy_object():
    frame = sample(3000)
    strategy = get_strategy("s01_trailing_ma")
    opt = OptimizationConfig(data=frame, strategy=strategy, optimize_params=["maLength", "closeCountLong"])
    panel = ConfigPanel.from_config(opt, OptunaConfig(n_trials=5))
    assert panel.data_mode.value == "object"
    out, _ = panel.config()
    assert out.data is frame and out.strategy is strategy
    assert out.optimize_params == ["maLength", "closeCountLong"]


def test_panel_edits_show_up_in_config(small_csv):
    panel = ConfigPanel()
    panel.data_mode.value = "path"
    panel.data_path.value = str(small_csv)
    panel.param_rows["maLength"].set_range(100, 200, 50)
    panel.workers.value = 1
    panel.sampler.value = "random"
    panel.seed.value = "42"
    panel.study_name.value = "abc"
    panel.save_study.value = False
    assert not is_visible(panel.output_dir)
    opt, cfg = panel.config()
    assert opt.param_ranges["maLength"] == {"min": 100, "max": 200, "step": 50}
    assert (opt.worker_processes, cfg.sampler, cfg.seed, cfg.study_name, cfg.save_study) == (1, "random", 42, "abc", False)


def test_workers_slider_spans_the_cpu_count():
    panel = ConfigPanel()
    assert panel.workers.min == 1 and panel.workers.max == max(1, os.cpu_count() or 1)
    big = ConfigPanel.from_config(OptimizationConfig(worker_processes=(os.cpu_count() or 1) + 3))
    assert big.workers.value == (os.cpu_count() or 1) + 3


# -- Run / Stop with real runs ---------------------------------------------------------------------
def test_start_with_unreadable_csv_shows_data_error_and_starts_nothing(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("this is,not\nohlcv,data\n")
    panel = ConfigPanel(live=True)
    panel.data_mode.value = "path"
    panel.data_path.value = str(bad)
    assert not panel.run_button.disabled  # the file exists; its content is checked by the engine at Run
    panel.run_button.click()
    assert panel.run is None
    assert "data" in panel.errors and panel.run_button.disabled
    assert "not started" in panel.status.value
    panel.data_mode.value = "sample"  # any change clears the start error
    assert not panel.errors and not panel.run_button.disabled


def test_run_button_single_worker_trials_budget(small_csv, tmp_path):
    panel = ConfigPanel.from_config(small_opt(small_csv, workers=1),
                                    OptunaConfig(n_trials=12, seed=3, save_study=True, output_dir=str(tmp_path / "run")),
                                    live=False)
    panel.run_button.click()
    assert panel.run is not None and panel.run_button.disabled and not panel.stop_button.disabled
    assert panel.wait(120, show=False)
    run = panel.run
    assert run.summary.total_trials == 12 and run.summary.stop_reason == "budget reached"
    assert (tmp_path / "run" / "results.csv").exists() and (tmp_path / "run" / "study.journal").exists()
    assert "finished" in panel.status.value and not panel.run_button.disabled and panel.stop_button.disabled
    table = results_table(run)
    assert table.columns[0] == "score" and len(table) == 12


@pytest.mark.slow
def test_run_and_stop_drive_a_real_run_with_the_live_monitor(small_csv, tmp_path):
    out = tmp_path / "run"
    panel = ConfigPanel.from_config(small_opt(small_csv, workers=2),
                                    OptunaConfig(budget_mode="time", time_limit=300, seed=1, save_study=True,
                                                 output_dir=str(out)),
                                    live=True)
    t0 = time.monotonic()
    panel.run_button.click()
    assert time.monotonic() - t0 < 15, "Run must return at once"
    run, mon = panel.run, panel.monitor
    assert run is not None and isinstance(mon, LiveMonitor)
    assert panel.monitor_area.children == (mon.widget,)
    assert panel.run_button.disabled and not panel.stop_button.disabled
    # a second Run while running does nothing
    assert panel.start() is None and panel.run is run
    wait_until(lambda: len(mon.history.data[0].x) >= 10, 90, "the history chart to show 10 trials")
    n1, updates1 = len(mon.history.data[0].x), mon.updates
    wait_until(lambda: len(mon.history.data[0].x) > n1, 30, "the history chart to grow")
    assert mon.updates > updates1
    assert 0 < mon.progress_bar.value < 1
    assert "/ 5 min" in mon.progress_label.value
    assert "best objective" in mon.best_label.value and "trials/s" in mon.rate_label.value
    assert mon.workers_label.value.count("running") == 2
    # the running best never gets worse
    best = list(mon.history.data[1].y)
    assert best == sorted(best)
    assert len(mon.parallel.data[0].dimensions) == len(FEW) + 1
    panel.stop_button.click()
    assert panel.stop_button.disabled
    assert mon.finished.wait(60), "the monitor must reach its final state after Stop"
    assert run.done and run.summary.stop_reason == "stopped by user"
    assert "Finished" in mon.status.value and mon.progress_bar.bar_style == "warning"
    assert set(mon.figures) >= {"history", "parallel", "equity", "importance"}
    assert len(mon.history.data[0].x) == run.summary.completed_trials
    equity_names = [t.name for t in mon.equity.data]
    assert "equity" in equity_names and "drawdown %" in equity_names
    assert "stopped by user" in panel.status.value
    assert not panel.run_button.disabled and panel.stop_button.disabled
    assert (out / "results.csv").exists()
    # the results table sorts on demand
    mon.results_sort.value = "trial"
    assert "<table" in mon.results_html.value


def test_monitor_shows_failed_trials(small_csv):
    from merlin_kit.optimize import start_optimization

    run = start_optimization(
        OptimizationConfig(data=str(small_csv), strategy="tests._strategies:RaisingS01", worker_processes=1,
                           optimize_params=["closeCountLong"], param_ranges={"closeCountLong": {"min": 2, "max": 4}},
                           warmup_bars=200),
        OptunaConfig(n_trials=8, sampler="random", seed=0, target="net_profit"))
    mon = LiveMonitor(run)
    assert mon.finished.wait(120)
    assert mon.errors_label.layout.display != "none"
    assert "failed trial" in mon.errors_label.value and "cursed" in mon.errors_label.value


def test_no_frontend_outside_a_kernel(monkeypatch):
    monkeypatch.delenv("MERLIN_KIT_LIVE", raising=False)
    assert has_frontend() is False
    monkeypatch.setenv("MERLIN_KIT_LIVE", "1")
    assert has_frontend() is True


def test_score_bounds_and_switches_round_trip_and_bad_bounds_show_beside_the_score():
    panel = ConfigPanel()
    panel.score_input.bounds["romad"].value = "0:30"
    panel.score_input.enabled["ulcer"].value = False
    opt, _ = panel.config()
    assert opt.score.bounds["romad"] == (0.0, 30.0) and "ulcer" not in opt.score.enabled
    again = ConfigPanel.from_config(opt)
    assert again.score_input.bounds["romad"].value == "0:30" and not again.score_input.enabled["ulcer"].value
    assert again.config()[0].score == opt.score
    panel.score_input.bounds["romad"].value = "30"
    assert "MIN:MAX" in panel.errors["score"] and panel.run_button.disabled


def test_sampler_dropdown_offers_every_sampler_and_keeps_loaded_options():
    from merlin_kit.optimize.config import SAMPLERS

    panel = ConfigPanel.from_config(OptimizationConfig(), OptunaConfig(sampler="cmaes", sampler_options={"popsize": 6}))
    assert set(SAMPLERS) <= set(panel.sampler.options)
    assert panel.config()[1].sampler_options == {"popsize": 6}
    panel.sampler.value = "nsga2"  # options of another sampler are not carried over
    assert panel.config()[1].sampler_options == {}


def _open_models(root) -> set[str]:
    """Model ids of ``root`` and every widget inside it whose comm is still open."""
    from ipywidgets.widgets.widget import _instances

    found, stack = set(), [root]
    while stack:
        w = stack.pop()
        if not isinstance(w, W.Widget):
            continue
        if w.comm is not None:
            found.add(w.model_id)
        for name in w.keys:
            value = getattr(w, name, None)
            stack.extend(value if isinstance(value, (list, tuple)) else [value])
    return found & set(_instances)


def test_a_closed_monitor_makes_no_widget_and_a_closed_panel_no_model(small_csv, tmp_path):
    """What a re-run of the cell does (tests/browser/test_jupyterlab_rerun.py shows it in JupyterLab)."""
    panel = ConfigPanel.from_config(small_opt(small_csv, workers=1),
                                    OptunaConfig(n_trials=6, seed=3, save_study=False), live=True)
    panel.start()
    first = panel.monitor
    assert first.finished.wait(120) and "equity" in first.figures and _open_models(first.widget)
    panel.start()  # Run again: the finished monitor is closed before the new one is shown
    second = panel.monitor
    assert second is not first and not _open_models(first.widget)
    second.close()  # closed while the run goes on: no final charts, no on_finish, the thread ends
    assert second.finished.wait(120) and panel.run.wait(120)
    assert "equity" not in second.figures and second.final_box.children == ()
    assert not _open_models(second.widget)
    panel.close()
    assert not _open_models(panel)
