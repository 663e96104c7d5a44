"""Plotly figures of an optimisation, shared by the live monitor (``FigureWidget``) and static output.

Every builder returns a plain ``go.Figure`` built from plain data, so the
live monitor can copy its traces into a ``FigureWidget`` and update them in
place, while papermill runs and HTML reports use the same figures statically.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: long lines are thinned to about this many points in figures (the data keeps every bar)
MAX_CURVE_POINTS = 1500
HISTORY_TITLE = "Optimisation history"
PARALLEL_TITLE = "Parameters vs objective"
_BEST_COLOR = "#d62728"
_TRIAL_COLOR = "#1f77b4"


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=50, b=40), template="plotly_white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def first_value(t: Any) -> float | None:
    """A trial's (first) objective value: multi-objective trials have no ``.value``, only ``.values``."""
    values = getattr(t, "values", None)
    return values[0] if values else getattr(t, "value", None)


def running_best(values: Sequence[float], direction: str) -> list[float]:
    """Best value so far after each trial (``direction`` is maximize or minimize)."""
    out: list[float] = []
    best: float | None = None
    for v in values:
        if best is None or (v > best if direction == "maximize" else v < best):
            best = v
        out.append(best)
    return out


def history_data(trials: Iterable[Any], direction: str) -> tuple[list[int], list[float], list[float]]:
    """(trial numbers, objective values, running best) of the COMPLETE trials with a finite value."""
    pairs = sorted((t.number, float(first_value(t))) for t in _complete(trials))
    numbers = [n for n, _ in pairs]
    values = [v for _, v in pairs]
    return numbers, values, running_best(values, direction)


def history_figure(trials: Iterable[Any] = (), direction: str = "maximize", metric: str = "objective") -> go.Figure:
    """Each trial's objective (markers) and the running best (line) against the trial number."""
    numbers, values, best = history_data(trials, direction)
    fig = go.Figure([
        go.Scatter(x=numbers, y=values, mode="markers", name="trial", marker=dict(size=6, color=_TRIAL_COLOR, opacity=0.6)),
        go.Scatter(x=numbers, y=best, mode="lines", name="best so far", line=dict(color=_BEST_COLOR, width=2, shape="hv")),
    ])
    fig.update_xaxes(title_text="trial")
    fig.update_yaxes(title_text=metric)
    return _layout(fig, HISTORY_TITLE)


def parallel_dimensions(trials: Iterable[Any], space: Sequence[Any], metric: str = "objective") -> tuple[list[dict], list[float]]:
    """Parallel-coordinates dimensions (one per parameter, objective last) of the COMPLETE trials."""
    rows = sorted(_complete(trials), key=lambda t: t.number)
    values = [float(first_value(t)) for t in rows]
    dims: list[dict] = []
    for dim in space:
        raw = [t.params.get(dim.name) for t in rows]
        if dim.kind == "categorical":
            labels = [str(c) for c in (dim.choices or ())]
            index = {c: i for i, c in enumerate(labels)}
            dims.append(dict(label=dim.name, values=[index.get(str(v), -1) for v in raw],
                             tickvals=list(range(len(labels))), ticktext=labels, range=[0, max(0, len(labels) - 1)]))
        else:
            lo, hi = float(dim.low), float(dim.high)
            dims.append(dict(label=dim.name, values=[float(v) if v is not None else math.nan for v in raw],
                             range=[lo, hi] if hi > lo else [lo - 1, hi + 1]))
    dims.append(dict(label=metric, values=values))
    return dims, values


#: the parallel-coordinates chart draws at most this many trials (a sample beyond: more lines are only noise)
MAX_PARALLEL_LINES = 500


def _complete(trials: Iterable[Any]) -> list[Any]:
    return [t for t in trials if getattr(t.state, "name", t.state) == "COMPLETE" and first_value(t) is not None
            and math.isfinite(first_value(t))]


