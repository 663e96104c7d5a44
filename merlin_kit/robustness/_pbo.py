"""The Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2017) on a returns matrix."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError

#: Performances equal to within this relative difference are ties in pbo(): two columns whose
#: halves have the same mean/std through different sums can differ in the last bits.
TIE_TOLERANCE = 1e-10
_CHUNK_CELLS = 1 << 20  # combinations x columns evaluated at once in pbo() (bounds memory at ~100 MB)


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
