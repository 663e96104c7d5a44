"""The building blocks of the configuration panel: input groups, one parameter's row, widget helpers.

Kept apart from :mod:`merlin_kit.notebook.widgets` so that the panel module holds
only the panel (layout, config <-> widgets, validation, Run/Stop).  Each group
owns its widgets, its visibility rules and its reading/loading, and reports a
bad value as a :class:`FieldError` naming the panel field it belongs beside.
"""

from __future__ import annotations

import html
import os
from dataclasses import replace
from typing import Any, Callable

import ipywidgets as W
import pandas as pd

from ..data import SAMPLE_SOURCE, is_sample
from ..errors import ConfigError
from ..metrics import LOWER_IS_BETTER, METRIC_NAMES
from ..optimize import parse_objectives
from ..optimize.config import BUDGET_MODES, TARGET_ALIASES
from ..scoring import DEFAULT_BOUNDS, DEFAULT_WEIGHTS, SCORE_METRICS, ScoreConfig, parse_score_bounds
from ..strategies import Param
from ._looks import Looks

#: data source modes of the panel
DATA_MODES = (("Sample data", "sample"), ("CSV path", "path"), ("Upload CSV", "upload"))
_OBJECT_MODE = ("From code", "object")
LABEL_WIDTH = "150px"
#: inline style of every error message in the panel (red, a little smaller)
ERR_STYLE = "color:#c62828;font-size:90%"
_HIDDEN = "none"


#: config attribute a ConfigError is about (its ``field``) -> the panel field beside which it shows;
#: attributes the panel has no input for (start_method, min_profit, max_backtest_seconds) show under Run
PANEL_FIELD = {
    "data": "data", "start": "window", "end": "window", "warmup_bars": "window", "strategy": "strategy",
    "optimize_params": "params", "param_ranges": "params", "fixed_params": "params", "score": "score",
    "target": "target", "budget_mode": "budget", "n_trials": "budget", "time_limit": "budget",
    "convergence_patience": "budget", "worker_processes": "workers", "sampler": "sampler", "pruner": "sampler",
    "n_startup_trials": "sampler", "pruner_warmup_trials": "sampler", "sampler_options": "sampler",
    "objectives": "target", "constraints": "target", "hv_reference": "target",
    "seed": "seed", "study_name": "study_name", "storage": "output", "output_dir": "output",
    "sweep": "sampler", "sweep_batch": "sampler", "is_days": "walkforward", "oos_days": "walkforward",
}


def _label(text: str, looks: Looks | None = None) -> W.HTML:
    """A right-aligned row label as wide as the panel's descriptions."""
    return (looks or Looks()).widget(W.HTML, value=f"<div style='text-align:right;padding-right:8px'>"
                                     f"{html.escape(text)}</div>", layout={"width": LABEL_WIDTH})


def _err_html(looks: Looks | None = None) -> W.HTML:
    """An empty slot beside a field, filled by :func:`error_markup` when the field is invalid."""
    return (looks or Looks()).widget(W.HTML, value="", layout={"margin": "0 0 0 8px"})


def error_markup(message: str) -> str:
    """``message`` as the panel's red inline error ("" stays "", so a slot can be cleared with it)."""
    return f"<span style='{ERR_STYLE}'>{html.escape(message)}</span>" if message else ""


def _show(widget: W.Widget, visible: bool) -> None:
    """Show or hide through the layout, so the widget keeps its value and place while hidden."""
    widget.layout.display = None if visible else _HIDDEN


def is_visible(widget: W.Widget) -> bool:
    """Whether a panel widget is shown (its layout does not hide it)."""
    return widget.layout.display != _HIDDEN


def _date_text(value: Any) -> str:
    """A config's start/end as the text of a date box (None -> empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return pd.Timestamp(value).isoformat()
    except (ValueError, TypeError):
        return str(value)


def _utc(text: str) -> pd.Timestamp:
    """A typed date as a UTC timestamp, so naive and zoned dates compare (naive means UTC, as in the engine)."""
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class FieldError(Exception):
    """A panel-level setting that is invalid before the engine sees it; ``field`` is the panel field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def target_options() -> list[tuple[str, str]]:
    """The Target dropdown: the composite score, the reference system's aliases, then every other metric."""
    options = [("score (composite)", "score")]
    options += [(f"{alias} ({metric})", alias) for alias, metric in TARGET_ALIASES.items() if alias != "score"]
    covered = set(TARGET_ALIASES.values())
    options += [(m, m) for m in METRIC_NAMES if m not in covered]
    return options


