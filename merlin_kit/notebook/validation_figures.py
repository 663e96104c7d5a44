"""Plotly figures of the validation step: walk-forward windows and the overfitting statistics.

Same style as :mod:`merlin_kit.notebook.figures` (plain ``go.Figure``, white
template, thinned curves, short UTC times) so that a papermill run stays small:

* :func:`window_layout_figure` -- the IS / OOS windows as bars on a time axis;
* :func:`stitched_equity_figure` -- the stitched OOS equity, each OOS window shaded;
* :func:`is_oos_scatter_figure` -- IS against OOS net profit, one point per window;
* :func:`pbo_logit_figure` -- the histogram of the CSCV logits (Bailey et al. 2017, fig. 3);
* :func:`pbo_degradation_figure` -- OOS against IS performance of the IS winner per combination.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .figures import _BEST_COLOR, _TRIAL_COLOR, _layout, _naive_utc, thin_index

_IS_COLOR = _TRIAL_COLOR
_OOS_COLOR = "#ff7f0e"
#: the degradation scatter draws at most this many combinations (an even spread beyond)
MAX_SCATTER_POINTS = 2000
_DAY_MS = 86_400_000


def _ms(start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Length of ``[start, end]`` in milliseconds (plotly's unit for bar lengths on a date axis)."""
    return float((pd.Timestamp(end) - pd.Timestamp(start)) / pd.Timedelta(milliseconds=1))


def window_layout_figure(windows: Sequence[Any], title: str = "Walk-forward windows") -> go.Figure:
    """One row per window: its IS bar then its OOS bar on a time axis.

    ``windows``: the :class:`~merlin_kit.walkforward.Window` list of :func:`~merlin_kit.walkforward.split_windows`.
    """
    fig = go.Figure()
    labels = [f"w{w.number:02d}" for w in windows]
    parts = (("IS", _IS_COLOR, "is_start", "is_end"), ("OOS", _OOS_COLOR, "oos_start", "oos_end"))
    for kind, color, first, last in parts:
        starts = [getattr(w, first) for w in windows]
        ends = [getattr(w, last) for w in windows]
        bars = [getattr(w, f"{kind.lower()}_bars") for w in windows]
        fig.add_trace(go.Bar(
            y=labels, x=[_ms(a, b) for a, b in zip(starts, ends)], base=_naive_utc(starts), orientation="h",
            name=kind, marker=dict(color=color), customdata=np.stack([_naive_utc(ends), bars], axis=1),
            hovertemplate="%{y} " + kind + ": %{base} → %{customdata[0]}<br>%{customdata[1]} bars<extra></extra>",
        ))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(type="date")
    fig.update_yaxes(autorange="reversed", title_text="window")
    return _layout(fig, title, height=max(240, 34 * len(windows) + 120))


def stitched_equity_figure(result: Any, title: str = "Stitched out-of-sample equity") -> go.Figure:
    """The stitched OOS equity of a :class:`~merlin_kit.walkforward.WalkForwardResult` (starts at 100),
    every OOS window shaded and numbered."""
    equity: pd.Series = result.stitched.equity
    fig = go.Figure()
    if isinstance(equity.index, pd.DatetimeIndex) and len(equity):
        idx = thin_index(len(equity))
        fig.add_trace(go.Scatter(x=_naive_utc(equity.index[idx]), y=np.round(equity.values[idx], 4), mode="lines",
                                 name="stitched OOS equity", line=dict(color=_TRIAL_COLOR, width=1.5)))
    for i, w in enumerate(result.windows):
        win = w.window
        if win.oos_bars == 0:
            continue
        x0, x1 = _naive_utc([win.oos_start, win.oos_end])
        fig.add_vrect(x0=x0, x1=x1, fillcolor=_OOS_COLOR if i % 2 == 0 else "#bcbd22", opacity=0.10, line_width=0,
                      annotation_text=f"w{win.number:02d}" + (" flat" if w.flat else ""),
                      annotation_position="top left", annotation_font_size=10)
    fig.add_hline(y=100.0, line=dict(color="#7f7f7f", width=1, dash="dot"))
    fig.update_yaxes(title_text="equity (start = 100)")
    return _layout(fig, title, height=400)


