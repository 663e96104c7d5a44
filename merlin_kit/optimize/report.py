"""How a run is shown to a person, as text and tables: one implementation for the CLI, the notebook and reports.

Plotly-free on purpose: the CLI and headless scripts show runs through this
module without importing the notebook's charting stack.

* :func:`progress_text` -- where a running run stands (``7 / 50 trials``);
* :func:`summary_lines` -- a finished run in a few lines;
* :func:`results_table` -- every result as a DataFrame, the target first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from optuna.trial import FrozenTrial

from ..metrics import METRIC_NAMES
from ._attrs import ERROR_ATTR
from ._state import Progress

if TYPE_CHECKING:
    from ._engine import OptimizationRun

#: the metrics of the compact table (the CLI's): what a trader reads first
KEY_METRICS = ("net_profit_pct", "max_drawdown_pct", "total_trades", "win_rate", "profit_factor", "romad",
               "sharpe_ratio")


def fmt_seconds(s: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 01 min``; ``—`` when unknown."""
    if s is None or not math.isfinite(s):
        return "—"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def fmt_value(v: Any) -> str:
    """A parameter or metric value, floats to 6 significant digits."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def progress_text(p: Progress) -> str:
    """Finished/budget, elapsed/limit or since-improvement/patience, in the budget's own unit."""
    if p.budget_mode == "trials":
        return f"{p.finished} / {int(p.budget)} trials"
    if p.budget_mode == "time":
        return f"{fmt_seconds(p.elapsed)} / {fmt_seconds(p.budget)} ({p.finished} trials)"
    return f"{int(p.done)} / {int(p.budget)} trials without improvement ({p.finished} trials)"


def trial_error(trial: FrozenTrial) -> str | None:
    """The error a worker recorded on a failed trial (None if it recorded none)."""
    return trial.user_attrs.get(ERROR_ATTR)


def target_column(run: "OptimizationRun") -> str:
    """Name of the results column that holds the run's target (``score`` or the metric)."""
    return "score" if run.metric == "score" else run.metric


def summary_lines(run: "OptimizationRun") -> list[str]:
    """A finished run in plain text: counts and speed, the best result, workers that had trouble."""
    s = run.summary
    if s is None:
        return [f"Study {run.study_name}: not finished"]
    target = target_column(run)
    lines = [
        f"Study {s.study_name}: {s.total_trials} trials ({s.completed_trials} complete, {s.pruned_trials} pruned, "
        f"{s.failed_trials} failed) in {s.optimization_time_seconds:.1f} s with {s.workers} worker(s), "
        f"{s.trials_per_second:.1f} trials/s; stopped: {s.stop_reason}",
    ]
    best = run.best
    if best is not None:
        value = best.target_value(run.metric)
        names = {d.name for d in run.space}
        lines.append(f"Best {target} {fmt_value(value)} (trial {best.trial_number}, {run.direction}) with "
                     + ", ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items() if k in names))
        if len(run.objectives) > 1:
            lines[-1] += (f"; Pareto front: {sum(r.pareto for r in run.results)} trials, best {target} first "
                          f"({', '.join(f'{o.metric} {o.direction}' for o in run.objectives)})")
    else:
        lines.append("No complete trial.")
    for w in s.worker_reports:
        if w.had_trouble:
            lines.append(f"worker {w.id} (pid {w.pid}) exit code {w.exitcode}: {w.last_error}")
    lines += [f"Warning: {w}" for w in s.warnings]
    return lines


def results_table(run: "OptimizationRun", *, sort_by: str | None = None, ascending: bool | None = None,
                  top: int | None = None, states: Sequence[str] | None = None, compact: bool = False,
                  distinct: bool = False) -> pd.DataFrame:
    """Every result as a DataFrame: the target first, then trial, state, score, parameters and every metric.

    Several objectives: each one's column after the target (the first), and ``pareto``;
    constraints: ``feasible``, ``violation`` (sum of positive violations) and one
    ``violation: <constraint>`` column each.  Sorted best first (the run's order) unless ``sort_by`` names a column; ``ascending``
    defaults to the target's direction for the target and to descending otherwise.
    ``states`` keeps only those trial states (e.g. ``["COMPLETE"]``); ``compact`` keeps
    the target, the optimised parameters and :data:`KEY_METRICS` (what fits a terminal).
    ``distinct`` folds trials with the same optimised parameters into the first (best)
    of them, with a ``trials`` column counting them: samplers such as TPE re-sample a
    good point, and a top 10 of four parameter sets tells the reader little.
    """
    target = target_column(run)
    optimised = [d.name for d in run.space]
    objectives = [o.metric for o in getattr(run, "objectives", ())][1:]  # the primary one is ``target``
    constraints = [c.text for c in getattr(run, "constraints", ())]
    rows = []
    for r in run.results:
        row: dict[str, Any] = {target: r.score if target == "score" else r.metrics.get(target)}
        row.update({m: r.score if m == "score" else r.metrics.get(m) for m in objectives})
        row.update({"trial": r.trial_number, "state": r.state})
        if objectives:
            row["pareto"] = r.pareto
        if constraints:
            row.update(feasible=r.feasible, violation=r.violation)
            row.update({f"violation: {c}": v for c, v in zip(constraints, r.constraint_values)})
        row["score"] = r.score
        row.update({k: r.params[k] for k in optimised if k in r.params})
        row.update(r.params)
        row.update({k: r.metrics.get(k) for k in METRIC_NAMES if k not in row})
        row.update(objective_score=r.metrics.get("score"), worker=r.worker, note=r.note)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if compact:
        keep = [target, *objectives, "trial", "state", "pareto", "feasible", "violation", "score", *KEY_METRICS,
                *optimised]
        frame = frame[[c for c in dict.fromkeys(keep) if c in frame.columns]]
    if states is not None:
        frame = frame[frame["state"].isin(list(states))]
    if sort_by is not None:
        if sort_by not in frame.columns:
            raise KeyError(f"sort_by: no column {sort_by!r}; columns: {', '.join(frame.columns)}")
        if ascending is None:
            ascending = run.direction == "minimize" if sort_by == target else False
        frame = frame.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    if distinct:
        frame = _fold_duplicates(frame, [n for n in optimised if n in frame.columns])
    frame = frame.reset_index(drop=True)
    return frame.head(top) if top is not None else frame


def _fold_duplicates(frame: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """The first row of each (state, parameter set), in the frame's order, with ``trials``: how many it stands for."""
    keys = frame[["state", *params]].astype(str).apply(tuple, axis=1)
    counts = keys.map(keys.value_counts())
    first = ~keys.duplicated(keep="first")
    out = frame[first].copy()
    out.insert(out.columns.get_loc("trial") + 1, "trials", counts[first].astype(int))
    return out


__all__ = ["KEY_METRICS", "fmt_seconds", "fmt_value", "progress_text", "results_table", "summary_lines",
           "target_column", "trial_error"]
