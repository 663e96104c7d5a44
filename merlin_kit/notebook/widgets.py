"""The configuration panel: every setting of an optimisation as ipywidgets, validated as you type.

:class:`ConfigPanel` is an ``ipywidgets.VBox``.  Its rows are built from the
strategy's parameter schema; its values become the engine's config objects
(:meth:`ConfigPanel.config`) and can be loaded from them
(:meth:`ConfigPanel.from_config`), so a notebook can switch between clicks and
code.  Validation is the engine's own (:func:`merlin_kit.optimize.config.validate`
and ``build_search_space`` per parameter row); each error is shown next to the
field it concerns and disables Run, so nothing starts with a bad configuration.
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import fields
from typing import Any

import ipywidgets as W

from .._platform import default_workers
from ..errors import ConfigError, DataError, MerlinError, ParameterError, StrategyError
from ..optimize import OptimizationConfig, OptunaConfig, start_optimization
from ..optimize.config import PRUNERS, SAMPLERS, build_search_space, optimized_names, validate
from ..strategies import Strategy, get_strategy, list_strategies
from .controls import (  # is_visible: re-exported, the panel's tests and notebooks import it from here
    ERR_STYLE, LABEL_WIDTH, PANEL_FIELD, BudgetInput, DataSourceInput, FieldError, ObjectivesInput, ParamRow, ScoreWeightsInput,
    WindowInput,
    _err_html, _label, _show, error_markup, is_visible, target_options,
)
from ._lifecycle import claim_cell, close_tree
from ._looks import Looks
from .live import LiveMonitor, has_frontend, prewarm
from .walkforward_panel import WalkForwardMode, WalkForwardView

class ConfigPanel(W.VBox):
    """Configure, start and stop an optimisation with clicks (see the module doc).

    ``live`` chooses the monitor attached by Run: ``None`` detects a frontend
    (:func:`~merlin_kit.notebook.live.has_frontend`), ``True`` always builds the
    live widgets, ``False`` none (use :meth:`wait` to show static results).
    ``walk_forward={"is_days": 90, "oos_days": 30, "anchored": False}`` opens it in walk-forward mode
    (:mod:`~merlin_kit.notebook.walkforward_panel`; ``panel.walkforward.set(...)`` does the same later).
    ``cluster`` (a ``distributed.Client`` or a scheduler address): Run submits the workers to that Dask
    cluster (``start_optimization(cluster=)``); the Workers slider is then the number of Dask tasks.
    """

    def __init__(self, opt: OptimizationConfig | None = None, cfg: OptunaConfig | None = None, *,
                 live: bool | None = None, walk_forward: dict[str, Any] | None = None, cluster: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster
        self.add_class("merlin-config-panel")
        self.live = live
        self.run: Any = None
        self.monitor: LiveMonitor | None = None
        self.dashboard_handle: Any = None
        self.errors: dict[str, str] = {}
        self.param_rows: dict[str, ParamRow] = {}
        self._suspend = 0
        self._start_error: tuple[str, str] | None = None
        self._carry_opt: dict[str, Any] = {}
        self._carry_cfg: dict[str, Any] = {}
        self._options_of = ""
        self._carry_fixed: set[str] = set()
        self._strategy_path_error: str | None = None
        self._strategy_cache: dict[int, Strategy] = {}
        self.looks = Looks()  # layouts and styles its widgets share (a few models instead of hundreds)
        claim_cell(self)  # a re-run of the cell closes the panel (and monitor) it showed before
        if live is not False:
            prewarm()
        self._build_widgets()
        threads = sum(cluster.nthreads().values()) if hasattr(cluster, "nthreads") else 0  # a Client: its threads
        self.set_config(opt or OptimizationConfig(worker_processes=threads or default_workers()),
                        cfg or OptunaConfig(save_study=True))
        if walk_forward is not None:
            self.walkforward.set(**walk_forward)

    # -- construction ----------------------------------------------------------
    def _build_widgets(self) -> None:
        label = {"description_width": LABEL_WIDTH}

        def wide() -> W.Layout:  # a new Layout per widget: visibility is set on the layout
            return W.Layout(width="460px")

        self.walkforward = WalkForwardMode(self._changed)  # mode selector, IS/OOS days, anchored
        # data (the input groups own their widgets; the panel names them for code and tests)
        self.data_input = d = DataSourceInput(self._changed)
        self.data_mode, self.data_path, self.upload, self.upload_label, self.upload_box, self.data_error = (
            d.mode, d.path, d.upload, d.upload_label, d.upload_box, d.error)
        self.window = w = WindowInput(self._changed)
        self.start_date, self.end_date, self.warmup, self.window_error = w.start, w.end, w.warmup, w.error
        # strategy
        self.strategy = W.Dropdown(options=[(s, s) for s in list_strategies()], description="Strategy",
                                   style=label, layout=wide())
        self.strategy_path = W.Text(value="", placeholder="or a user strategy: package.module:ClassName",
                                    continuous_update=False, layout=W.Layout(width="330px"))
        self.strategy_error = _err_html(self.looks)
        self.params_box = W.VBox([])
        self.params_error = _err_html(self.looks)
        # objective and budget
        self.target = W.Dropdown(options=target_options(), value="score", description="Target", style=label,
                                 layout=wide())
        self.target_error = _err_html(self.looks)
        self.objectives = ObjectivesInput(self._changed)  # more objectives (a Pareto front) and constraints
        self.score_input = sc = ScoreWeightsInput(self._changed, self.looks)
        self.score_weights, self.score_box, self.score_error = sc.sliders, sc.box, sc.error
        self.budget = b = BudgetInput(self._changed)
        self.budget_mode, self.n_trials, self.time_limit, self.patience, self.budget_error = (
            b.mode, b.n_trials, b.time_limit, b.patience, b.error)
        # execution
        cpus = default_workers()
        self.workers = W.IntSlider(value=cpus, min=1, max=cpus, description="Workers", style=label,
                                   layout=W.Layout(width="460px"))
        self.workers_error = _err_html(self.looks)
        self.sampler = W.Dropdown(options=list(SAMPLERS), value="tpe", description="Sampler", style=label,
                                  layout=W.Layout(width="300px"))
        self.pruner = W.Dropdown(options=list(PRUNERS), value="none", description="Pruner",
                                 style={"description_width": "60px"}, layout=W.Layout(width="220px"))
        self.sampler_error = _err_html(self.looks)
        self.seed = W.Text(value="", placeholder="random", description="Seed", style=label,
                           layout=W.Layout(width="300px"))
        self.seed_error = _err_html(self.looks)
        self.study_name = W.Text(value="", placeholder="automatic", description="Study name", style=label,
                                 layout=wide())
        self.study_error = _err_html(self.looks)
        self.save_study = W.Checkbox(value=True, description="Save study and results (run folder)", indent=False)
        self.output_dir = W.Text(value="", placeholder="./merlin_runs/<study name>", description="Run folder",
                                 style=label, layout=wide())
        self.output_error = _err_html(self.looks)
        # actions
        self.run_button = W.Button(description="Run", button_style="success", icon="play",
                                   tooltip="start the optimisation")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                                    tooltip="stop every worker and keep the results so far")
        self.dashboard_button = W.Button(description="optuna-dashboard", icon="external-link", disabled=True,
                                         layout=W.Layout(width="180px"),
                                         tooltip="open the study in optuna-dashboard (needs a running or saved study)")
        self.status = W.HTML("")
        self.general_error = _err_html(self.looks)
        self.dashboard_link = W.HTML("")
        self.monitor_area = W.VBox([])

        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.dashboard_button.on_click(lambda _: self.open_dashboard())
        self.strategy.observe(self._on_strategy, names="value")
        self.strategy_path.observe(self._on_strategy_path, names="value")
        self.target.observe(self._on_target, names="value")
        self.save_study.observe(self._on_save, names="value")
        for w in (self.workers, self.sampler, self.pruner, self.seed, self.study_name, self.output_dir):
            w.observe(self._changed, names="value")

        def section(title: str) -> W.HTML:
            return self.looks.widget(W.HTML, value=f"<h4 style='margin:10px 0 4px 0'>{title}</h4>")
        row = self.looks.row
        self.children = (
            self.walkforward.mode,
            section("Data"),
            row(_label("Source", self.looks), self.data_mode, self.data_error),
            self.data_path, self.upload_box,
            row(self.start_date, self.end_date, self.warmup, self.window_error),
            self.walkforward.box,
            section("Strategy and parameters"),
            row(self.strategy, self.strategy_path, self.strategy_error),
            self.looks.widget(W.HTML, value="<span style='font-size:90%;color:#555'>tick a parameter to optimise it "
                              "over min/max/step (or the selected choices); unticked parameters keep the value "
                              "shown</span>"),
            self.params_box, self.params_error,
            section("Objective and budget"),
            row(self.target, self.target_error),
            self.objectives.box, self.score_box,
            row(_label("Budget", self.looks), self.budget_mode),
            row(self.n_trials, self.time_limit, self.patience, self.budget_error),
            section("Execution"),
            row(self.workers, self.workers_error),
            row(self.sampler, self.pruner, self.sampler_error),
            row(self.seed, self.seed_error),
            row(self.study_name, self.study_error),
            row(self.looks.widget(W.HTML, value="", layout={"width": "160px"}), self.save_study),
            row(self.output_dir, self.output_error),
            row(self.run_button, self.stop_button, self.dashboard_button, self.status),
            self.general_error, self.dashboard_link,
            self.monitor_area,
        )
        self._field_widgets = {
            "data": self.data_error, "window": self.window_error, "strategy": self.strategy_error,
            "params": self.params_error, "target": self.target_error, "score": self.score_error,
            "budget": self.budget_error, "workers": self.workers_error, "sampler": self.sampler_error,
            "seed": self.seed_error, "study_name": self.study_error, "output": self.output_error,
            "general": self.general_error, "walkforward": self.walkforward.error,
        }

    # -- visibility ------------------------------------------------------------
    def _on_target(self, *_: Any) -> None:
        _show(self.score_box, self.target.value == "score")
        self._changed()

    def _on_save(self, *_: Any) -> None:
        _show(self.output_dir, self.save_study.value)
        self._changed()

    def _on_strategy(self, *_: Any) -> None:
        self._build_param_rows()
        self._changed()

    def _on_strategy_path(self, change: Any) -> None:
        """A user strategy typed as ``package.module:ClassName``: added to the dropdown and selected."""
        text = str(change["new"]).strip()
        self._strategy_path_error = None
        if text:
            try:
                get_strategy(text)
            except (MerlinError, ValueError) as exc:
                self._strategy_path_error = str(exc).splitlines()[0]
            else:
                if text not in [v for _, v in self.strategy.options]:
                    self.strategy.options = [*self.strategy.options, (text, text)]
                self.strategy.value = text
        self._changed()

    def _strategy(self) -> Strategy:
        spec = self.strategy.value
        key = id(spec) if not isinstance(spec, str) else hash(spec)
        if key not in self._strategy_cache:
            self._strategy_cache[key] = get_strategy(spec)
        return self._strategy_cache[key]

    def _build_param_rows(self) -> None:
        old = [r.box for r in self.param_rows.values()]
        try:
            strategy = self._strategy()
        except (MerlinError, ValueError) as exc:
            self.param_rows = {}
            self.params_box.children = ()
            self._set_error("strategy", str(exc))
        else:
            self.param_rows = {p.name: ParamRow(p, self._changed, self.looks) for p in strategy.params}
            self.params_box.children = tuple(r.box for r in self.param_rows.values())
        self.looks.close(old)  # the previous strategy's rows: their models would stay open in kernel and browser

    # -- config objects ----------------------------------------------------------
    def _seed(self) -> int | None:
        text = self.seed.value.strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise FieldError("seed", f"seed must be a whole number or empty, got {text!r}") from None

    def _build(self) -> tuple[OptimizationConfig, OptunaConfig]:
        """Config objects from the widgets; a :class:`FieldError` names the first bad field."""
        data = self.data_input.source()
        start, end = self.window.dates()
        optimized = [n for n, r in self.param_rows.items() if r.optimize.value]
        ranges = {n: self.param_rows[n].range() for n in optimized}
        fixed = {}
        for n, r in self.param_rows.items():
            if not r.optimize.value:
                v = r.value()
                if v != r.param.default or n in self._carry_fixed:
                    fixed[n] = v
        opt = OptimizationConfig(
            data=data, strategy=self.strategy.value, optimize_params=optimized, param_ranges=ranges,
            fixed_params=fixed, start=start, end=end, warmup_bars=int(self.warmup.value),
            worker_processes=int(self.workers.value), score=self.score_input.score(), **self._carry_opt,
        )
        cfg = OptunaConfig(
            target=self.target.value, **self.objectives.values(self.target.value), **self.budget.values(), sampler=self.sampler.value, pruner=self.pruner.value, seed=self._seed(),
            study_name=self.study_name.value.strip() or None, save_study=bool(self.save_study.value),
            output_dir=(self.output_dir.value.strip() or None) if self.save_study.value else self._carry_cfg.get("output_dir"),
            **{k: v for k, v in self._carry_cfg.items()
               if k != "output_dir" and (k != "sampler_options" or self.sampler.value == self._options_of)},
        )
        return opt, cfg

    def config(self) -> tuple[OptimizationConfig, OptunaConfig]:
        """``(OptimizationConfig, OptunaConfig)`` of the panel; raises ConfigError when a setting is invalid."""
        self.validate()
        if self.errors:
            field, message = next(iter(self.errors.items()))
            raise ConfigError(f"{field}: {message}", param=field if field in self.param_rows else None, reason=message)
        return self._build()

    @classmethod
    def from_config(cls, opt: OptimizationConfig, cfg: OptunaConfig | None = None, **kwargs: Any) -> "ConfigPanel":
        """A panel showing ``opt``/``cfg`` (the inverse of :meth:`config`)."""
        return cls(opt, cfg or OptunaConfig(), **kwargs)

    def set_config(self, opt: OptimizationConfig, cfg: OptunaConfig) -> None:
        """Load config objects into the widgets (an invalid config is loaded and its errors shown)."""
        self._suspend += 1
        try:
            self.data_input.set(opt.data)
            self.window.set(opt)
            self._set_strategy(opt.strategy)
            self._set_params(opt)
            self.score_input.set(opt.score)
            self.workers.max = max(default_workers(), int(opt.worker_processes or 1), self.workers.max)
            self.workers.value = int(opt.worker_processes or 1)
            self._carry_opt = {"min_profit": opt.min_profit, "start_method": opt.start_method}
            # target, budget, execution
            if cfg.target not in [v for _, v in self.target.options]:
                self.target.options = [*self.target.options, (cfg.target, cfg.target)]
            self.target.value = cfg.target
            self.objectives.set(cfg, self.target)
            self.budget.set(cfg)
            self.sampler.value = cfg.sampler if cfg.sampler in SAMPLERS else "tpe"
            self.pruner.value = cfg.pruner if cfg.pruner in PRUNERS else "none"
            self.seed.value = "" if cfg.seed is None else str(cfg.seed)
            self.study_name.value = cfg.study_name or ""
            self.save_study.value = bool(cfg.save_study)
            self.output_dir.value = "" if cfg.output_dir is None else os.fspath(cfg.output_dir)
            self._carry_cfg = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in
                               ("n_startup_trials", "pruner_warmup_trials", "storage", "sampler_options",
                                "hv_reference")}
            self._options_of = cfg.sampler  # the loaded sampler_options belong to this sampler
            if not cfg.save_study and cfg.output_dir is not None:
                self._carry_cfg["output_dir"] = cfg.output_dir
        finally:
            self._suspend -= 1
        self.data_input.refresh()
        self._on_target()
        self.budget.refresh()
        self._on_save()
        self.validate()

    def _set_strategy(self, spec: Any) -> None:
        values = [v for _, v in self.strategy.options]
        if isinstance(spec, str) and spec.strip() in values:
            self.strategy.value = spec.strip()
            self._build_param_rows()
            return
        if isinstance(spec, str):
            label = spec
        else:
            try:
                label = get_strategy(spec).id or repr(spec)
            except (MerlinError, ValueError):
                label = repr(spec)
            label = f"{label} (from code)"
        self.strategy.options = [*self.strategy.options, (label, spec)]
        self.strategy.value = spec
        self._build_param_rows()

    def _set_params(self, opt: OptimizationConfig) -> None:
        self._carry_fixed = set(dict(opt.fixed_params or {}))
        try:
            strategy = self._strategy()
        except (MerlinError, ValueError):
            return
        fixed = dict(opt.fixed_params or {})
        try:
            dims = {d.name: d for d in build_search_space(strategy, opt)}
        except ConfigError:
            dims = None
        if dims is None:  # an invalid config: show what it says as far as it goes
            try:
                names = set(optimized_names(strategy, opt))
            except TypeError:  # optimize_params is not a list of names
                names = set()
            for name, row in self.param_rows.items():
                row.optimize.value = name in names and name not in fixed
                r = dict((opt.param_ranges or {}).get(name) or {}) if isinstance(
                    (opt.param_ranges or {}).get(name), dict) else {}
                row.set_range(r.get("min"), r.get("max"), r.get("step"), r.get("choices"))
        else:
            for name, row in self.param_rows.items():
                d = dims.get(name)
                row.optimize.value = d is not None
                if d is not None:
                    if d.kind == "categorical":
                        row.set_range(choices=d.choices)
                    else:
                        row.set_range(d.low, d.high, d.step)
        for name, value in fixed.items():
            row = self.param_rows.get(name)
            if row is None:
                continue
            try:
                row.fixed.value = row.param.validate(value)
            except (ParameterError, Exception):
                pass

    # -- validation ----------------------------------------------------------------
    def _changed(self, *_: Any) -> None:
        if self._suspend:
            return
        self._start_error = None
        self.validate()

    def _set_error(self, field: str, message: str) -> None:
        if field in self.param_rows:
            self.param_rows[field].set_error(message)
        else:
            self._field_widgets.get(field, self.general_error).value = error_markup(message)
        if message:
            self.errors.setdefault(field, message)

    def validate(self) -> bool:
        """Check every setting; show each error beside its field; enable Run only when all is valid."""
        self.errors = {}
        for widget in self._field_widgets.values():
            widget.value = ""
        for row in self.param_rows.values():
            row.set_error("")
        self._validate_fields()
        if self._start_error is not None:
            self._set_error(*self._start_error)
        running = self.run is not None and not self.run.done
        self.run_button.disabled = bool(self.errors) or running
        if self.errors and not running:
            self.status.value = error_markup("fix the settings marked in red to run")
        elif not running and self.status.value.startswith(f"<span style='{ERR_STYLE}'>"):
            self.status.value = ""
        return not self.errors

    def _validate_fields(self) -> None:
        # panel-level fields (each checked on its own so several messages show at once)
        for check in (self.data_input.source, self.window.dates, self._seed, self.score_input.score,
                      lambda: self.walkforward.check(self.data_input.source, self.window.dates)):
            try:
                check()
            except FieldError as exc:
                self._set_error(exc.field, exc.message)
        if self._strategy_path_error:
            self._set_error("strategy", self._strategy_path_error)
        try:
            strategy = self._strategy()
        except (MerlinError, ValueError) as exc:
            self._set_error("strategy", str(exc))
            return
        # each parameter row with the engine's own range checks
        optimised = 0
        for name, row in self.param_rows.items():
            try:
                if row.optimize.value:
                    optimised += 1
                    build_search_space(strategy, OptimizationConfig(optimize_params=[name],
                                                                    param_ranges={name: row.range()}))
                else:
                    row.param.validate(row.value())
            except (ConfigError, ParameterError) as exc:
                self._set_error(name, exc.reason if isinstance(exc, ConfigError) else str(exc))
        if not optimised:
            self._set_error("params", "tick at least one parameter to optimise")
        if self.errors:
            return
        # everything together, with the engine's validation
        try:
            opt, cfg = self._build()
            validate(opt, cfg)
        except FieldError as exc:
            self._set_error(exc.field, exc.message)
        except (MerlinError, ValueError) as exc:
            self._set_error(*self._error_field(exc))

    def _error_field(self, exc: Exception) -> tuple[str, str]:
        """(panel field, text to show there) of an engine error, read from its structured attributes."""
        if isinstance(exc, ConfigError):
            if exc.param in self.param_rows:
                return exc.param, exc.reason  # the row names the parameter: show only the reason
            field = PANEL_FIELD.get(exc.field or "", "general")
            return field, str(exc) if field == "general" else exc.reason
        if isinstance(exc, DataError):
            return "data", str(exc)
        if isinstance(exc, StrategyError):
            return "strategy", str(exc)
        return "general", str(exc)

    # -- actions -------------------------------------------------------------------
    def start(self) -> Any:
        """Validate and start the optimisation, or the walk-forward analysis in that mode (the Run button);
        returns the run (a ``WalkForwardRun`` in walk-forward mode), or None if invalid."""
        if self.run is not None and not self.run.done:
            self.status.value = "a run is already going: Stop it first"
            return None
        self._start_error = None
        if not self.validate():
            return None
        opt, cfg = self._build()
        self.status.value = "starting…"
        self.run_button.disabled = True
        try:
            wf = self.walkforward.active
            extra = {} if self.cluster is None else {"cluster": self.cluster}  # the plain call without a cluster
            run = self.walkforward.start(opt, cfg, **extra) if wf else start_optimization(opt, cfg, **extra)
        except (MerlinError, ValueError) as exc:
            field, text = self._error_field(exc)
            self._start_error = (field, text.splitlines()[0])
            self.validate()
            self.status.value = error_markup(f"not started: {str(exc).splitlines()[0]}")
            return None
        self.run = run
        self.stop_button.disabled = False
        self.dashboard_button.disabled = wf
        self.dashboard_link.value = ""
        self.status.value = "running the walk-forward analysis…" if wf else f"running <b>{html.escape(run.study_name)}</b>…"
        live = has_frontend() if self.live is None else self.live
        if self.monitor is not None:
            self.monitor.close()  # the previous run's view: its widgets are replaced below
        if wf:
            self.monitor = self.walkforward.watch(run, live=live, on_finish=self._on_finish)
            self.monitor_area.children = (self.monitor.widget,) if live else ()
        elif live:
            self.monitor = LiveMonitor(run, on_finish=self._on_finish)
            self.monitor_area.children = (self.monitor.widget,)
        else:
            self.monitor = None
            self.monitor_area.children = ()
            threading.Thread(target=self._wait_then_finish, args=(run,), daemon=True,
                             name="merlin-panel-wait").start()
        return run

    def _wait_then_finish(self, run: Any) -> None:
        try:
            run.wait()
        except Exception:
            pass
        self._on_finish(None)

    def _on_finish(self, monitor: Any) -> None:
        run = self.run
        self.stop_button.disabled = True
        if isinstance(monitor, WalkForwardView):
            text = monitor.status_text()
            self.status.value = error_markup(text) if monitor.error else html.escape(text)
            self.validate()
            return self._finished_event.set()
        reason = (run.summary or {}).get("stop_reason", "") if run is not None else ""
        if run is not None and run.error is not None:
            self.status.value = error_markup(f"failed: {str(run.error).splitlines()[0]}")
        else:
            self.status.value = f"finished: {html.escape(reason)}"
        self.validate()
        self._finished_event.set()

    def close(self) -> None:
        """Close the panel, its monitor and every widget inside (a re-run of its cell does); a run goes on."""
        if self.__dict__.get("monitor") is not None:
            self.monitor.close()
        close_tree(self)

    def stop(self) -> None:
        """Stop the running optimisation (the Stop button): workers end within a few seconds, results are kept."""
        run = self.run
        if run is None or run.done:
            return
        self.stop_button.disabled = True
        self.status.value = "stopping…"
        threading.Thread(target=run.stop, daemon=True, name="merlin-panel-stop").start()

    def wait(self, timeout: float | None = None, *, show: bool = True) -> bool:
        """Wait for the run started by :meth:`start`; without a live monitor, then show static results."""
        if self.run is None:
            raise RuntimeError("no run: press Run or call panel.start() first")
        if not self.run.wait(timeout):
            return False
        if self.monitor is not None:
            self.monitor.wait(timeout)
            if show and not self.monitor.live:
                self.monitor.show()
        elif show:
            LiveMonitor(self.run, live=False).show()
        self._finished_event.wait(5)
        return True

    def open_dashboard(self, port: int | None = None) -> Any:
        """Start optuna-dashboard on the run's storage and show its link in the panel."""
        from .dashboard import dashboard

        if self.run is None:
            return None
        if self.dashboard_handle is not None:
            self.dashboard_handle.stop()
        try:
            self.dashboard_handle = dashboard(self.run, port=port)
        except (MerlinError, ValueError, RuntimeError) as exc:
            self.dashboard_link.value = error_markup(str(exc))
            return None
        self.dashboard_link.value = self.dashboard_handle._repr_html_()
        return self.dashboard_handle

    @property
    def walkforward_result(self) -> Any:
        """The ``WalkForwardResult`` of the last walk-forward run once it has ended (partial after Stop), else None."""
        return getattr(self.monitor, "result", None) if isinstance(self.monitor, WalkForwardView) else None

    @property
    def _finished_event(self) -> threading.Event:
        ev = self.__dict__.get("_finished_ev")
        if ev is None:
            ev = self.__dict__["_finished_ev"] = threading.Event()
        return ev


__all__ = ["ConfigPanel", "is_visible"]
