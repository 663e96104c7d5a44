"""Validation of a finished run, shared part: daily returns, the run helpers, the DSR table and PBO of a run."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..backtest import Backtester
from ..errors import ConfigError
from ..metrics import month_starts, monthly_returns
from ._pbo import PBOResult, pbo
from ._sharpe import DeflatedSharpe, sharpe_variance

if TYPE_CHECKING:
    from ..optimize import OptimizationResult, OptimizationRun


# ------------------------------------------------------------ daily returns (PBO rows)

_NS_PER_DAY = 86_400 * 10**9


def _daily_grid(index: pd.DatetimeIndex) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Every UTC day from the first bar's to the last bar's, and per day the bar whose value closes it.

    That bar is the day's last bar or, for a day without bars, the last bar of the
    latest earlier day with one (the value is carried forward).  Computed once per
    window and shared by every column of a PBO matrix.
    """
    idx = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    day = idx.as_unit("ns").asi8 // _NS_PER_DAY
    if day.shape[0] == 0:
        return pd.DatetimeIndex([], tz="UTC"), np.empty(0, dtype=np.intp)
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])  # last bar of each day that has bars
    have = day[last]
    calendar = np.arange(have[0], have[-1] + 1)
    pos = last[np.searchsorted(have, calendar, side="right") - 1]
    return pd.to_datetime(calendar * _NS_PER_DAY, utc=True).as_unit("ns"), pos


def daily_returns(equity: pd.Series) -> pd.Series:
    """Daily returns (%) of an equity curve, as the PBO rows of a run are built (spec).

    The value of each UTC day is the equity at its last bar; a day without a bar
    carries the previous day's value (return 0 that day, and the next return is
    measured from the carried value).  Returns are percent changes from one day's
    value to the next, indexed by the later day: the first day has none, so there
    is one row less than calendar days.  A naive index is taken as UTC.
    """
    if not isinstance(equity, pd.Series) or not isinstance(equity.index, pd.DatetimeIndex):
        raise ConfigError("daily_returns needs a pandas Series with a DatetimeIndex (an equity curve)", field="equity")
    days, pos = _daily_grid(equity.index)
    values = equity.to_numpy(dtype=np.float64)[pos]
    return pd.Series((values[1:] / values[:-1] - 1.0) * 100.0, index=days[1:].rename("day"), name="daily_return_pct")


# ------------------------------------------------------------------ runs: shared helpers


def _check_top_k(top_k: Any, *, allow_none: bool = False) -> int | None:
    if top_k is None and allow_none:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        allowed = "None or an integer >= 1" if allow_none else "an integer >= 1"
        raise ConfigError(f"top_k must be {allowed}, got {top_k!r}", field="top_k")
    return int(top_k)


def _complete_results(run: "OptimizationRun", top_k: int | None) -> list["OptimizationResult"]:
    """The run's complete results with metrics, best first (the run's order), at most ``top_k``."""
    complete = [r for r in run.results if r.state == "COMPLETE" and r.metrics]
    if not complete:
        from ..errors import OptimizationError

        raise OptimizationError("the run has no complete result to validate (is it finished? did every trial fail?)")
    return complete if top_k is None else complete[:top_k]


def _window_backtester(run: "OptimizationRun") -> Backtester:
    """One Backtester (and so one indicator cache) on the run's own window, for many parameter sets."""
    if getattr(run, "_prepared", None) is None:
        raise ConfigError("the run has no prepared window", field="data")
    return Backtester(run.strategy, run._prepared)


def _trade_days(data: Any) -> float:
    """Length of a prepared window's trading part in days: first trading bar to last bar."""
    span = data.index[-1] - data.index[data.trade_start_idx]
    return span.total_seconds() / 86_400.0


# ------------------------------------------------------------------ runs: Deflated Sharpe


def study_sharpe_population(run: "OptimizationRun") -> tuple[int, float | None]:
    """``(N, V)`` for the DSR of a run's candidates (spec): N = every COMPLETE trial of the study
    (earlier runs of a resumed study included; queued trials a run retired unrun excluded), V =
    population variance of their defined ``sharpe_ratio`` metrics (``None`` if none is defined)."""
    from optuna.trial import TrialState

    from ..optimize._attrs import CANCELLED_ATTR, METRICS_ATTR

    trials = [t for t in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not t.user_attrs.get(CANCELLED_ATTR)]
    sharpes = [(t.user_attrs.get(METRICS_ATTR) or {}).get("sharpe_ratio") for t in trials]
    return len(trials), sharpe_variance(sharpes)


