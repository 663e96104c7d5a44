"""Stress test of a finished run: each top result with its numeric parameters moved ±1 and ±2 steps."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ._runs import _check_top_k, _complete_results, _window_backtester

if TYPE_CHECKING:
    from ..optimize import OptimizationRun
    from ..optimize.config import SearchDim
    from ..strategies import Strategy


#: a result whose neighbours keep less than this share of its net profit (median) is fragile
FRAGILE_RETENTION = 0.7
_STEPS = (-2, -1, 1, 2)


def neighbour_moves(strategy: "Strategy", space: Sequence["SearchDim"], params: dict[str, Any]
                    ) -> list[tuple[str, int, Any]]:
    """``(parameter, steps, value)`` of every neighbour of ``params`` in the stress test.

    For each numeric dimension of the search space, in the space's order, the value
    moved by −2, −1, +1 and +2 steps, one parameter at a time.  Step = the search
    space's step for that parameter, else the parameter's ``opt_step``; a float
    parameter with neither is skipped.  A neighbour outside the search range
    (``SearchDim.low``/``high``) or the parameter's limits is skipped.  Float values
    are rounded to 10 decimals (``2.3 + 0.2`` is 2.5, not 2.4999999999999996).
    """
    moves: list[tuple[str, int, Any]] = []
    for dim in space:
        if dim.kind not in ("int", "float") or dim.name not in params:
            continue
        p = strategy.param(dim.name)
        step = dim.step if dim.step is not None else p.opt_step
        if step is None or not step > 0:
            continue
        base = params[dim.name]
        tol = 1e-9 * max(1.0, abs(float(step)))
        for k in _STEPS:
            value: Any = int(round(base + k * step)) if dim.kind == "int" else round(float(base) + k * float(step), 10)
            if (dim.low is not None and value < dim.low - tol) or (dim.high is not None and value > dim.high + tol):
                continue
            try:
                value = p.validate(value)
            except ParameterError:
                continue
            moves.append((dim.name, k, value))
    return moves


def run_stress_test(run: "OptimizationRun", top_k: int = 5) -> pd.DataFrame:
    """Parameter sensitivity of the run's top ``top_k`` complete results (:func:`neighbour_moves`).

    One row per result, in the run's order: ``trial``, ``net_profit_pct`` (the
    result's), ``neighbours`` (how many were backtested), ``retention`` (median
    neighbour net profit ÷ the result's), ``worst_param`` / ``worst_steps`` /
    ``worst_value`` / ``worst_net_profit_pct`` (the neighbour with the lowest net
    profit), ``profitable_share`` (fraction of neighbours with net profit > 0) and
    ``fragile`` (retention < :data:`FRAGILE_RETENTION`).

    A result whose own net profit is ≤ 0 has no meaningful retention: ``retention``
    is NaN and ``fragile`` is True.  A result without neighbours (no numeric
    optimised parameter with a step) has NaN retention and ``fragile`` None.
    Every neighbour's backtest is in ``table.attrs["neighbours"]`` (a DataFrame:
    trial, param, steps, from, to, net_profit_pct).
    """
    k = _check_top_k(top_k)
    bt = _window_backtester(run)
    rows, detail = [], []
    for r in _complete_results(run, k):
        own = float(r.metrics["net_profit_pct"])
        profits = []
        moves = neighbour_moves(run.strategy, run.space, r.params)
        for name, steps, value in moves:
            metrics, _, _ = bt.run({**r.params, name: value})
            profits.append(float(metrics["net_profit_pct"]))
            detail.append((r.trial_number, name, steps, r.params[name], value, profits[-1]))
        if profits:
            arr = np.asarray(profits)
            w = int(np.argmin(arr))
            worst = (moves[w][0], moves[w][1], moves[w][2], float(arr[w]))
            share = float(np.count_nonzero(arr > 0)) / arr.shape[0]
            retention = float(np.median(arr)) / own if own > 0 else math.nan
            fragile = True if own <= 0 else bool(retention < FRAGILE_RETENTION)
        else:
            worst, share, retention = (None, None, None, math.nan), math.nan, math.nan
            fragile = True if own <= 0 else None
        rows.append((r.trial_number, own, len(profits), retention, *worst, share, fragile))
    table = pd.DataFrame(rows, columns=["trial", "net_profit_pct", "neighbours", "retention", "worst_param",
                                        "worst_steps", "worst_value", "worst_net_profit_pct", "profitable_share",
                                        "fragile"])
    neighbours = pd.DataFrame(detail, columns=["trial", "param", "steps", "from", "to", "net_profit_pct"])
    for col in ("from", "to"):  # int and float parameters share the columns: keep each value's type
        neighbours[col] = pd.Series([d[3 if col == "from" else 4] for d in detail], dtype=object)
    table.attrs["neighbours"] = neighbours
    return table