def parallel_sample(trials: Iterable[Any], direction: str = "maximize", limit: int = MAX_PARALLEL_LINES) -> list[Any]:
    """At most ``limit`` COMPLETE trials: all of them, or the best tenth plus an even spread of the rest."""
    done = sorted(_complete(trials), key=lambda t: t.number)
    if len(done) <= limit:
        return done
    ranked = sorted(done, key=first_value, reverse=direction == "maximize")
    top = ranked[: limit // 10]
    chosen = {t.number for t in top}
    rest = [t for t in done if t.number not in chosen]
    step = len(rest) / (limit - len(top))
    picked = top + [rest[int(i * step)] for i in range(limit - len(top))]
    return sorted(picked, key=lambda t: t.number)


def parallel_title(shown: int, total: int) -> str:
    return PARALLEL_TITLE if shown >= total else f"{PARALLEL_TITLE} (best {shown // 10 if shown >= 10 else shown} " \
        f"and a sample: {shown} of {total} trials)"


def parallel_figure(trials: Iterable[Any] = (), space: Sequence[Any] = (), metric: str = "objective",
                    direction: str = "maximize") -> go.Figure:
    """Every parameter against the objective: one line per COMPLETE trial (at most
    :data:`MAX_PARALLEL_LINES`), coloured by the objective."""
    trials = list(trials)
    shown = parallel_sample(trials, direction)
    total = len(_complete(trials))
    dims, values = parallel_dimensions(shown, space, metric)
    fig = go.Figure(go.Parcoords(
        dimensions=dims, labelangle=-30, labelfont=dict(size=11), tickfont=dict(size=9),
        line=dict(color=values, colorscale="Viridis", showscale=True, colorbar=dict(title=dict(text=metric))),
    ))
    _layout(fig, parallel_title(len(shown), total), height=460)
    fig.update_layout(margin=dict(l=70, r=40, t=130, b=30), title=dict(y=0.98))
    return fig


def thin_index(n: int, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread bars, the first and last always included."""
    if n <= max_points:
        return np.arange(n)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return idx


def drawdown_pct(equity: pd.Series) -> pd.Series:
    """Drawdown from the running peak, in % (0 or negative)."""
    peak = equity.cummax()
    return (equity / peak - 1.0) * 100.0


def equity_figure(result: Any, title: str = "Best trial: equity and drawdown") -> go.Figure:
    """Equity (mark-to-market) and balance with trade entries/exits marked, and the drawdown below.

    ``result`` is a :class:`~merlin_kit.backtest.BacktestResult` (``.equity``, ``.balance``, ``.trades``).
    """
    equity: pd.Series = result.equity
    start = getattr(getattr(result, "data", None), "trade_start_idx", 0) or 0
    equity = equity.iloc[start:]
    balance: pd.Series = result.balance.iloc[start:]
    dd = drawdown_pct(equity)
    # thin the curves (the drawdown keeps each bucket's deepest point), shorter numbers and UTC times without offset
    idx = thin_index(len(equity))
    x = _naive_utc(equity.index[idx])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=x, y=np.round(equity.values[idx], 4), mode="lines", name="equity",
                             line=dict(color=_TRIAL_COLOR, width=1.5)), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=np.round(balance.values[idx], 4), mode="lines", name="balance",
                             line=dict(color="#7f7f7f", width=1, dash="dot")), row=1, col=1)
    trades: pd.DataFrame = result.trades
    if len(trades):
        for side, symbol, color in (("long", "triangle-up", "#2ca02c"), ("short", "triangle-down", _BEST_COLOR)):
            sel = trades[trades["direction"] == side]
            if len(sel):
                y = np.round(result.equity.reindex(sel["entry_time"]).values, 4)
                fig.add_trace(go.Scatter(
                    x=_naive_utc(sel["entry_time"]), y=y, mode="markers", name=f"{side} entry",
                    marker=dict(symbol=symbol, size=9, color=color, line=dict(width=0.5, color="black")),
                    customdata=np.stack([sel["profit_pct"].values, sel["exit_time"].astype(str).values], axis=1),
                    hovertemplate="%{x}<br>" + side + " entry, exit %{customdata[1]}<br>profit %{customdata[0]:.2f} %<extra></extra>",
                ), row=1, col=1)
        y_exit = np.round(result.equity.reindex(trades["exit_time"]).values, 4)
        fig.add_trace(go.Scatter(x=_naive_utc(trades["exit_time"]), y=y_exit, mode="markers", name="exit",
                                 marker=dict(symbol="x-thin", size=7, color="black", line=dict(width=1.2, color="black"))),
                      row=1, col=1)
    buckets = np.searchsorted(idx, np.arange(len(dd)), side="right") - 1 if len(dd) else np.empty(0, dtype=np.int64)
    dd_thin = pd.Series(dd.values).groupby(buckets).min().values if len(dd) else np.empty(0)
    fig.add_trace(go.Scatter(x=x, y=np.round(dd_thin, 3), mode="lines", name="drawdown %", fill="tozeroy",
                             line=dict(color=_BEST_COLOR, width=1)), row=2, col=1)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    return _layout(fig, title, height=520)


def importance_figure(importances: dict[str, float] | None, note: str = "") -> go.Figure:
    """Horizontal bars of parameter importances (or an empty figure with ``note``)."""
    fig = go.Figure()
    if importances:
        items = sorted(importances.items(), key=lambda kv: kv[1])
        fig.add_trace(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                             marker=dict(color=_TRIAL_COLOR), name="importance"))
        fig.update_xaxes(title_text="importance (fANOVA)")
    else:
        fig.add_annotation(text=note or "not enough trials for parameter importances", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    return _layout(fig, "Parameter importances", height=max(260, 28 * len(importances or {}) + 100))


#: fewer COMPLETE trials than this and importances are not computed
MIN_TRIALS_FOR_IMPORTANCE = 4


def param_importances(study: Any, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> tuple[dict[str, float] | None, str]:
    """``optuna.importance.get_param_importances`` guarded for few or degenerate trials: (importances, note)."""
    import optuna

    try:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    except Exception as exc:  # a storage that went away
        return None, f"importances unavailable: {exc}"
    if len(complete) < min_trials:
        return None, f"parameter importances need at least {min_trials} complete trials (have {len(complete)})"
    values = {first_value(t) for t in complete}
    if len(values) < 2:
        return None, "every trial has the same objective: importances are undefined"
    # several objectives: importances for the primary (first) one
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        imp = optuna.importance.get_param_importances(study, target=target)
    except Exception as exc:  # optuna raises for single-valued parameters, dynamic spaces, ...
        return None, f"importances unavailable: {type(exc).__name__}: {exc}"
    return {k: float(v) for k, v in imp.items()}, ""


def compare_equity_figure(curves: Sequence[tuple[str, pd.Series]], title: str = "Top results: equity") -> go.Figure:
    """Several equity curves (label, series) on one chart."""
    fig = go.Figure()
    for label, series in curves:
        idx = thin_index(len(series), 1000)
        fig.add_trace(go.Scatter(x=_naive_utc(series.index[idx]), y=np.round(series.values[idx], 4), mode="lines",
                                 name=label))
    fig.update_yaxes(title_text="equity")
    return _layout(fig, title, height=420)


def _naive_utc(times: Any) -> list[str]:
    """Times as short UTC strings ("2025-06-01 13:45", seconds only when needed): plotly reads them as
    dates, and the figure JSON is half the size of nanosecond ISO strings with an offset."""
    idx = pd.DatetimeIndex(times)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    fmt = "%Y-%m-%d %H:%M" if (idx.second == 0).all() and (idx.microsecond == 0).all() else "%Y-%m-%d %H:%M:%S.%f"
    return list(idx.strftime(fmt))


__all__ = [
    "compare_equity_figure", "drawdown_pct", "equity_figure", "history_data", "history_figure", "importance_figure",
    "parallel_dimensions", "parallel_figure", "param_importances", "running_best", "thin_index",
]