def run_deflated_sharpe(run: "OptimizationRun", top_k: int = 20) -> pd.DataFrame:
    """Deflated Sharpe Ratio of the run's top ``top_k`` complete results, in the run's order.

    Columns: ``trial``, ``sharpe_ratio`` (the result's monthly SR), ``sr0`` (expected
    maximum SR of ``N`` skill-less trials with variance ``V``, see
    :func:`study_sharpe_population`), ``dsr``, ``skew``, ``kurtosis`` (Pearson) of the
    monthly excess returns and ``months`` (T).  The monthly returns are those behind
    ``sharpe_ratio``: each result is backtested again on the run's window and
    :func:`~merlin_kit.metrics.monthly_returns` is taken over the same months as the
    metric.  ``N`` and ``V`` are in ``table.attrs["n_trials"]`` / ``["sr_variance"]``.
    Undefined values are NaN.
    """
    k = _check_top_k(top_k)
    results = _complete_results(run, k)
    n_trials, variance = study_sharpe_population(run)
    bt = _window_backtester(run)
    starts = month_starts(bt.data.time)
    rows = []
    for r in results:
        output = bt.strategy.run(bt.data, bt.strategy.validate_params(r.params), bt.cache)
        d = DeflatedSharpe.from_monthly(r.metrics.get("sharpe_ratio"), monthly_returns(output.equity, starts),
                                        n_trials=n_trials, sr_variance=variance)
        rows.append((r.trial_number, d.sharpe_ratio, d.expected_max_sharpe, d.dsr, d.skew, d.kurtosis, d.track_length))
    table = pd.DataFrame(rows, columns=["trial", "sharpe_ratio", "sr0", "dsr", "skew", "kurtosis", "months"])
    for col in ("sharpe_ratio", "sr0", "dsr", "skew", "kurtosis"):
        table[col] = table[col].astype(np.float64)
    table.attrs.update(n_trials=n_trials, sr_variance=variance)
    return table


# --------------------------------------------------------------------------- runs: PBO


def _param_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()))


def run_daily_returns(run: "OptimizationRun", top_k: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The PBO matrix of a run: ``(columns, returns)``.

    Columns = the distinct parameter sets of its complete results (the first, i.e.
    best, result of each set; with ``top_k`` only the best ``top_k`` sets); rows =
    their daily returns (%) over the run's trading window (:func:`daily_returns`).
    Every set is backtested again on the run's window with one
    :class:`~merlin_kit.backtest.Backtester` (one indicator cache, no metrics); the
    equity is cut at the first trading bar (warm-up excluded).  ``columns``: trial,
    target value and optimised parameters, one row per matrix column in column
    order; ``returns``: the matrix, indexed by UTC day, columns named by trial number.
    """
    k = _check_top_k(top_k, allow_none=True)
    seen: dict[tuple[Any, ...], "OptimizationResult"] = {}
    for r in _complete_results(run, None):
        seen.setdefault(_param_key(r.params), r)
        if k is not None and len(seen) >= k:
            break
    chosen = list(seen.values())
    bt = _window_backtester(run)
    start = bt.data.trade_start_idx
    days, pos = _daily_grid(bt.data.index[start:])
    values = np.empty((pos.shape[0], len(chosen)))
    for j, r in enumerate(chosen):
        output = bt.strategy.run(bt.data, bt.strategy.validate_params(r.params), bt.cache)
        values[:, j] = output.equity[start:][pos]
    trials = [r.trial_number for r in chosen]
    returns = pd.DataFrame((values[1:] / values[:-1] - 1.0) * 100.0, index=days[1:].rename("day"),
                           columns=pd.Index(trials, name="trial"))
    dims = [d.name for d in run.space]
    columns = pd.DataFrame([{"trial": r.trial_number, run.metric: r.target_value(run.metric),
                             **{n: r.params.get(n) for n in dims}} for r in chosen])
    return columns, returns


def run_pbo(run: "OptimizationRun", top_k: int | None = None, n_splits: int = 16) -> PBOResult:
    """PBO (CSCV) of a run over the matrix of :func:`run_daily_returns` (distinct parameter sets' daily returns).

    The returned :class:`PBOResult` carries that matrix's ``columns`` (trial, target
    value, optimised parameters per column) and ``returns``.  Fewer than 2 distinct
    sets: ``ConfigError(field="top_k")``.
    """
    columns, returns = run_daily_returns(run, top_k)
    if returns.shape[1] < 2:
        raise ConfigError(f"PBO needs at least 2 distinct parameter sets; the run has {returns.shape[1]} among its "
                          "complete results" + ("" if top_k is None else f" (top_k={top_k})"), field="top_k")
    return replace(pbo(returns.to_numpy(), n_splits), columns=columns, returns=returns)
