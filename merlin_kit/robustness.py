"""Overfitting statistics: is the best of many trials real, or the luck of the draw?

An optimiser that tries thousands of parameter sets will find a good-looking one
on pure noise.  Two answers from the literature, as defined in ``VALIDATION.md``:

* the **Deflated Sharpe Ratio** -- D. H. Bailey and M. López de Prado, "The
  Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and
  Non-Normality", *Journal of Portfolio Management* 40(5), 2014, pp. 94-107.
  The probability that the chosen Sharpe ratio beats the best one expected from
  ``N`` skill-less trials, given its track length, skewness and kurtosis;
* the **Probability of Backtest Overfitting** by combinatorially symmetric
  cross-validation (CSCV) -- D. H. Bailey, J. M. Borwein, M. López de Prado and
  Q. J. Zhu, "The Probability of Backtest Overfitting", *Journal of
  Computational Finance* 20(4), 2017, pp. 39-69.  How often the in-sample
  winner ends in the bottom half out of sample.

Numpy and the standard library only (``statistics.NormalDist`` gives Φ and Φ⁻¹):
scipy is not a dependency of the kit.  :func:`pbo` is vectorised over the
``binom(S, S/2)`` combinations -- per-group sums and sums of squares are
computed once, so no rows are copied per combination.

The second half applies them (and three plainer checks) to a finished
optimisation run; ``OptimizationRun`` exposes each as a thin method:

* :func:`run_deflated_sharpe` -- DSR of the top results (N and V over the study);
* :func:`run_pbo` -- PBO over the distinct parameter sets' daily returns
  (:func:`run_daily_returns`, :func:`daily_returns`), all backtests on one
  :class:`~merlin_kit.backtest.Backtester`;
* :func:`run_stress_test` -- each top result with every numeric optimised
  parameter moved ±1 and ±2 steps (:func:`neighbour_moves`);
* :func:`run_holdout` -- the top results backtested on a window the optimisation
  did not see, ranked side by side with their in-sample metrics;
* :func:`monte_carlo` -- bootstrap of a backtest's trade sequence: distribution
  of the maximum drawdown and the final return.

This module sits above ``merlin_kit.optimize`` (it reads runs), so the engine
imports it lazily inside those methods, never at module level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .backtest import Backtester, BacktestResult
from .data import prepare
from .errors import ConfigError, DataError, ParameterError
from .metrics import RISK_FREE_MONTHLY_PCT, month_starts, monthly_returns

if TYPE_CHECKING:
    from .optimize import OptimizationResult, OptimizationRun
    from .optimize.config import SearchDim
    from .strategies import Strategy

__all__ = [
    "EULER_GAMMA",
    "FRAGILE_RETENTION",
    "TIE_TOLERANCE",
    "DeflatedSharpe",
    "MonteCarloResult",
    "PBOResult",
    "daily_returns",
    "deflated_sharpe",
    "excess_moments",
    "expected_max_sharpe",
    "monte_carlo",
    "neighbour_moves",
    "pbo",
    "run_deflated_sharpe",
    "run_holdout",
    "run_daily_returns",
    "run_pbo",
    "run_stress_test",
    "sharpe_variance",
    "study_sharpe_population",
]

#: Euler–Mascheroni constant, to the digits the spec gives
EULER_GAMMA = 0.5772156649
_NORMAL = NormalDist()
#: Performances equal to within this relative difference are ties in pbo(): two columns whose
#: halves have the same mean/std through different sums can differ in the last bits.
TIE_TOLERANCE = 1e-10
_CHUNK_CELLS = 1 << 20  # combinations x columns evaluated at once in pbo() (bounds memory at ~100 MB)


# ------------------------------------------------------------------ Deflated Sharpe


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float | None:
    """SR0: the expected maximum Sharpe ratio of ``n_trials`` skill-less trials.

    ``SR0 = √V ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e)))``; ``None`` where the spec
    says undefined (``N ≤ 1`` or ``V < 0``) and for a non-finite ``V``.
    """
    n = _trial_count(n_trials)
    v = _finite(sr_variance)
    if n <= 1 or v is None or v < 0:
        return None
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n) + EULER_GAMMA * _NORMAL.inv_cdf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(v) * z


def deflated_sharpe(sr: float | None, *, n_trials: int, sr_variance: float, skew: float | None,
                    kurtosis: float | None, track_length: int) -> float | None:
    """DSR: ``Φ((SR − SR0) √(T − 1) / √(1 − g3 SR + (g4 − 1)/4 SR²))``, clipped to [0, 1].

    ``sr`` is the candidate's (monthly) Sharpe ratio, ``track_length`` T its number
    of monthly returns, ``skew``/``kurtosis`` (non-excess, Pearson: 3 for a normal
    law) population moments of its monthly excess returns (:func:`excess_moments`).
    ``None`` where undefined: no SR, SR0 undefined, ``T < 3``, a missing moment or a
    square-root argument ≤ 0.
    """
    sr_f, g3, g4 = _finite(sr), _finite(skew), _finite(kurtosis)
    sr0 = expected_max_sharpe(sr_variance, n_trials)
    t = _trial_count(track_length, "track_length")
    if sr_f is None or g3 is None or g4 is None or sr0 is None or t < 3:
        return None
    radicand = 1.0 - g3 * sr_f + (g4 - 1.0) / 4.0 * sr_f * sr_f
    if not radicand > 0:
        return None
    z = (sr_f - sr0) * math.sqrt(t - 1) / math.sqrt(radicand)
    return min(1.0, max(0.0, _NORMAL.cdf(z)))


def excess_moments(monthly_returns_pct: Iterable[float]) -> tuple[float | None, float | None]:
    """(skewness, Pearson kurtosis) of the monthly excess returns ``r − 2/12 %``, population moments.

    ``m_k`` = mean of ``(x − mean)^k``; skew = ``m3 / m2^1.5``, kurtosis = ``m4 / m2²``
    (non-excess).  ``(None, None)`` with no return or a zero variance.  Monthly
    returns as :func:`merlin_kit.metrics.monthly_returns` gives them.
    """
    x = _as_array(monthly_returns_pct) - RISK_FREE_MONTHLY_PCT
    if x.ndim != 1 or x.shape[0] == 0 or not np.all(np.isfinite(x)):
        return None, None
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    if m2 == 0:
        return None, None
    return float(np.mean(d ** 3)) / m2 ** 1.5, float(np.mean(d ** 4)) / (m2 * m2)


def sharpe_variance(sharpe_ratios: Iterable[float | None]) -> float | None:
    """Population variance ``V`` of the defined Sharpe ratios of a study (``None``/NaN skipped).

    ``None`` when no ratio is defined.  Pair it with ``N`` = every completed
    trial, not only the defined or distinct ones (spec).
    """
    values = [float(s) for s in sharpe_ratios if s is not None and math.isfinite(float(s))]
    return float(np.var(values)) if values else None


@dataclass(frozen=True)
class DeflatedSharpe:
    """A candidate's DSR with every number that went into it (for reports and JSON)."""

    dsr: float | None
    sharpe_ratio: float | None
    expected_max_sharpe: float | None
    n_trials: int
    sr_variance: float | None
    skew: float | None
    kurtosis: float | None
    track_length: int

    @classmethod
    def from_monthly(cls, sharpe_ratio: float | None, monthly_returns_pct: Iterable[float], *,
                     n_trials: int, sr_variance: float | None) -> "DeflatedSharpe":
        """From the candidate's monthly returns (%): T, skewness and kurtosis computed here."""
        monthly = _as_array(monthly_returns_pct)
        skew, kurt = excess_moments(monthly)
        t = int(monthly.shape[0])
        if sr_variance is None:
            sr0 = dsr = None
        else:
            sr0 = expected_max_sharpe(sr_variance, n_trials)
            dsr = deflated_sharpe(sharpe_ratio, n_trials=n_trials, sr_variance=sr_variance, skew=skew,
                                  kurtosis=kurt, track_length=t)
        return cls(dsr=dsr, sharpe_ratio=_finite(sharpe_ratio), expected_max_sharpe=sr0, n_trials=int(n_trials),
                   sr_variance=None if sr_variance is None else float(sr_variance), skew=skew,
                   kurtosis=kurt, track_length=t)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_array(values: Iterable[float]) -> np.ndarray:
    return np.asarray(values if isinstance(values, (np.ndarray, list, tuple)) else list(values), dtype=np.float64)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected a number, got {x!r}") from exc
    return f if math.isfinite(f) else None


