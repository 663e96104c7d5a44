"""Deflated Sharpe Ratio and PBO (VALIDATION.md), against hand arithmetic, the DSR paper's
worked example, and slow reference implementations written here."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from merlin_kit.errors import ConfigError
from merlin_kit.metrics import RISK_FREE_MONTHLY_PCT, compute_metrics, month_starts, monthly_returns
from merlin_kit.robustness import (
    DeflatedSharpe,
    PBOResult,
    deflated_sharpe,
    excess_moments,
    expected_max_sharpe,
    pbo,
    sharpe_variance,
)
from merlin_kit.strategies.base import StrategyOutput

PHI = NormalDist()
GAMMA = 0.5772156649


# ------------------------------------------------------------------ SR0 and DSR


def test_expected_max_sharpe_by_hand():
    # N = 10, V = 0.04: Φ⁻¹(1 − 1/10) = Φ⁻¹(0.9) = 1.2815516 (tables); Φ⁻¹(1 − 1/(10e)) = Φ⁻¹(0.9632121) = 1.7892418
    # SR0 = √0.04 × (0.4227843 × 1.2815516 + 0.5772157 × 1.7892418) = 0.2 × (0.5418238 + 1.0327745) = 0.3149197
    assert expected_max_sharpe(0.04, 10) == pytest.approx(0.3149197, abs=1e-7)
    exact = math.sqrt(0.04) * ((1 - GAMMA) * PHI.inv_cdf(0.9) + GAMMA * PHI.inv_cdf(1 - 1 / (10 * math.e)))
    assert expected_max_sharpe(0.04, 10) == pytest.approx(exact, rel=1e-15)
    # N = 2: Φ⁻¹(0.5) = 0, Φ⁻¹(1 − 1/(2e)) = Φ⁻¹(0.8160603) = 0.9007 -> SR0 = √1 × 0.5772157 × 0.9007
    assert expected_max_sharpe(1.0, 2) == pytest.approx(GAMMA * PHI.inv_cdf(1 - 1 / (2 * math.e)), rel=1e-15)
    assert expected_max_sharpe(0.0, 50) == 0.0
    assert expected_max_sharpe(0.25, np.int64(10)) == pytest.approx(exact * 2.5, rel=1e-15)


@pytest.mark.parametrize("v, n", [(0.04, 1), (0.04, 0), (0.04, -3), (-1e-9, 10), (float("nan"), 10), (float("inf"), 10)])
def test_expected_max_sharpe_undefined(v, n):
    assert expected_max_sharpe(v, n) is None


def test_expected_max_sharpe_needs_an_integer_trial_count():
    with pytest.raises(ConfigError) as err:
        expected_max_sharpe(0.04, 10.5)  # type: ignore[arg-type]
    assert err.value.field == "n_trials"


def test_deflated_sharpe_by_hand():
    # SR = 0.5, N = 10, V = 0.04 (SR0 = 0.3149197 above), T = 24, g3 = −0.5, g4 = 4
    # radicand = 1 − (−0.5)(0.5) + (4 − 1)/4 × 0.25 = 1 + 0.25 + 0.1875 = 1.4375
    # z = (0.5 − 0.3149197) × √23 / √1.4375 = 0.1850803 × 4.7958315 / 1.1989579 = 0.7403214
    # DSR = Φ(0.7403214) = 0.7704475
    dsr = deflated_sharpe(0.5, n_trials=10, sr_variance=0.04, skew=-0.5, kurtosis=4.0, track_length=24)
    assert dsr == pytest.approx(0.7704475, abs=1e-7)
    sr0 = expected_max_sharpe(0.04, 10)
    assert dsr == pytest.approx(PHI.cdf((0.5 - sr0) * math.sqrt(23) / math.sqrt(1.4375)), rel=1e-15)
    # normal returns (g3 = 0, g4 = 3) and SR = SR0: z = 0 -> 0.5
    assert deflated_sharpe(sr0, n_trials=10, sr_variance=0.04, skew=0.0, kurtosis=3.0, track_length=12) == pytest.approx(0.5)


def test_deflated_sharpe_paper_example():
    # Bailey & López de Prado (2014), numerical example: N = 100 trials, annualised V = 1/2 and best
    # annualised SR = 2.5 over T = 1250 daily returns (250 a year), skewness −3, kurtosis 10.
    # Per period: V = 0.5/250 = 0.002, SR = 2.5/√250 = 0.1581139.
    # SR0 = √0.002 × (0.4227843 × Φ⁻¹(0.99) + 0.5772157 × Φ⁻¹(1 − 1/(100e)))
    #     = 0.0447214 × (0.4227843 × 2.3263479 + 0.5772157 × 2.6785...) = 0.1132 (the paper: 0.1132)
    # DSR = Φ((0.1581139 − 0.1131720) × √1249 / √(1 + 3 × 0.1581139 + 9/4 × 0.025)) = Φ(1.2838) = 0.9004
    # (the paper: 0.9004)
    sr = 2.5 / math.sqrt(250)
    assert expected_max_sharpe(0.5 / 250, 100) == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe(sr, n_trials=100, sr_variance=0.5 / 250, skew=-3.0, kurtosis=10.0, track_length=1250)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


@pytest.mark.parametrize("kwargs", [
    dict(n_trials=1),                     # SR0 undefined
    dict(sr_variance=-0.01),              # SR0 undefined
    dict(track_length=2),                 # T < 3
    dict(skew=3.0, kurtosis=3.0, sr=1.0),  # 1 − 3 × 1 + 2/4 × 1 = −1.5 ≤ 0
    dict(skew=2.0, kurtosis=1.0, sr=0.5),  # 1 − 2 × 0.5 + 0 = 0: not > 0
    dict(sr=None),
    dict(skew=None),
    dict(kurtosis=float("nan")),
])
def test_deflated_sharpe_undefined(kwargs):
    args = dict(sr=0.5, n_trials=10, sr_variance=0.04, skew=0.0, kurtosis=3.0, track_length=24)
    args.update(kwargs)
    sr = args.pop("sr")
    assert deflated_sharpe(sr, **args) is None


def test_deflated_sharpe_is_clipped_to_unit_interval():
    high = deflated_sharpe(50.0, n_trials=10, sr_variance=0.04, skew=0.0, kurtosis=3.0, track_length=10_000)
    low = deflated_sharpe(-50.0, n_trials=10, sr_variance=0.04, skew=0.0, kurtosis=3.0, track_length=10_000)
    assert high == 1.0 and low == 0.0
    rng = np.random.default_rng(3)
    for sr, g3, g4, t in zip(rng.normal(0, 3, 200), rng.normal(0, 1, 200), rng.uniform(1, 12, 200), rng.integers(3, 500, 200)):
        d = deflated_sharpe(float(sr), n_trials=100, sr_variance=0.3, skew=float(g3), kurtosis=float(g4), track_length=int(t))
        assert d is None or 0.0 <= d <= 1.0


def test_excess_moments_by_hand():
    # returns 1, 2, 3, 10 %: excess = r − 1/6; central moments do not see the shift.
    # mean 4, deviations −3, −2, −1, 6: m2 = (9+4+1+36)/4 = 12.5, m3 = (−27−8−1+216)/4 = 45,
    # m4 = (81+16+1+1296)/4 = 348.5; skew = 45 / 12.5^1.5 = 1.0182338, kurtosis = 348.5 / 156.25 = 2.2304
    skew, kurt = excess_moments([1.0, 2.0, 3.0, 10.0])
    assert skew == pytest.approx(45 / 12.5 ** 1.5, rel=1e-12) and skew == pytest.approx(1.0182338, abs=1e-7)
    assert kurt == pytest.approx(2.23040, rel=1e-12)
    assert excess_moments(np.array([1.0, 2.0, 3.0, 10.0])) == (skew, kurt)
    assert excess_moments([2.0, 2.0, 2.0]) == (None, None)  # zero variance
    assert excess_moments([]) == (None, None)
    # a normal sample: skew ~ 0, Pearson (non-excess) kurtosis ~ 3
    s, k = excess_moments(np.random.default_rng(0).normal(1.0, 5.0, 200_000))
    assert abs(s) < 0.02 and abs(k - 3.0) < 0.05


def test_sharpe_variance_is_the_population_variance_of_defined_values():
    assert sharpe_variance([1.0, None, 3.0, float("nan")]) == 1.0  # mean 2, ((1)² + (1)²)/2
    assert sharpe_variance([None, None]) is None
    assert sharpe_variance([0.7]) == 0.0


def _output(equity: np.ndarray) -> StrategyOutput:
    one = np.ones(1)
    return StrategyOutput(direction=np.ones(1, np.int64), entry_idx=np.zeros(1, np.int64), exit_idx=np.ones(1, np.int64),
                          entry_price=one, exit_price=one, size=one, net_pnl=one, profit_pct=one,
                          balance=equity.copy(), equity=equity, initial_capital=100.0)


def test_monthly_returns_helper_is_the_one_behind_sharpe_ratio():
    # daily bars 2025-01-01 .. 2025-03-10; equity 100 at the first January bar, 110 at the first
    # February bar, 99 at the first March bar, 108.9 at the last bar -> +10 %, −10 %, +10 %
    time = pd.date_range("2025-01-01", "2025-03-10", freq="D", tz="UTC").as_unit("s").asi8
    equity = np.interp(np.arange(len(time)), [0, 31, 59, len(time) - 1], [100.0, 110.0, 99.0, 108.9])
    starts = month_starts(time)
    monthly = monthly_returns(equity, starts)
    np.testing.assert_allclose(monthly, [10.0, -10.0, 10.0], rtol=1e-12)
    sharpe = compute_metrics(_output(equity), starts)["sharpe_ratio"]
    assert sharpe == pytest.approx((monthly.mean() - RISK_FREE_MONTHLY_PCT) / monthly.std(), rel=1e-12)

    ds = DeflatedSharpe.from_monthly(sharpe, monthly, n_trials=25, sr_variance=0.09)
    g3, g4 = excess_moments(monthly)
    assert ds.track_length == 3 and (ds.skew, ds.kurtosis) == (g3, g4)
    assert ds.expected_max_sharpe == expected_max_sharpe(0.09, 25)
    assert ds.dsr == deflated_sharpe(sharpe, n_trials=25, sr_variance=0.09, skew=g3, kurtosis=g4, track_length=3)
    assert ds.to_dict()["n_trials"] == 25
    none = DeflatedSharpe.from_monthly(sharpe, monthly, n_trials=25, sr_variance=None)
    assert none.dsr is None and none.expected_max_sharpe is None


# --------------------------------------------------------------------------- PBO


def reference_pbo(m: np.ndarray, n_splits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spec read plainly: copy the rows of every half, np.mean / np.std(ddof=1), sort for ranks."""
    t, n = m.shape
    x = m[t % n_splits:]
    g = x.shape[0] // n_splits
    groups = [x[i * g:(i + 1) * g] for i in range(n_splits)]

    def perf(v: np.ndarray) -> float:
        return 0.0 if np.all(v == v[0]) else float(np.mean(v) / np.std(v, ddof=1))

    logits, is_p, oos_p = [], [], []
    for combo in combinations(range(n_splits), n_splits // 2):
        is_rows = np.concatenate([groups[i] for i in combo])
        oos_rows = np.concatenate([groups[i] for i in range(n_splits) if i not in combo])
        ip = [perf(is_rows[:, j]) for j in range(n)]
        op = [perf(oos_rows[:, j]) for j in range(n)]
        best = 0
        for j in range(1, n):
            if ip[j] > ip[best]:
                best = j
        ordered = sorted(op)
        positions = [i + 1 for i, v in enumerate(ordered) if v == op[best]]
        omega = (sum(positions) / len(positions)) / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
        is_p.append(ip[best])
        oos_p.append(op[best])
    return np.array(logits), np.array(is_p), np.array(oos_p)


def exact_reference_logits(m: np.ndarray, n_splits: int) -> np.ndarray:
    """For integer matrices: performances compared exactly (sign × mean² / variance as fractions), so
    ties are the mathematical ones."""
    t, n = m.shape
    x = [[Fraction(int(v)) for v in row] for row in m[t % n_splits:]]
    g = len(x) // n_splits

    def key(values: list[Fraction]) -> Fraction:
        if all(v == values[0] for v in values):
            return Fraction(0)
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return (1 if mean > 0 else -1 if mean < 0 else 0) * mean * mean / var

    out = []
    for combo in combinations(range(n_splits), n_splits // 2):
        is_rows = [r for i in combo for r in x[i * g:(i + 1) * g]]
        oos_rows = [r for i in range(n_splits) if i not in combo for r in x[i * g:(i + 1) * g]]
        ip = [key([r[j] for r in is_rows]) for j in range(n)]
        op = [key([r[j] for r in oos_rows]) for j in range(n)]
        best = ip.index(max(ip))
        below = sum(v < op[best] for v in op)
        tied = sum(v == op[best] for v in op)
        omega = (below + (tied + 1) / 2) / (n + 1)
        out.append(math.log(omega / (1 - omega)))
    return np.array(out)


# The tiny matrix: row 0 is dropped (5 mod 4 = 1), rows 1-4 are groups 0-3 of one row each.
# With 2 rows (a, b) in a half, performance = ((a+b)/2) / (|a−b|/√2) = q/√2 with q = (a+b)/|a−b|.
TINY = np.array([
    [100.0, -100.0, 50.0],  # dropped: it would change every result
    [1.0, 1.0, 2.0],
    [2.0, 2.0, 5.0],
    [1.0, 6.0, 3.0],
    [3.0, 5.0, 3.0],
])


def test_pbo_tiny_matrix_by_hand():
    # columns after the drop: c0 = (1, 2, 1, 3), c1 = (1, 2, 6, 5), c2 = (2, 5, 3, 3); N = 3, ω = rank / 4
    # q per pair of groups:       c0     c1     c2
    #   {0,1}                     3      3      7/3     (c0, c1 identical there: an IS tie)
    #   {2,3}                     2      11     0       (c2 constant: zero deviation -> 0)
    #   {0,2}                     0      7/5    5       (c0 constant)
    #   {1,3}                     5      7/3    4
    #   {0,3}                     2      3/2    5
    #   {1,2}                     3      2      4
    # combinations order, IS | OOS:
    #  1 {0,1}|{2,3}: IS tie c0 = c1 -> first column n* = c0; OOS 2 among (2, 11, 0): rank 2, ω 1/2, λ = 0
    #  2 {0,2}|{1,3}: n* = c2 (5); OOS 4 among (5, 7/3, 4): rank 2, λ = 0
    #  3 {0,3}|{1,2}: n* = c2 (5); OOS 4 among (3, 2, 4): rank 3, ω 3/4, λ = ln 3
    #  4 {1,2}|{0,3}: n* = c2 (4); OOS 5 among (2, 3/2, 5): rank 3, λ = ln 3
    #  5 {1,3}|{0,2}: n* = c0 (5); OOS 0 among (0, 7/5, 5): rank 1, ω 1/4, λ = ln(1/3)
    #  6 {2,3}|{0,1}: n* = c1 (11); OOS 3 among (3, 3, 7/3), tied with c0: ranks 2 and 3 -> 2.5,
    #                 ω = 2.5/4, λ = ln(2.5/1.5) = ln(5/3)
    # PBO = share of λ <= 0 = 3/6 (λ = 0 counts)
    result = pbo(TINY, n_splits=4)
    assert isinstance(result, PBOResult)
    assert result.logits.tolist() == pytest.approx([0.0, 0.0, math.log(3), math.log(3), math.log(1 / 3), math.log(5 / 3)], abs=1e-15)
    assert result.logits[0] == 0.0 and result.logits[1] == 0.0
    assert result.pbo == 0.5
    assert result.best_columns.tolist() == [0, 2, 2, 2, 0, 1]
    r2 = math.sqrt(2)
    np.testing.assert_allclose(result.is_performance, np.array([3, 5, 5, 4, 5, 11]) / r2, rtol=1e-14)
    np.testing.assert_allclose(result.oos_performance, np.array([2, 4, 4, 5, 0, 3]) / r2, rtol=1e-14, atol=0)
    assert (result.n_combinations, result.n_splits, result.rows_dropped) == (6, 4, 1)


def test_pbo_combinations_follow_itertools_order():
    # result k belongs to the k-th itertools combination of groups as IS: recompute n* and its
    # IS / OOS performance for each one directly
    rng = np.random.default_rng(11)
    m = rng.normal(size=(48, 5))
    result = pbo(m, n_splits=6)
    combos = list(combinations(range(6), 3))
    assert result.n_combinations == len(combos) == 20
    for k, combo in enumerate(combos):
        is_rows = np.concatenate([m[i * 8:(i + 1) * 8] for i in combo])
        oos_rows = np.concatenate([m[i * 8:(i + 1) * 8] for i in range(6) if i not in combo])
        ip = is_rows.mean(axis=0) / is_rows.std(axis=0, ddof=1)
        op = oos_rows.mean(axis=0) / oos_rows.std(axis=0, ddof=1)
        best = int(np.argmax(ip))
        assert result.best_columns[k] == best
        assert result.is_performance[k] == pytest.approx(ip[best], rel=1e-12)
        assert result.oos_performance[k] == pytest.approx(op[best], rel=1e-12)


def test_pbo_tie_rules():
    # three identical columns: every IS performance ties -> n* = column 0; its OOS value ties with all
    # three -> average rank 2 of ranks 1..3 -> ω = 2/4 -> λ = 0 everywhere, PBO = 1
    col = np.random.default_rng(5).normal(size=40)
    same = np.column_stack([col, col, col])
    result = pbo(same, n_splits=4)
    assert result.best_columns.tolist() == [0] * 6
    assert result.logits.tolist() == [0.0] * 6 and result.pbo == 1.0
    # a dominated 4th column: n* stays 0, its OOS rank is the average of 2, 3, 4 = 3 -> ω = 3/5, λ = ln 1.5
    worse = np.column_stack([same, col - 10.0])
    result = pbo(worse, n_splits=4)
    assert result.best_columns.tolist() == [0] * 6
    np.testing.assert_allclose(result.logits, math.log(1.5), rtol=1e-14)


def test_pbo_zero_deviation_gives_zero_performance():
    # column 1 is all 0 (no trades): performance 0 in every half. Column 0 is negative everywhere
    # (performance < 0), column 2 positive -> n* = column 2 each time, OOS rank 3 of 3 -> λ = ln 3
    rng = np.random.default_rng(8)
    m = np.column_stack([-5.0 + rng.random(32), np.zeros(32), 5.0 + rng.random(32)])
    result = pbo(m, n_splits=4)
    assert result.best_columns.tolist() == [2] * 6
    np.testing.assert_allclose(result.logits, math.log(3), rtol=1e-14)
    # constant but not zero: mean/std would blow up; the rule says 0 (below column 2, above column 0)
    m[:, 1] = 0.1
    m[:, 2] = 0.1 + 1e-3 * rng.random(32)
    m[:16, 2] = 0.1  # column 2 constant in groups 0-1 and varying in groups 2-3
    result = pbo(m, n_splits=4)
    # combination 1 ({0,1} IS): column 1 and 2 are both constant 0.1 there -> both 0, ties -> n* = column 1
    assert result.best_columns[0] == 1 and result.is_performance[0] == 0.0


def test_pbo_drops_the_first_rows():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(16 * 5 + 7, 6))
    result = pbo(m, n_splits=16)
    assert result.rows_dropped == 7
    tail = pbo(m[7:], n_splits=16)
    assert np.array_equal(result.logits, tail.logits) and result.pbo == tail.pbo
    assert not np.array_equal(result.logits, pbo(m[:-7], n_splits=16).logits)


def test_pbo_true_edge_gives_zero():
    rng = np.random.default_rng(4)
    m = rng.normal(0.0, 1.0, size=(1600, 30))
    m[:, 17] += 0.5  # a real edge: best in sample and out of sample in every combination
    result = pbo(m)
    assert result.n_combinations == 12_870
    assert result.pbo == 0.0
    assert set(result.best_columns.tolist()) == {17}
    np.testing.assert_allclose(result.logits, math.log(30), rtol=1e-14)  # rank 30: ω = 30/31


def test_pbo_pure_noise_is_well_above_zero():
    m = np.random.default_rng(0).normal(size=(240, 40))
    assert pbo(m, n_splits=8).pbo > 0.3
    # over many noise matrices the in-sample winner is no better than a random column: PBO ~ 1/2
    values = [pbo(np.random.default_rng(seed).normal(size=(240, 40)), n_splits=8).pbo for seed in range(20)]
    assert 0.35 < float(np.mean(values)) < 0.65


@pytest.mark.parametrize("seed, shape, n_splits", [
    (0, (203, 7), 8), (1, (100, 5), 6), (2, (64, 12), 10), (3, (37, 3), 4), (4, (16, 2), 2), (5, (90, 9), 12),
])
def test_pbo_equals_slow_reference(seed, shape, n_splits):
    rng = np.random.default_rng(seed)
    m = rng.standard_t(4, size=shape) * rng.uniform(0.5, 3, shape[1]) + rng.normal(0, 0.2, shape[1])
    logits, is_p, oos_p = reference_pbo(m, n_splits)
    result = pbo(m, n_splits)
    np.testing.assert_allclose(result.logits, logits, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.is_performance, is_p, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.oos_performance, oos_p, rtol=1e-9, atol=1e-12)
    assert result.pbo == float(np.mean(logits <= 0))


@pytest.mark.parametrize("seed", range(12))
def test_pbo_equals_exact_reference_on_integer_matrices_with_ties(seed):
    # small integers: many exact ties, constant halves, and halves whose mean/std are equal through
    # different sums (float arithmetic differs there in the last bits: TIE_TOLERANCE)
    rng = np.random.default_rng(100 + seed)
    n_splits = int(rng.choice([2, 4, 6, 8]))
    m = rng.integers(-2, 3, size=(int(rng.integers(max(n_splits, 4), 40)), int(rng.integers(2, 7)))).astype(float)
    m[rng.random(m.shape[0]) < 0.5, 0] = 0.0
    np.testing.assert_allclose(pbo(m, n_splits).logits, exact_reference_logits(m, n_splits), rtol=0, atol=1e-12)


@pytest.mark.parametrize("matrix, n_splits, field, words", [
    (np.zeros(20), 4, "matrix", "2-D"),
    (np.zeros((20, 1)), 4, "matrix", "at least 2 columns"),
    (np.zeros((20, 3)), 5, "n_splits", "even"),
    (np.zeros((20, 3)), 0, "n_splits", "even"),
    (np.zeros((20, 3)), True, "n_splits", "even"),
    (np.zeros((20, 3)), 4.0, "n_splits", "even"),
    (np.zeros((15, 3)), 16, "matrix", "at least 16 rows"),
    (np.zeros((3, 3)), 2, "matrix", "at least 4 rows"),
    ([["a", "b"], ["c", "d"]], 2, "matrix", "numbers"),
])
def test_pbo_input_errors(matrix, n_splits, field, words):
    with pytest.raises(ConfigError) as err:
        pbo(matrix, n_splits)
    assert err.value.field == field and words in str(err.value)


def test_pbo_nan_is_a_clear_error():
    m = np.zeros((32, 4))
    m[5, 2] = np.nan
    m[9, 1] = np.inf
    with pytest.raises(ConfigError) as err:
        pbo(m, 4)
    assert err.value.field == "matrix"
    assert "2 NaN/infinite" in str(err.value) and "row 5, column 2" in str(err.value)


def test_pbo_accepts_a_dataframe():
    m = np.random.default_rng(9).normal(size=(64, 4))
    assert np.array_equal(pbo(pd.DataFrame(m), 8).logits, pbo(m, 8).logits)
