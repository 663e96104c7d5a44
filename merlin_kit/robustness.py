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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import combinations
from statistics import NormalDist
from typing import Any, Iterable

import numpy as np

from .errors import ConfigError
from .metrics import RISK_FREE_MONTHLY_PCT

__all__ = [
    "EULER_GAMMA",
    "TIE_TOLERANCE",
    "DeflatedSharpe",
    "PBOResult",
    "deflated_sharpe",
    "excess_moments",
    "expected_max_sharpe",
    "pbo",
    "sharpe_variance",
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
