"""The building blocks of the configuration panel: one parameter's row and the small widget helpers.

Kept apart from :mod:`merlin_kit.notebook.widgets` so that the panel module holds
only the panel (layout, config <-> widgets, validation, Run/Stop) and a piece
such as :class:`ParamRow` can be tested or reused on its own.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as W
import pandas as pd

from ..strategies import Param

LABEL_WIDTH = "150px"
#: inline style of every error message in the panel (red, a little smaller)
ERR_STYLE = "color:#c62828;font-size:90%"
_HIDDEN = "none"


def _label(text: str) -> W.HTML:
    """A right-aligned row label as wide as the panel's descriptions."""
    return W.HTML(f"<div style='text-align:right;padding-right:8px'>{html.escape(text)}</div>",
                  layout=W.Layout(width=LABEL_WIDTH))


def _err_html() -> W.HTML:
    """An empty slot beside a field, filled by :func:`error_markup` when the field is invalid."""
    return W.HTML("", layout=W.Layout(margin="0 0 0 8px"))


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


class ParamRow:
    """One strategy parameter: optimise checkbox, range (min/max/step or choices) or a fixed value."""

    def __init__(self, param: Param, on_change: Callable[..., None]) -> None:
        self.param = p = param
        tip = p.description or p.name
        self.optimize = W.Checkbox(value=bool(p.optimize), description=p.name, indent=False, tooltip=tip,
                                   layout=W.Layout(width="190px"))
        small = W.Layout(width="150px")
        if p.kind in ("int", "float"):
            num = W.IntText if p.kind == "int" else W.FloatText
            lo = next(v for v in (p.opt_low, p.low, p.default) if v is not None)
            hi = next(v for v in (p.opt_high, p.high, p.default) if v is not None)
            step = p.opt_step if p.opt_step is not None else (1 if p.kind == "int" else 0)
            style = {"description_width": "34px"}
            self.min = num(value=lo, description="min", layout=small, style=style)
            self.max = num(value=hi, description="max", layout=small, style=style)
            self.step = num(value=step, description="step", layout=small, style=style,
                            tooltip="0 = continuous" if p.kind == "float" else "")
            self.choices = None
            self.fixed = num(value=p.default, description="value", layout=W.Layout(width="160px"),
                             style={"description_width": "44px"})
            self.range_box = W.HBox([self.min, self.max, self.step])
            watched = [self.min, self.max, self.step, self.fixed]
        else:
            options = [(str(c), c) for c in (p.choices or ())]
            self.min = self.max = self.step = None
            self.choices = W.SelectMultiple(options=options, value=tuple(p.choices or ()),
                                            rows=min(4, len(options)), layout=W.Layout(width="300px"),
                                            tooltip="the choices to try (Ctrl/Shift-click to select several)")
            self.fixed = W.Dropdown(options=options, value=p.default, description="value",
                                    layout=W.Layout(width="220px"), style={"description_width": "44px"})
            self.range_box = W.HBox([self.choices])
            watched = [self.choices, self.fixed]
        self.error = _err_html()
        self.fixed_box = W.HBox([self.fixed])
        self.box = W.HBox([self.optimize, self.range_box, self.fixed_box, self.error],
                          layout=W.Layout(align_items="center"))
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


__all__ = ["ERR_STYLE", "LABEL_WIDTH", "ParamRow", "error_markup", "is_visible"]