class DataSourceInput:
    """Where the OHLCV data comes from: the bundled sample, a CSV path, an uploaded CSV, or an object from code."""

    def __init__(self, on_change: Callable[..., None]) -> None:
        self._on_change = on_change
        self.upload_bytes: bytes | None = None
        self.data_object: Any = None
        self.mode = W.ToggleButtons(options=list(DATA_MODES), value="sample", style={"button_width": "110px"})
        self.path = W.Text(value="", placeholder="path/to/ohlcv.csv", description="CSV path",
                           style={"description_width": LABEL_WIDTH}, layout=W.Layout(width="460px"))
        self.upload = W.FileUpload(accept=".csv,.txt", multiple=False, description="Choose CSV")
        self.upload_label = W.HTML("")
        self.upload_box = W.HBox([W.HTML("", layout=W.Layout(width=LABEL_WIDTH)), self.upload, self.upload_label])
        self.error = _err_html()
        self.mode.observe(self.refresh, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.path.observe(on_change, names="value")

    def refresh(self, *_: Any) -> None:
        """Show only the input the chosen mode needs, then let the panel re-validate."""
        _show(self.path, self.mode.value == "path")
        _show(self.upload_box, self.mode.value == "upload")
        self._on_change()

    def _on_upload(self, *_: Any) -> None:
        files = self.upload.value
        if files:
            f = files[0]
            self.upload_bytes = bytes(f["content"])
            self.upload_label.value = f"{html.escape(str(f.get('name', 'file')))} ({len(self.upload_bytes):,} bytes)"
        self._on_change()

    def source(self) -> Any:
        """The ``data`` of the config; a missing path or upload is a :class:`FieldError` (the file's content is
        checked by the engine at Run)."""
        mode = self.mode.value
        if mode == "sample":
            return SAMPLE_SOURCE
        if mode == "path":
            path = self.path.value.strip()
            if not path:
                raise FieldError("data", "enter the path of a CSV file")
            if not os.path.isfile(path):
                raise FieldError("data", f"file not found: {path}")
            return path
        if mode == "upload":
            if self.upload_bytes is None:
                raise FieldError("data", "choose a CSV file to upload")
            return self.upload_bytes
        return self.data_object

    def set(self, data: Any) -> None:
        """Show a config's ``data``; an object the panel cannot edit (a DataFrame...) is kept as "From code"."""
        options = list(DATA_MODES)
        if is_sample(data):
            self.mode.options = options
            self.mode.value = "sample"
        elif isinstance(data, (str, os.PathLike)):
            self.mode.options = options
            self.path.value = os.fspath(data)
            self.mode.value = "path"
        elif isinstance(data, (bytes, bytearray)):
            self.mode.options = options
            self.upload_bytes = bytes(data)
            self.upload_label.value = f"bytes from code ({len(self.upload_bytes):,} bytes)"
            self.mode.value = "upload"
        else:
            self.mode.options = options + [_OBJECT_MODE]
            self.data_object = data
            self.mode.value = "object"


class WindowInput:
    """The backtest window: optional start and end dates, and the warm-up bars loaded before start."""

    def __init__(self, on_change: Callable[..., None]) -> None:
        self.start = W.Text(value="", placeholder="YYYY-MM-DD (optional)", description="Start",
                            style={"description_width": LABEL_WIDTH}, layout=W.Layout(width="330px"))
        self.end = W.Text(value="", placeholder="YYYY-MM-DD (optional)", description="End",
                          layout=W.Layout(width="230px"), style={"description_width": "40px"})
        self.warmup = W.IntText(value=1000, description="Warm-up bars", layout=W.Layout(width="250px"),
                                style={"description_width": "100px"})
        self.error = _err_html()
        for w in (self.start, self.end, self.warmup):
            w.observe(on_change, names="value")

    def dates(self) -> tuple[str | None, str | None]:
        """The config's ``start``/``end`` as typed (empty: None); a non-date or start after end is a FieldError."""
        out = []
        for w, name in ((self.start, "start"), (self.end, "end")):
            text = w.value.strip()
            if not text:
                out.append(None)
                continue
            try:
                pd.Timestamp(text)
            except (ValueError, TypeError):
                raise FieldError("window", f"{name}: {text!r} is not a date (YYYY-MM-DD or ISO-8601)") from None
            out.append(text)
        start, end = out
        if start is not None and end is not None and _utc(start) > _utc(end):
            raise FieldError("window", f"start ({start}) is after end ({end})")
        return start, end

    def set(self, opt: Any) -> None:
        """Show an OptimizationConfig's window (a warm-up that is not an int shows as 0; validation names it)."""
        self.start.value = _date_text(opt.start)
        self.end.value = _date_text(opt.end)
        self.warmup.value = int(opt.warmup_bars) if isinstance(opt.warmup_bars, int) else 0


class ScoreWeightsInput:
    """The composite score per metric: an on/off box, a weight slider and its min:max bounds.

    What the rows cannot show (inversions, normalisation, min_score) is kept
    from the loaded score config, so loading a config and reading it back keeps it.
    The bounds text is read by the parser of ``--score-bounds`` (one syntax).
    """

    def __init__(self, on_change: Callable[..., None], looks: Looks | None = None) -> None:
        self.base: ScoreConfig | None = None
        lk = looks or Looks()
        self.sliders = {
            key: lk.widget(W.FloatSlider, value=DEFAULT_WEIGHTS.get(key, 0.0), min=0.0, max=1.0, step=0.05,
                           description=key, readout_format=".2f", style={"description_width": "90px"},
                           layout={"width": "360px"})
            for key in SCORE_METRICS
        }
        self.enabled = {key: lk.widget(W.Checkbox, value=True, indent=False, layout={"width": "30px"})
                        for key in SCORE_METRICS}
        self.bounds = {key: lk.widget(W.Text, value=_bounds_text(DEFAULT_BOUNDS[key]), placeholder="min:max",
                                      layout={"width": "110px"}) for key in SCORE_METRICS}
        self.error = _err_html(lk)
        self.box = W.VBox([lk.widget(W.HTML, value="<i>Score: on, weight, bounds min:max</i>",
                                     layout={"margin": "0 0 0 160px"}),
                           *[lk.widget(W.HBox, children=[lk.widget(W.HTML, value="", layout={"width": "70px"}),
                                                         self.enabled[k], s, self.bounds[k]])
                             for k, s in self.sliders.items()],
                           self.error])
        for widget in (*self.sliders.values(), *self.enabled.values(), *self.bounds.values()):
            widget.observe(on_change, names="value")

    def score(self) -> ScoreConfig | None:
        """The config's ``score`` (None while weights, bounds and switches are the defaults)."""
        weights = {k: float(s.value) for k, s in self.sliders.items()}
        try:
            bounds = parse_score_bounds([f"{k}={t.value.strip()}" for k, t in self.bounds.items()])
        except ConfigError as exc:
            raise FieldError("score", str(exc).replace("--score-bounds: ", "bounds ")) from None
        on = tuple(k for k, c in self.enabled.items() if c.value)
        enabled = None if len(on) == len(SCORE_METRICS) else on
        base = self.base
        if (base is None and enabled is None and bounds == DEFAULT_BOUNDS
                and weights == {k: float(DEFAULT_WEIGHTS.get(k, 0.0)) for k in SCORE_METRICS}):
            return None
        known = set(base.weights) if base is not None else set()
        weights = {k: v for k, v in weights.items() if v > 0 or k in known}
        try:
            return replace(base or ScoreConfig(), weights=weights, bounds=bounds, enabled=enabled)
        except ConfigError as exc:
            raise FieldError("score", exc.reason or str(exc)) from None

    def set(self, value: Any) -> None:
        """Show a config's ``score`` (a ScoreConfig, a dict or None; an invalid one shows the defaults)."""
        try:
            score = value if isinstance(value, ScoreConfig) else ScoreConfig.from_dict(value)
        except ConfigError:
            score, self.base = ScoreConfig(), None
        else:
            self.base = score if value else None
        for key, slider in self.sliders.items():
            slider.value = float(score.weights.get(key, 0.0))
            self.enabled[key].value = score.enabled is None or key in score.enabled
            self.bounds[key].value = _bounds_text(score.bounds[key])


def _bounds_text(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}:{bounds[1]:g}"


class ObjectivesInput:
    """More objectives beside the Target (a multi-objective run: its Pareto front) and constraints, compactly.

    The Target dropdown stays the primary objective (in its natural direction); ``more`` adds
    objectives, each metric offered in both directions (``metric:max`` / ``metric:min``);
    ``constraints`` takes one ``metric OP number`` per line.  Their errors show beside the Target.
    """

    def __init__(self, on_change: Callable[..., None]) -> None:
        options = []
        for m in ("score", *METRIC_NAMES):
            natural = "min" if m in LOWER_IS_BETTER else "max"
            other = "max" if natural == "min" else "min"
            options += [(f"{m} ({natural})", f"{m}:{natural}"), (f"{m} ({other})", f"{m}:{other}")]
        self.more = W.SelectMultiple(options=options, value=(), rows=4, description="More objectives",
                                     style={"description_width": LABEL_WIDTH}, layout=W.Layout(width="460px"))
        self.constraints = W.Textarea(value="", rows=2, description="Constraints",
                                      placeholder="one per line: total_trades >= 30",
                                      style={"description_width": LABEL_WIDTH}, layout=W.Layout(width="460px"))
        self.box = W.VBox([self.more, self.constraints])
        for w in (self.more, self.constraints):
            w.observe(on_change, names="value")

    def values(self, target: str) -> dict[str, Any]:
        """``objectives`` (None for one objective: the target) and ``constraints`` of an OptunaConfig."""
        lines = [line.strip() for line in self.constraints.value.splitlines() if line.strip()]
        more = list(self.more.value)
        return {"objectives": [target, *more] if more else None, "constraints": lines}

    def set(self, cfg: Any, target: W.Dropdown) -> None:
        """Show an OptunaConfig's objectives (the first one in ``target``) and constraints."""
        self.constraints.value = "\n".join(cfg.constraints or ())
        self.more.value = ()
        if cfg.objectives is None:
            return
        try:
            objectives = parse_objectives(cfg.objectives)
        except ConfigError:  # shown by the panel's validation of the carried config
            return
        first = objectives[0].name
        if first not in [v for _, v in target.options]:
            target.options = [*target.options, (first, first)]
        target.value = first
        self.more.value = tuple(f"{o.metric}:{o.direction[:3]}" for o in objectives[1:])


class BudgetInput:
    """The global budget: a mode and the one number it needs (trials, seconds, or trials without improvement)."""

    def __init__(self, on_change: Callable[..., None]) -> None:
        self._on_change = on_change
        label, width = {"description_width": LABEL_WIDTH}, "300px"
        self.mode = W.ToggleButtons(options=[("Trials", "trials"), ("Time", "time"), ("Convergence", "convergence")],
                                    value="trials", style={"button_width": "110px"},
                                    tooltips=["a number of trials", "a time limit in seconds",
                                              "stop after N trials without improvement"])
        self.n_trials = W.IntText(value=100, description="Trials", style=label, layout=W.Layout(width=width))
        self.time_limit = W.FloatText(value=60.0, description="Seconds", style=label, layout=W.Layout(width=width))
        self.patience = W.IntText(value=30, description="Patience (trials)", style=label, layout=W.Layout(width=width))
        self.error = _err_html()
        self.mode.observe(self.refresh, names="value")
        for w in (self.n_trials, self.time_limit, self.patience):
            w.observe(on_change, names="value")

    def refresh(self, *_: Any) -> None:
        """Show only the number the chosen mode needs, then let the panel re-validate."""
        _show(self.n_trials, self.mode.value == "trials")
        _show(self.time_limit, self.mode.value == "time")
        _show(self.patience, self.mode.value == "convergence")
        self._on_change()

    def values(self) -> dict[str, Any]:
        """The OptunaConfig budget fields (the numbers of the other modes are None)."""
        mode = self.mode.value
        return {
            "budget_mode": mode,
            "n_trials": int(self.n_trials.value) if mode == "trials" else None,
            "time_limit": float(self.time_limit.value) if mode == "time" else None,
            "convergence_patience": int(self.patience.value) if mode == "convergence" else None,
        }

    def set(self, cfg: Any) -> None:
        """Show an OptunaConfig's budget (an unknown mode shows as trials; its error comes from validation)."""
        self.mode.value = cfg.budget_mode if cfg.budget_mode in BUDGET_MODES else "trials"
        if cfg.n_trials is not None:
            self.n_trials.value = int(cfg.n_trials)
        if cfg.time_limit is not None:
            self.time_limit.value = float(cfg.time_limit)
        if cfg.convergence_patience is not None:
            self.patience.value = int(cfg.convergence_patience)


class ParamRow:
    """One strategy parameter: optimise checkbox, range (min/max/step or choices) or a fixed value."""

    def __init__(self, param: Param, on_change: Callable[..., None], looks: Looks | None = None) -> None:
        self.param = p = param
        lk = looks or Looks()
        tip = p.description or p.name
        self.optimize = lk.widget(W.Checkbox, value=bool(p.optimize), description=p.name, indent=False, tooltip=tip,
                                  layout={"width": "190px"})
        if p.kind in ("int", "float"):
            num = W.IntText if p.kind == "int" else W.FloatText
            lo = next(v for v in (p.opt_low, p.low, p.default) if v is not None)
            hi = next(v for v in (p.opt_high, p.high, p.default) if v is not None)
            step = p.opt_step if p.opt_step is not None else (1 if p.kind == "int" else 0)
            small = {"layout": {"width": "150px"}, "style": {"description_width": "34px"}}
            self.min = lk.widget(num, value=lo, description="min", **small)
            self.max = lk.widget(num, value=hi, description="max", **small)
            self.step = lk.widget(num, value=step, description="step", tooltip="0 = continuous" if p.kind == "float"
                                  else "", **small)
            self.choices = None
            self.fixed = lk.widget(num, value=p.default, description="value", layout={"width": "160px"},
                                   style={"description_width": "44px"})
            self.range_box = W.HBox([self.min, self.max, self.step])  # own layouts: shown and hidden
            watched = [self.min, self.max, self.step, self.fixed]
        else:
            options = [(str(c), c) for c in (p.choices or ())]
            self.min = self.max = self.step = None
            self.choices = lk.widget(W.SelectMultiple, options=options, value=tuple(p.choices or ()),
                                     rows=min(4, len(options)), layout={"width": "300px"},
                                     tooltip="the choices to try (Ctrl/Shift-click to select several)")
            self.fixed = lk.widget(W.Dropdown, options=options, value=p.default, description="value",
                                   layout={"width": "220px"}, style={"description_width": "44px"})
            self.range_box = W.HBox([self.choices])
            watched = [self.choices, self.fixed]
        self.error = _err_html(lk)
        self.fixed_box = W.HBox([self.fixed])
        self.box = lk.widget(W.HBox, children=[self.optimize, self.range_box, self.fixed_box, self.error],
                             layout={"align_items": "center"})
        self.optimize.observe(self._toggle, names="value")
        for w in [self.optimize, *watched]:
            w.observe(on_change, names="value")
        self._toggle()

    @property
    def name(self) -> str:
        return self.param.name

    def _toggle(self, *_: Any) -> None:
        _show(self.range_box, self.optimize.value)
        _show(self.fixed_box, not self.optimize.value)

    def range(self) -> dict[str, Any]:
        """This row's ``param_ranges`` entry."""
        if self.choices is not None:
            return {"choices": list(self.choices.value)}
        cast = int if self.param.kind == "int" else float
        step = self.step.value
        out = {"min": cast(self.min.value), "max": cast(self.max.value)}
        if not (self.param.kind == "float" and step == 0):
            out["step"] = cast(step)
        return out

    def value(self) -> Any:
        v = self.fixed.value
        if self.param.kind == "int":
            return int(v)
        if self.param.kind == "float":
            return float(v)
        return v

    def set_range(self, low: Any = None, high: Any = None, step: Any = None, choices: Any = None) -> None:
        if self.choices is not None:
            if choices is not None:
                self.choices.value = tuple(c for c in self.param.choices or () if c in set(choices))
            return
        if low is not None:
            self.min.value = low
        if high is not None:
            self.max.value = high
        if self.param.kind == "float" and step is None:
            self.step.value = 0
        elif step is not None:
            self.step.value = step

    def set_error(self, message: str) -> None:
        self.error.value = error_markup(message)


__all__ = [
    "BudgetInput", "DataSourceInput", "ERR_STYLE", "FieldError", "LABEL_WIDTH", "ParamRow", "ScoreWeightsInput",
    "WindowInput", "error_markup", "is_visible", "target_options",
]
