"""Results of a finished run in the notebook: CSV export, figures, equity comparison, HTML report.

The text and the table themselves (:func:`results_table`, :func:`summary_lines`)
come from :mod:`merlin_kit.optimize.report`, shared with the CLI.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from ..optimize.report import results_table, summary_lines, target_column
from ..optimize import pareto_points
from . import figures
from .pareto import pareto_figure

#: the renderer of static figures (papermill / nbclient / no widgets): the figure JSON only, which
#: JupyterLab draws natively and which keeps executed notebooks small
STATIC_RENDERER = os.environ.get("MERLIN_KIT_PLOTLY_RENDERER", "plotly_mimetype")


def export_csv(run: Any, path: str | os.PathLike, **table_kwargs: Any) -> Path:
    """Write :func:`results_table` to ``path`` (folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results_table(run, **table_kwargs).to_csv(path, index=False)
    return path


def top_results(run: Any, top: int = 5) -> list[Any]:
    """The best ``top`` COMPLETE results in the run's order."""
    return [r for r in run.results if r.state == "COMPLETE"][:top]


def compare_equity(run: Any, top: int = 5) -> go.Figure:
    """Equity curves of the ``top`` best results (each re-run as a full backtest) on one chart."""
    curves = []
    target = target_column(run)
    for rank, r in enumerate(top_results(run, top), start=1):
        bt = run.backtest(r)
        value = r.score if target == "score" else r.objective
        label = f"#{rank} trial {r.trial_number}" + ("" if value is None else f" ({target} {value:.4g})")
        start = bt.data.trade_start_idx
        curves.append((label, bt.equity.iloc[start:]))
    return figures.compare_equity_figure(curves, title=f"Top {len(curves)} results: equity")


def best_backtest(run: Any) -> Any | None:
    best = run.best
    return None if best is None else best.backtest()


def run_figures(run: Any, *, top: int = 5) -> dict[str, go.Figure]:
    """Every figure of a finished run: history, parallel, equity (best), importances, comparison."""
    trials = _run_trials(run)
    figs = {} if len(run.objectives) < 2 else {
        "pareto": pareto_figure(pareto_points(run.run_trials(), run.objectives, run.constraints), run.objectives)}
    figs |= {
        "history": figures.history_figure(trials, run.direction, target_column(run)),
        "parallel": figures.parallel_figure(trials, run.space, target_column(run), run.direction),
    }
    bt = best_backtest(run)
    if bt is not None:
        figs["equity"] = figures.equity_figure(bt, title=f"Best trial {run.best.trial_number}: equity and drawdown")
    imp, note = figures.param_importances(run.study)
    figs["importance"] = figures.importance_figure(imp, note)
    if top and len(top_results(run, top)) > 1:
        figs["compare"] = compare_equity(run, top)
    return figs


def _run_trials(run: Any) -> list[Any]:
    """Finished trials of this run (a resumed study's older trials excluded)."""
    try:
        return run.run_trials()
    except Exception:  # storage gone: fall back to the results
        return [_ResultTrial(r) for r in run.results]


class _ResultTrial:
    """An OptimizationResult seen as a trial (number, state, value, params) for the figure builders."""

    def __init__(self, r: Any) -> None:
        self.number = r.trial_number
        self.state = r.state
        self.value = r.objective
        self.values = r.values
        self.params = r.params


def show_static(fig: go.Figure) -> None:
    """Display a figure as static output (figure JSON, no widget state)."""
    fig.show(renderer=STATIC_RENDERER)


_SORT_JS = """
<script>
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.style.cursor = 'pointer';
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
      rows.sort(function (a, b) {
        var x = a.cells[col].innerText, y = b.cells[col].innerText, nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
</script>
"""


def write_report(run: Any, path: str | os.PathLike, *, include_plotlyjs: str | bool = "inline", top: int = 5,
                 max_rows: int = 200) -> Path:
    """A standalone HTML report: summary, configuration, figures and the (click-to-sort) results table.

    By default plotly.js is embedded once (~4.5 MB), so the report draws its charts
    offline, on an air-gapped machine or years later; ``include_plotlyjs="cdn"``
    keeps the file small but needs the internet to draw them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figs = run_figures(run, top=top)
    inline = include_plotlyjs in (True, "inline")
    parts = []
    for i, (name, fig) in enumerate(figs.items()):
        js: Any = (True if i == 0 else False) if inline else include_plotlyjs
        parts.append(f'<section id="fig-{name}">' + fig.to_html(full_html=False, include_plotlyjs=js) + "</section>")
    table = results_table(run)
    shown = table.head(max_rows)
    table_html = shown.to_html(index=False, classes="sortable results", float_format=lambda x: f"{x:.6g}",
                               na_rep="", border=0)
    config = {"target": run.config.target, "direction": run.direction, "budget_mode": run.config.budget_mode,
              "n_trials": run.config.n_trials, "time_limit": run.config.time_limit,
              "convergence_patience": run.config.convergence_patience, "sampler": run.config.sampler,
              "seed": run.config.seed, "workers": run.opt.worker_processes, "strategy": run.strategy.id,
              "space": [{k: v for k, v in d.__dict__.items() if v is not None} for d in run.space]}
    title = f"merlin_kit report: {run.study_name}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }}
table.results {{ border-collapse: collapse; font-size: 12px; }}
table.results th, table.results td {{ padding: 2px 6px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }}
table.results th {{ background: #f3f3f3; position: sticky; top: 0; }}
.scroll {{ overflow: auto; max-height: 600px; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {_dt.datetime.now().isoformat(timespec="seconds")}.</p>
<h2>Summary</h2>
<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in summary_lines(run))}</ul>
<h2>Configuration</h2>
<pre>{html.escape(json.dumps(config, indent=2, default=str))}</pre>
<h2>Figures</h2>
{''.join(parts)}
<h2>Results ({len(shown)} of {len(table)} rows; click a column to sort)</h2>
<div class="scroll">{table_html}</div>
{_SORT_JS}
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path


__all__ = [
    "compare_equity", "export_csv", "results_table", "run_figures", "show_static", "summary_lines", "target_column",
    "top_results", "write_report",
]