def is_oos_scatter_figure(windows: pd.DataFrame, metric: str = "net_profit_pct",
                          title: str = "In-sample vs out-of-sample net profit per window") -> go.Figure:
    """IS against OOS ``metric`` per window (``windows``: :meth:`WalkForwardResult.windows_frame`), with the
    diagonal OOS = IS and the zero lines.  Points below the diagonal lost part of their IS edge out of sample."""
    x = pd.to_numeric(windows[f"is_{metric}"], errors="coerce").astype(float)
    y = pd.to_numeric(windows[f"oos_{metric}"], errors="coerce").astype(float)
    labels = [f"w{int(n):02d}" for n in windows["window"]]
    fig = go.Figure(go.Scatter(
        x=np.round(x, 4), y=np.round(y, 4), mode="markers+text", text=labels, textposition="top center", name="window",
        marker=dict(size=10, color=_OOS_COLOR, line=dict(width=0.5, color="black")),
        hovertemplate="%{text}<br>IS %{x:.2f}<br>OOS %{y:.2f}<extra></extra>",
    ))
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)], [0.0]])
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", name="OOS = IS",
                             line=dict(color="#7f7f7f", width=1, dash="dash")))
    fig.add_hline(y=0.0, line=dict(color="#7f7f7f", width=0.8))
    fig.add_vline(x=0.0, line=dict(color="#7f7f7f", width=0.8))
    fig.update_xaxes(title_text=f"IS {metric}")
    fig.update_yaxes(title_text=f"OOS {metric}")
    return _layout(fig, title, height=420)


def pbo_logit_figure(result: Any, bins: int = 30, title: str | None = None) -> go.Figure:
    """Histogram of the CSCV logits λ of a :class:`~merlin_kit.robustness.PBOResult` (pre-binned, so the
    figure holds ``bins`` bars, not one value per combination); PBO is the share at λ ≤ 0 (left of the line)."""
    logits = np.asarray(result.logits, dtype=float)
    logits = logits[np.isfinite(logits)]
    fig = go.Figure()
    if logits.size:
        counts, edges = np.histogram(logits, bins=bins)
        centres = (edges[:-1] + edges[1:]) / 2.0
        colors = [_BEST_COLOR if c <= 0 else _TRIAL_COLOR for c in centres]
        fig.add_trace(go.Bar(x=np.round(centres, 4), y=counts / logits.size, width=float(edges[1] - edges[0]),
                             marker=dict(color=colors), name="combinations",
                             hovertemplate="λ ≈ %{x:.2f}<br>%{y:.1%} of combinations<extra></extra>"))
    fig.add_vline(x=0.0, line=dict(color="black", width=1, dash="dash"))
    fig.update_xaxes(title_text="logit λ = ln(ω / (1 − ω)) of the IS winner's OOS rank")
    fig.update_yaxes(title_text="share of combinations", tickformat=".0%")
    return _layout(fig, title or f"PBO: logit distribution (PBO = {result.pbo:.1%}, "
                                 f"{result.n_combinations} combinations)", height=380)


def pbo_degradation_figure(result: Any, title: str = "PBO: performance degradation of the IS winner") -> go.Figure:
    """OOS against IS performance (mean / std of daily returns) of each combination's IS winner, with the
    least-squares line (at most :data:`MAX_SCATTER_POINTS` points drawn; the line uses every combination)."""
    x = np.asarray(result.is_performance, dtype=float)
    y = np.asarray(result.oos_performance, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    idx = thin_index(len(x), MAX_SCATTER_POINTS)
    fig = go.Figure(go.Scatter(x=np.round(x[idx], 5), y=np.round(y[idx], 5), mode="markers", name="combination",
                               marker=dict(size=5, color=_TRIAL_COLOR, opacity=0.5)))
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.array([x.min(), x.max()])
        fig.add_trace(go.Scatter(x=np.round(xs, 5), y=np.round(slope * xs + intercept, 5), mode="lines",
                                 name=f"fit: OOS = {slope:.2f} × IS {intercept:+.3f}",
                                 line=dict(color=_BEST_COLOR, width=2)))
    fig.add_hline(y=0.0, line=dict(color="#7f7f7f", width=0.8))
    fig.update_xaxes(title_text="IS performance of n* (mean / std)")
    fig.update_yaxes(title_text="OOS performance of n*")
    return _layout(fig, title, height=420)


__all__ = [
    "MAX_SCATTER_POINTS", "is_oos_scatter_figure", "pbo_degradation_figure", "pbo_logit_figure",
    "stitched_equity_figure", "window_layout_figure",
]