def _trial_count(n: Any, field: str = "n_trials") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"{field} must be an integer, got {n!r}", field=field)
    return int(n)


# ------------------------------------------------------------------------- PBO


@dataclass(frozen=True)
class PBOResult:
    """CSCV outcome; arrays are indexed by combination in ``itertools.combinations`` order."""

    #: share of combinations whose logit λ is ≤ 0
    pbo: float
    #: λ = ln(ω / (1 − ω)) per combination (the paper's histogram)
    logits: np.ndarray
    #: IS performance (mean / std, ddof 1) of the IS winner n* per combination
    is_performance: np.ndarray
    #: OOS performance of the same n* (the degradation scatter against ``is_performance``)
    oos_performance: np.ndarray
    #: n* (column index) per combination
    best_columns: np.ndarray
    n_combinations: int
    n_splits: int
    #: rows dropped at the start so that the S groups are of equal size (T mod S)
    rows_dropped: int
    #: :func:`run_pbo` only: one row per matrix column (its trial number, target value and parameters)
    columns: pd.DataFrame | None = None
    #: :func:`run_pbo` only: the matrix itself, daily returns (%) indexed by UTC day, one column per trial
    returns: pd.DataFrame | None = None


def pbo(matrix: Any, n_splits: int = 16) -> PBOResult:
    """Probability of Backtest Overfitting by CSCV (spec steps 1-5).

    ``matrix``: ``T`` rows (periods in time order, e.g. daily returns) × ``N`` ≥ 2
    columns (configurations), finite numbers.  ``n_splits`` S: even, ≥ 2, with
    ``T`` ≥ S (the first ``T mod S`` rows are dropped) and at least 2 rows in each
    half.  Performance = mean / std (ddof 1), 0 for a zero deviation (all values
    equal); n* = the first column with the highest IS performance; ω = average
    rank (1 = lowest) of n*'s OOS performance among the N columns ÷ (N + 1).
    Performances within :data:`TIE_TOLERANCE` (relative) of each other are ties.
    """
    m = _check_matrix(matrix)
    s = _check_splits(n_splits)
    t, n_cols = m.shape
    dropped = t % s
    g = t // s
    min_rows = s if s >= 4 else 4  # S groups of >= 1 row, and >= 2 rows per half for a std (ddof 1)
    if t < min_rows:
        raise ConfigError(
            f"PBO needs at least {min_rows} rows for n_splits={s} ({s} groups of equal size, each half at "
            f"least 2 rows), the matrix has {t}", field="matrix")
    x = m[dropped:]
    half = s // 2
    rows_half = g * half

    # per-group sums and sums of squares, once.  Not centred: equal values in a half give
    # bit-identical sums whatever the column's other rows (and sums of sparse or
    # integer returns are exact), so ties in the spec's sense stay exact ties.
    groups = x.reshape(s, g, n_cols)
    sums = groups.sum(axis=1)                      # (S, N)
    sq = np.einsum("sgn,sgn->sn", groups, groups)  # (S, N)

    is_groups = np.array(list(combinations(range(s), half)), dtype=np.intp)  # (K, S/2), combinations order
    k = is_groups.shape[0]
    member = np.zeros((k, s), dtype=bool)
    member[np.arange(k)[:, None], is_groups] = True
    oos_groups = np.nonzero(~member)[1].reshape(k, half)  # the complement, groups in time order
    const_is, const_oos = _constant_halves(groups, member.astype(np.float64), half)

    logits = np.empty(k)
    is_perf = np.empty(k)
    oos_perf = np.empty(k)
    best = np.empty(k, dtype=np.intp)
    chunk = max(1, _CHUNK_CELLS // (n_cols * half))
    for lo in range(0, k, chunk):
        hi = min(k, lo + chunk)
        perf_is = _performance(sums, sq, is_groups[lo:hi], rows_half)
        perf_oos = _performance(sums, sq, oos_groups[lo:hi], rows_half)
        for col, hit in const_is.items():
            perf_is[hit[lo:hi], col] = 0.0
        for col, hit in const_oos.items():
            perf_oos[hit[lo:hi], col] = 0.0
        rows = np.arange(hi - lo)
        top = perf_is.max(axis=1, keepdims=True)
        n_star = np.argmax(perf_is >= top - TIE_TOLERANCE * np.abs(top), axis=1)  # the first column on ties
        v = perf_oos[rows, n_star][:, None]
        tol = TIE_TOLERANCE * np.abs(v)
        below = np.count_nonzero(perf_oos < v - tol, axis=1)
        tied = np.count_nonzero(np.abs(perf_oos - v) <= tol, axis=1)  # n* itself included
        rank = below + (tied + 1) / 2.0  # average of the ranks below+1 .. below+tied
        omega = rank / (n_cols + 1)
        logits[lo:hi] = np.log(omega / (1.0 - omega))
        is_perf[lo:hi] = perf_is[rows, n_star]
        oos_perf[lo:hi] = perf_oos[rows, n_star]
        best[lo:hi] = n_star
    return PBOResult(
        pbo=float(np.count_nonzero(logits <= 0)) / k, logits=logits, is_performance=is_perf,
        oos_performance=oos_perf, best_columns=best, n_combinations=k, n_splits=s, rows_dropped=dropped,
    )


def _performance(sums: np.ndarray, sq: np.ndarray, halves: np.ndarray, n: int) -> np.ndarray:
    """mean / std (ddof 1) per (combination, column) from the groups' sums and sums of squares.

    ``halves`` (combinations x S/2) names the groups of each half; their sums are
    added in group order, the same for every column.  ``var = (Σx² − (Σx)²/n) / (n − 1)``
    loses digits only when a column's mean dwarfs its deviation (|mean|/std ≳ 1e6),
    which returns do not do.
    """
    s = sums[halves[:, 0]]  # (c, N); fancy indexing copies
    q = sq[halves[:, 0]]
    for j in range(1, halves.shape[1]):
        s += sums[halves[:, j]]
        q += sq[halves[:, j]]
    mean = s / n
    var = (q - s * mean) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        perf = mean / np.sqrt(var)
    perf[~(var > 0)] = 0.0  # numerically zero deviation (exactly constant halves are set by the caller)
    return perf


def _constant_halves(groups: np.ndarray, member: np.ndarray, half: int
                     ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per column that can be constant on half the groups: which combinations' IS / OOS rows all equal.

    Exact (max == min), so "a zero deviation gives 0" does not hang on rounding in
    the sums.  A half is constant when its ``half`` groups are constant with one
    common value; only columns with at least ``half`` constant groups are looked at.
    """
    gmax, gmin = groups.max(axis=1), groups.min(axis=1)  # (S, N)
    constant = gmax == gmin
    const_is: dict[int, np.ndarray] = {}
    const_oos: dict[int, np.ndarray] = {}
    for col in np.flatnonzero(constant.sum(axis=0) >= half):
        values, counts = np.unique(gmax[constant[:, col], col], return_counts=True)
        hit_is = np.zeros(member.shape[0], dtype=bool)
        hit_oos = np.zeros(member.shape[0], dtype=bool)
        for value in values[counts >= half]:  # a value held by fewer groups cannot fill a half
            ind = (constant[:, col] & (gmax[:, col] == value)).astype(np.float64)
            hit_is |= (member @ ind) == half
            hit_oos |= ((1.0 - member) @ ind) == half
        if hit_is.any():
            const_is[int(col)] = hit_is
        if hit_oos.any():
            const_oos[int(col)] = hit_oos
    return const_is, const_oos


def _check_matrix(matrix: Any) -> np.ndarray:
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"PBO matrix must be numbers (rows = periods, columns = configurations): {exc}",
                          field="matrix") from exc
    if m.ndim != 2:
        raise ConfigError(f"PBO matrix must be 2-D (rows = periods, columns = configurations), got {m.ndim}-D "
                          f"with shape {m.shape}", field="matrix")
    if m.shape[1] < 2:
        raise ConfigError(f"PBO needs at least 2 columns (configurations), got {m.shape[1]}", field="matrix")
    bad = ~np.isfinite(m)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ConfigError(
            f"PBO matrix has {int(bad.sum())} NaN/infinite value(s), first at row {r}, column {c} ({m[r, c]}); "
            f"fill or drop them first (e.g. a day without a bar carries the previous equity: return 0)",
            field="matrix")
    return m


def _check_splits(n_splits: Any) -> int:
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2 or n_splits % 2:
        raise ConfigError(f"n_splits must be an even integer >= 2, got {n_splits!r}", field="n_splits")
    return int(n_splits)


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
        from .errors import OptimizationError

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

    from .optimize._attrs import CANCELLED_ATTR, METRICS_ATTR

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


# -------------------------------------------------------------------- runs: stress test

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


# ------------------------------------------------------------------------ Monte Carlo

_MC_CHUNK_CELLS = 1 << 22  # paths x trades compounded at once (bounds memory at ~100 MB)


@dataclass(frozen=True)
class MonteCarloResult:
    """Bootstrap of a trade sequence: ``n`` paths of the same number of trades drawn with replacement.

    Arrays are indexed by path.  Drawdowns are on the closed-trade balance
    (``(peak − value) / peak × 100``, the starting capital counting as a peak), as
    ``max_drawdown_pct`` of a backtest.
    """

    #: maximum drawdown (%) of each path
    max_drawdown_pct: np.ndarray
    #: final return (%) of each path: last balance / initial capital − 1
    final_return_pct: np.ndarray
    #: (n, trades) indices into ``trade_returns_pct`` drawn for each path
    indices: np.ndarray
    #: each trade's return on the balance before it (%), in the original order
    trade_returns_pct: np.ndarray
    #: the original sequence's maximum drawdown and final return (%), for comparison
    actual_max_drawdown_pct: float
    actual_return_pct: float
    initial_capital: float
    seed: int | None

    @property
    def n_paths(self) -> int:
        return int(self.max_drawdown_pct.shape[0])

    @property
    def n_trades(self) -> int:
        return int(self.trade_returns_pct.shape[0])

    @property
    def quantiles(self) -> pd.DataFrame:
        """5 / 50 / 95 % quantiles (numpy's linear rule): rows ``max_drawdown_pct`` and ``final_return_pct``."""
        q = [5.0, 50.0, 95.0]
        return pd.DataFrame([np.percentile(self.max_drawdown_pct, q), np.percentile(self.final_return_pct, q)],
                            index=["max_drawdown_pct", "final_return_pct"], columns=["5%", "50%", "95%"])


def _trade_returns(trades_or_backtest: Any, initial_capital: float | None) -> tuple[np.ndarray, float]:
    """Per-trade returns (%) on the balance before each trade, and the capital they compound from."""
    if isinstance(trades_or_backtest, BacktestResult):
        capital = float(trades_or_backtest.output.initial_capital if initial_capital is None else initial_capital)
        trades = trades_or_backtest.trades
    else:
        capital = 100.0 if initial_capital is None else float(initial_capital)
        trades = trades_or_backtest
    if not (math.isfinite(capital) and capital > 0):
        raise ConfigError(f"initial_capital must be a positive number, got {initial_capital!r}",
                          field="initial_capital")
    if isinstance(trades, pd.DataFrame):
        if "net_pnl" not in trades.columns:
            raise ConfigError("a trades table needs a 'net_pnl' column (as BacktestResult.trades)", field="trades")
        if "exit_time" in trades.columns:
            trades = trades.sort_values("exit_time", kind="stable")
        pnl = trades["net_pnl"].to_numpy(dtype=np.float64)
        before = capital + np.concatenate(([0.0], np.cumsum(pnl)[:-1]))
        if np.any(before <= 0):
            raise ConfigError("the balance falls to zero or below during the trades; their returns are undefined",
                              field="trades")
        returns = pnl / before * 100.0
    else:
        returns = _as_array(trades_or_backtest)
        if returns.ndim != 1:
            raise ConfigError("trade returns must be a 1-D sequence of percentages", field="trades")
    if not np.all(np.isfinite(returns)) or np.any(returns <= -100.0):
        raise ConfigError("trade returns must be finite and above -100 %", field="trades")
    return returns, capital


def _paths_stats(growth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max drawdown %, final return %) of paths of per-trade growth factors (rows), starting at 1."""
    balance = np.cumprod(growth, axis=1)
    peak = np.maximum(np.maximum.accumulate(balance, axis=1), 1.0)
    dd = ((peak - balance) / peak).max(axis=1, initial=0.0) * 100.0
    final = (balance[:, -1] - 1.0) * 100.0 if balance.shape[1] else np.zeros(balance.shape[0])
    return dd, final


def monte_carlo(trades_or_backtest: Any, n: int = 1000, seed: int | None = None,
                initial_capital: float | None = None) -> MonteCarloResult:
    """Bootstrap the trade sequence: ``n`` paths, each the same number of trades drawn with replacement.

    ``trades_or_backtest``: a :class:`~merlin_kit.backtest.BacktestResult`, a trades
    table with ``net_pnl`` (as ``BacktestResult.trades``; ordered by ``exit_time``
    when present), or a sequence of per-trade returns in % of the balance.  A trade's
    return is its net P&L ÷ the balance before it (``profit_pct`` is on the
    position's notional, not the account, so it is not used); compounding the
    original sequence from ``initial_capital`` (default: the backtest's, else 100)
    gives the backtest's final balance.  Each path compounds its draws from the
    capital; its maximum drawdown and final return are reported (percentages do not
    depend on the capital's size).  ``seed``: same seed, same paths
    (``numpy.random.default_rng``).  Vectorised over paths.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}", field="n")
    returns, capital = _trade_returns(trades_or_backtest, initial_capital)
    m = returns.shape[0]
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, m, size=(int(n), m)) if m else np.zeros((int(n), 0), dtype=np.int64)
    growth = 1.0 + returns / 100.0
    dd = np.empty(int(n))
    final = np.empty(int(n))
    chunk = max(1, _MC_CHUNK_CELLS // max(m, 1))
    for lo in range(0, int(n), chunk):
        hi = min(int(n), lo + chunk)
        dd[lo:hi], final[lo:hi] = _paths_stats(growth[indices[lo:hi]])
    actual_dd, actual_final = _paths_stats(growth[None, :])
    return MonteCarloResult(max_drawdown_pct=dd, final_return_pct=final, indices=indices, trade_returns_pct=returns,
                            actual_max_drawdown_pct=float(actual_dd[0]), actual_return_pct=float(actual_final[0]),
                            initial_capital=capital, seed=seed)


# ---------------------------------------------------------------------------- hold-out

#: the metrics shown side by side by :func:`run_holdout` (after the run's target)
HOLDOUT_METRICS = ("net_profit_pct", "max_drawdown_pct", "total_trades", "win_rate", "profit_factor", "romad",
                   "sharpe_ratio")


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
        from .data import load_data

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
        from .scoring import score_all

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
