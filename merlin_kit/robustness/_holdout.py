"""Hold-out test of a finished run: its top results on a window the optimisation did not see."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..backtest import Backtester
from ..data import prepare
from ..errors import ConfigError, DataError
from ._runs import _check_top_k, _complete_results, _trade_days

if TYPE_CHECKING:
    from ..optimize import OptimizationRun


#: the metrics shown side by side by :func:`run_holdout` (after the run's target)
HOLDOUT_METRICS = ("net_profit_pct", "max_drawdown_pct", "total_trades", "win_rate", "profit_factor", "romad",
                   "sharpe_ratio")


def holdout_split(frame: pd.DataFrame, days: int, end: Any = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Keep the last ``days`` calendar days of ``frame`` (up to ``end``) out of an optimisation.

    Returns ``(optimisation_end, holdout_start)``: the last bar before the hold-out
    and its first bar (the first bar later than ``end - days``), to pass as the
    optimisation's ``end`` and as :func:`run_holdout`'s ``start``.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"hold-out days must be a whole number >= 1, got {days!r}", field="holdout")
    index = frame.index
    last = index[-1] if end is None else min(index[-1], _utc(end))
    pos = int(index.searchsorted(last - pd.Timedelta(days=days), side="right"))
    if pos <= 0 or pos >= len(index) or index[pos] > last:
        raise ConfigError(
            f"a hold-out of the last {days} days (from {last - pd.Timedelta(days=days)}) leaves "
            f"{'no bar to optimise on' if pos <= 0 else 'no bar to test on'}; the data spans {index[0]} .. {last}",
            field="holdout")
    return index[pos - 1], index[pos]


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _annualised(pct: Any, days: float) -> float:
    if pct is None or not days > 0:
        return math.nan
    return float(pct) * 365.0 / days


def run_holdout(run: "OptimizationRun", start: Any, end: Any = None, top_k: int = 20) -> pd.DataFrame:
    """The run's top ``top_k`` complete results on a hold-out window, beside their in-sample metrics.

    The hold-out window is ``[start, end]`` (``end`` None: the last bar) of the run's
    whole data file, with the run's ``warmup_bars`` before ``start`` (warm-up may lie
    in the optimisation window; no trade opens before ``start``).  Its trading part
    must not overlap the optimisation's (first trading bar to last bar), else
    ``ConfigError(field="start")``.

    Columns: ``trial``; ``is_<m>`` and ``holdout_<m>`` for the run's target and
    :data:`HOLDOUT_METRICS` (IS values from the results; hold-out values from a
    backtest of the same parameters, one Backtester for all; for the ``score``
    target the hold-out scores are the run's post-hoc scoring of the hold-out
    metrics of these results); ``is_rank`` / ``holdout_rank`` (1 = best by the target
    among these results; undefined values rank last); ``is_annual_return_pct`` /
    ``holdout_annual_return_pct`` (net profit % × 365 ÷ the window's days, first
    trading bar to last bar); ``profit_degradation`` (hold-out ÷ IS annualised
    return; NaN when the IS return is ≤ 0, where the ratio means nothing).
    ``table.attrs`` holds both windows (``is_window``, ``holdout_window``).
    """
    k = _check_top_k(top_k)
    results = _complete_results(run, k)
    frame = getattr(run, "_frame", None)
    if frame is None:
        from ..data import load_data

        frame = load_data(run.run_config.data_path, name=run.run_config.data_name)
    try:
        window = prepare(frame, start, end, run.opt.warmup_bars)
    except DataError as exc:
        raise ConfigError(f"hold-out window: {exc}", field="start") from exc
    is_data = run._prepared
    is_first, is_last = is_data.index[is_data.trade_start_idx], is_data.index[-1]
    ho_first, ho_last = window.index[window.trade_start_idx], window.index[-1]
    if ho_first <= is_last and ho_last >= is_first:
        raise ConfigError(f"the hold-out window {ho_first} .. {ho_last} overlaps the optimisation window "
                          f"{is_first} .. {is_last}; choose a window entirely before or after it", field="start")
    bt = Backtester(run.strategy, window)
    ho_metrics = [bt.run(r.params)[0] for r in results]
    metric = run.metric
    if metric == "score":
        from ..scoring import score_all

        for m, s in zip(ho_metrics, score_all(ho_metrics, run.score_config)):
            m["score"] = s
    shown = [metric] + [m for m in HOLDOUT_METRICS if m != metric]
    is_days, ho_days = _trade_days(is_data), _trade_days(window)
    rows = []
    for r, ho in zip(results, ho_metrics):
        row: dict[str, Any] = {"trial": r.trial_number}
        for name in shown:
            row[f"is_{name}"] = r.target_value(metric) if name == metric else r.metrics.get(name)
            row[f"holdout_{name}"] = ho.get(name)
        rows.append(row)
    table = pd.DataFrame(rows)
    ascending = run.direction == "minimize"
    for side in ("is", "holdout"):
        values = pd.to_numeric(table[f"{side}_{metric}"], errors="coerce")
        table[f"{side}_rank"] = values.rank(ascending=ascending, method="min", na_option="bottom").astype(int)
    is_ann = [_annualised(r.metrics.get("net_profit_pct"), is_days) for r in results]
    ho_ann = [_annualised(m.get("net_profit_pct"), ho_days) for m in ho_metrics]
    table["is_annual_return_pct"] = is_ann
    table["holdout_annual_return_pct"] = ho_ann
    table["profit_degradation"] = [h / i if i > 0 else math.nan for i, h in zip(is_ann, ho_ann)]
    table.attrs.update(is_window=(is_first, is_last), holdout_window=(ho_first, ho_last))
    return table
