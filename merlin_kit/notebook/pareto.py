"""The Pareto front of a multi-objective run as a figure, for the live monitor and static output.

Two objectives: a scatter of every COMPLETE trial, the front highlighted (and
joined, best primary objective first), feasible trials off the front in blue,
infeasible ones grey.  Three to six: parallel coordinates, one axis per
objective, lines coloured the same way.  Builders take the plain points of
:func:`merlin_kit.optimize.pareto_points`, so a live chart and a finished
run's chart are the same figure.
"""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

from ..optimize import pareto_points

PARETO_TITLE = "Pareto front"
_FRONT, _FEASIBLE, _INFEASIBLE = "#d62728", "#1f77b4", "#b0b0b0"


def run_pareto_points(run: Any, trials: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """The points of a run's trials (default: its finished trials)."""
    return pareto_points(run.run_trials() if trials is None else trials, run.objectives, run.constraints)


def _label(o: Any) -> str:
    return f"{o.metric} ({'max' if o.direction == 'maximize' else 'min'})"


def pareto_figure(points: Sequence[dict[str, Any]], objectives: Sequence[Any]) -> go.Figure:
    """A scatter (two objectives) or parallel coordinates (more) of ``points``; see the module docstring."""
    n_front = sum(p["pareto"] for p in points)
    title = f"{PARETO_TITLE}: {n_front} of {len(points)} complete trials"
    if len(objectives) == 2:
        return _scatter(points, objectives, title)
    return _parallel(points, objectives, title)


def _scatter(points: Sequence[dict[str, Any]], objectives: Sequence[Any], title: str) -> go.Figure:
    def trace(rows: list[dict[str, Any]], name: str, color: str, mode: str = "markers") -> go.Scatter:
        return go.Scatter(
            x=[p["values"][0] for p in rows], y=[p["values"][1] for p in rows], mode=mode, name=name,
            marker=dict(size=8 if color == _FRONT else 6, color=color, opacity=0.9 if color == _FRONT else 0.6),
            line=dict(color=color, width=1.5, shape="hv"),
            text=[f"trial {p['trial']}" + ("" if p["feasible"] else f", violation {p['violation']:.4g}")
                  for p in rows], hoverinfo="x+y+text")

    reverse = objectives[0].direction == "maximize"
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["values"][0], reverse=reverse)
    fig = go.Figure([
        trace([p for p in points if not p["feasible"]], "infeasible", _INFEASIBLE),
        trace([p for p in points if p["feasible"] and not p["pareto"]], "feasible", _FEASIBLE),
        trace(front, "Pareto front", _FRONT, "markers+lines"),
    ])
    fig.update_xaxes(title_text=_label(objectives[0]))
    fig.update_yaxes(title_text=_label(objectives[1]))
    fig.update_layout(title=title, height=400, margin=dict(l=60, r=20, t=50, b=40), template="plotly_white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def _parallel(points: Sequence[dict[str, Any]], objectives: Sequence[Any], title: str) -> go.Figure:
    # 0 infeasible (grey), 1 feasible (blue), 2 on the front (red)
    colour = [2 if p["pareto"] else 1 if p["feasible"] else 0 for p in points]
    dims = [dict(label=_label(o), values=[p["values"][i] for p in points]) for i, o in enumerate(objectives)]
    fig = go.Figure(go.Parcoords(
        dimensions=dims, labelangle=-20, labelfont=dict(size=11), tickfont=dict(size=9),
        line=dict(color=colour, cmin=0, cmax=2,
                  colorscale=[[0, _INFEASIBLE], [0.5, _FEASIBLE], [1, _FRONT]]),
    ))
    fig.update_layout(title=title + " (red: front, blue: feasible, grey: infeasible)", height=440,
                      margin=dict(l=70, r=40, t=110, b=30), template="plotly_white")
    return fig


def update_pareto_widget(widget: Any, points: Sequence[dict[str, Any]], objectives: Sequence[Any]) -> None:
    """Refresh a ``FigureWidget`` made from :func:`pareto_figure` in place (the live monitor's chart)."""
    fresh = pareto_figure(points, objectives)
    with widget.batch_update():
        for old, new in zip(widget.data, fresh.data):
            if isinstance(new, go.Parcoords):
                old.dimensions = new.dimensions
                old.line.color = new.line.color
            else:
                old.x, old.y, old.text = new.x, new.y, new.text
        widget.layout.title.text = fresh.layout.title.text
