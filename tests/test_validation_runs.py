"""Validation of a finished run (VALIDATION.md): DSR table, PBO of a run, stress test, Monte Carlo, hold-out.

One small real optimisation on the bundled sample, with one whole UTC day of bars removed (a gap the
daily returns must carry over), passed as a DataFrame (so the run's temporary copy is gone when it ends).
Every number is recomputed here from the study's trials and from plain backtests.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState

from merlin_kit import backtest
from merlin_kit.data import sample
from merlin_kit.errors import ConfigError
from merlin_kit.metrics import month_starts, monthly_returns
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize
from merlin_kit.optimize._attrs import METRICS_ATTR
from merlin_kit.optimize.config import SearchDim
from merlin_kit.robustness import (
    MonteCarloResult,
    daily_returns,
    deflated_sharpe,
    expected_max_sharpe,
    monte_carlo,
    neighbour_moves,
    pbo,
    run_stress_test,
)
from merlin_kit.strategies import get_strategy

DIMS = ["maLength", "closeCountLong", "stopLongX", "stopShortX"]
GAP_DAY = pd.Timestamp("2024-01-15", tz="UTC")
IS_START, IS_END = "2024-01-03", "2024-02-10 23:59"
WARMUP = 200


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = sample(6000)  # 15-minute bars from 2024-01-01, 62.5 days
    return data[(data.index < GAP_DAY) | (data.index >= GAP_DAY + pd.Timedelta(days=1))]


@pytest.fixture(scope="module")
def run(frame):
    opt = OptimizationConfig(data=frame, optimize_params=DIMS, start=IS_START, end=IS_END, warmup_bars=WARMUP,
                             worker_processes=1)
    return optimize(opt, OptunaConfig(n_trials=40, sampler="random", seed=11, target="sharpe_ratio"))


def complete(run):
    return [r for r in run.results if r.state == "COMPLETE" and r.metrics]


# ------------------------------------------------------------------------------ DSR


def test_deflated_sharpe_table_recomputed_from_the_study(run):
    table = run.deflated_sharpe(top_k=5)
    assert list(table.columns) == ["trial", "sharpe_ratio", "sr0", "dsr", "skew", "kurtosis", "months"]
    assert table["trial"].tolist() == [r.trial_number for r in complete(run)[:5]]  # the run's order

    trials = run.study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    n = len(done)
    sharpes = [t.user_attrs[METRICS_ATTR]["sharpe_ratio"] for t in done]
    defined = [s for s in sharpes if s is not None]
    v = sum((s - sum(defined) / len(defined)) ** 2 for s in defined) / len(defined)
    assert table.attrs["n_trials"] == n == len(complete(run)) > 20 and table.attrs["sr_variance"] == pytest.approx(v, rel=1e-12)

    for row, r in zip(table.itertuples(), complete(run)[:5]):
        bt = run.backtest(r)
        monthly = monthly_returns(bt.equity.to_numpy(), month_starts(bt.data.time))
        x = monthly - 2.0 / 12.0
        d = x - x.mean()
        m2 = (d ** 2).mean()
        skew, kurt = (d ** 3).mean() / m2 ** 1.5, (d ** 4).mean() / m2 ** 2
        sr = r.metrics["sharpe_ratio"]
        assert (x.mean()) / monthly.std() == pytest.approx(sr, rel=1e-9)  # the same months as the metric
        assert row.months == len(monthly)
        assert row.sharpe_ratio == sr
        assert row.skew == pytest.approx(skew, rel=1e-9, abs=1e-12)
        assert row.kurtosis == pytest.approx(kurt, rel=1e-9)
        assert row.sr0 == pytest.approx(expected_max_sharpe(v, n), rel=1e-12)
        dsr = deflated_sharpe(sr, n_trials=n, sr_variance=v, skew=skew, kurtosis=kurt, track_length=len(monthly))
        if dsr is None:
            assert math.isnan(row.dsr)
        else:
            assert row.dsr == pytest.approx(dsr, rel=1e-9, abs=1e-12)


def test_top_k_must_be_a_positive_integer(run):
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError) as err:
            run.deflated_sharpe(top_k=bad)
        assert err.value.field == "top_k"


# ------------------------------------------------------------------------------ PBO


def hand_daily(equity: pd.Series) -> list[tuple[pd.Timestamp, float]]:
    """Day by day: the value at the day's last bar, else the previous day's; percent change."""
    day = equity.index[0].floor("D")
    last_day = equity.index[-1].floor("D")
    closes = []
    value = None
    while day <= last_day:
        in_day = equity[(equity.index >= day) & (equity.index < day + pd.Timedelta(days=1))]
        if len(in_day):
            value = float(in_day.iloc[-1])
        closes.append((day, value))
        day += pd.Timedelta(days=1)
    return [(d1, (v1 / v0 - 1.0) * 100.0) for (_, v0), (d1, v1) in zip(closes, closes[1:])]


def test_pbo_matrix_columns_are_the_daily_returns_of_each_backtest(run):
    res = run.pbo(n_splits=8)
    distinct = []
    for r in complete(run):
        if r.params not in [d.params for d in distinct]:
            distinct.append(r)
    assert res.columns["trial"].tolist() == [r.trial_number for r in distinct]
    assert list(res.columns.columns) == ["trial", "sharpe_ratio", *DIMS]
    assert res.returns.columns.tolist() == res.columns["trial"].tolist()

    best = run.backtest(run.best)
    eq = best.equity.iloc[best.data.trade_start_idx:]  # trading part only
    assert eq.index[0] == pd.Timestamp(IS_START, tz="UTC")
    hand = hand_daily(eq)
    col = res.returns[run.best.trial_number]
    assert [d for d, _ in hand] == col.index.tolist()
    np.testing.assert_allclose(col.to_numpy(), [x for _, x in hand], rtol=1e-12, atol=1e-12)
    # the day without bars is a row, carried forward: 0 %, and the next day is measured from the 14th's close
    assert not ((eq.index >= GAP_DAY) & (eq.index < GAP_DAY + pd.Timedelta(days=1))).any()
    assert col[GAP_DAY] == 0.0
    close_14 = eq[eq.index < GAP_DAY].iloc[-1]
    close_16 = eq[eq.index < GAP_DAY + pd.Timedelta(days=2)].iloc[-1]
    assert col[GAP_DAY + pd.Timedelta(days=1)] == pytest.approx((close_16 / close_14 - 1) * 100, rel=1e-12)
    assert len(col) == (pd.Timestamp("2024-02-10", tz="UTC") - pd.Timestamp(IS_START, tz="UTC")).days
    # the public helper gives the same column, and pandas' resample agrees
    np.testing.assert_array_equal(daily_returns(eq).to_numpy(), col.to_numpy())
    resampled = eq.resample("1D").last().ffill().pct_change().dropna() * 100
    np.testing.assert_allclose(resampled.to_numpy(), col.to_numpy(), rtol=1e-12, atol=1e-12)

    # PBO of that matrix, in [0, 1], with C(8, 4) logits
    again = pbo(res.returns.to_numpy(), 8)
    assert res.pbo == again.pbo and 0.0 <= res.pbo <= 1.0
    np.testing.assert_array_equal(res.logits, again.logits)
    assert res.n_combinations == len(res.logits) == math.comb(8, 4)


def test_pbo_default_splits_and_top_k(run):
    res = run.pbo()
    assert 0.0 <= res.pbo <= 1.0 and len(res.logits) == math.comb(16, 8) == res.n_combinations
    top = run.pbo(top_k=6, n_splits=4)
    assert top.columns["trial"].tolist() == res.columns["trial"].tolist()[:6]
    assert top.returns.shape == (res.returns.shape[0], 6) and len(top.logits) == math.comb(4, 2)
    with pytest.raises(ConfigError) as err:
        run.pbo(top_k=1)
    assert err.value.field == "top_k"


def test_pbo_keeps_one_column_per_parameter_set():
    data = sample(3000)
    opt = OptimizationConfig(data=data, optimize_params=["closeCountLong"], param_ranges={"closeCountLong": {"min": 2, "max": 4}},
                             warmup_bars=WARMUP, worker_processes=1)
    run = optimize(opt, OptunaConfig(n_trials=12, sampler="random", seed=2, target="net_profit_pct"))
    res = run.pbo(n_splits=4)
    values = res.columns["closeCountLong"].tolist()
    assert sorted(values) == sorted(set(r.params["closeCountLong"] for r in complete(run)))
    first = {}
    for r in complete(run):  # the best trial of each set names its column
        first.setdefault(r.params["closeCountLong"], r.trial_number)
    assert res.columns["trial"].tolist() == [first[v] for v in values]


# ------------------------------------------------------------------------------ stress test


def test_neighbour_moves_by_hand():
    s01 = get_strategy("s01_trailing_ma")
    space = [SearchDim("maLength", "int", 25, 500, 25), SearchDim("closeCountLong", "int", 2, 10, 1),
             SearchDim("stopLongX", "float", 1.0, 3.0, 0.1), SearchDim("stopShortX", "float", 1.0, 3.0, None),
             SearchDim("trailLongOffset", "float", -10.0, 20.0, 5.0), SearchDim("maType", "categorical", choices=("SMA", "EMA"))]
    params = {**s01.defaults(), "maLength": 25, "closeCountLong": 9, "stopLongX": 1.1, "stopShortX": 3.0,
              "trailLongOffset": 5.0, "maType": "EMA"}
    moves = neighbour_moves(s01, space, params)
    assert moves == [
        ("maLength", 1, 50), ("maLength", 2, 75),                           # 25 is the range's low end
        ("closeCountLong", -2, 7), ("closeCountLong", -1, 8), ("closeCountLong", 1, 10),  # 11 > 10
        ("stopLongX", -1, 1.0), ("stopLongX", 1, 1.2), ("stopLongX", 2, 1.3),  # 0.9 < 1.0
        ("stopShortX", -2, 2.8), ("stopShortX", -1, 2.9),                   # no space step: the Param's 0.1
        ("trailLongOffset", -2, -5.0), ("trailLongOffset", -1, 0.0), ("trailLongOffset", 1, 10.0),  # 15 > limit 10
    ]  # the categorical maType has no neighbours
    assert all(type(v) is int for n, _, v in moves if n in ("maLength", "closeCountLong"))


def test_stress_test_by_hand(run):
    table = run.stress_test(top_k=3)
    assert table["trial"].tolist() == [r.trial_number for r in complete(run)[:3]]
    best = run.best
    steps = {"maLength": 25, "closeCountLong": 1, "stopLongX": 0.1, "stopShortX": 0.1}
    ranges = {"maLength": (25, 500), "closeCountLong": (2, 10), "stopLongX": (1.0, 3.0), "stopShortX": (1.0, 3.0)}
    expected = []
    for name in DIMS:
        for k in (-2, -1, 1, 2):
            value = best.params[name] + k * steps[name]
            lo, hi = ranges[name]
            if lo - 1e-9 <= value <= hi + 1e-9:
                expected.append((name, k, value))
    detail = table.attrs["neighbours"]
    mine = detail[detail["trial"] == best.trial_number]
    assert [(p, s) for p, s, _ in expected] == list(zip(mine["param"], mine["steps"]))
    np.testing.assert_allclose(mine["to"].astype(float), [v for _, _, v in expected], rtol=0, atol=1e-9)

    profits = [backtest(run._prepared, "s01_trailing_ma", {**best.params, n: v}).metrics["net_profit_pct"]
               for n, _, v in expected]
    np.testing.assert_allclose(mine["net_profit_pct"], profits, rtol=1e-12)
    row = table.iloc[0]
    own = best.metrics["net_profit_pct"]
    assert row["net_profit_pct"] == own and row["neighbours"] == len(expected)
    assert row["profitable_share"] == pytest.approx(sum(p > 0 for p in profits) / len(profits))
    worst = int(np.argmin(profits))
    assert (row["worst_param"], row["worst_steps"]) == expected[worst][:2]
    assert row["worst_net_profit_pct"] == pytest.approx(profits[worst])
    if own > 0:
        assert row["retention"] == pytest.approx(float(np.median(profits)) / own, rel=1e-12)
        assert row["fragile"] == (row["retention"] < 0.7)
    else:
        assert math.isnan(row["retention"]) and bool(row["fragile"]) is True


def test_stress_test_without_profit_is_fragile(run):
    best = run.best
    losing = dataclasses.replace(best, metrics={**best.metrics, "net_profit_pct": -1.5})
    fake = SimpleNamespace(results=[losing], strategy=run.strategy, space=run.space, _prepared=run._prepared)
    row = run_stress_test(fake, top_k=1).iloc[0]
    assert row["neighbours"] > 0 and math.isnan(row["retention"]) and bool(row["fragile"]) is True
    flat = dataclasses.replace(best, metrics={**best.metrics, "net_profit_pct": 0.0})
    fake.results = [flat]
    assert bool(run_stress_test(fake, top_k=1).iloc[0]["fragile"]) is True


# ------------------------------------------------------------------------------ Monte Carlo


def hand_path(returns_pct, capital=100.0):
    balance, peak, max_dd = capital, capital, 0.0
    for r in returns_pct:
        balance *= 1 + r / 100
        peak = max(peak, balance)
        max_dd = max(max_dd, (peak - balance) / peak * 100)
    return max_dd, (balance / capital - 1) * 100


def test_monte_carlo_paths_by_hand():
    trades = [10.0, -5.0, 20.0, -12.0]
    a = monte_carlo(trades, n=50, seed=7)
    b = monte_carlo(trades, n=50, seed=7)
    assert isinstance(a, MonteCarloResult) and a.n_paths == 50 and a.n_trades == 4 and a.indices.shape == (50, 4)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.max_drawdown_pct, b.max_drawdown_pct)
    np.testing.assert_array_equal(a.final_return_pct, b.final_return_pct)
    assert not np.array_equal(monte_carlo(trades, n=50, seed=8).indices, a.indices)
    for i in (0, 1, 49):
        dd, final = hand_path([trades[j] for j in a.indices[i]])
        assert a.max_drawdown_pct[i] == pytest.approx(dd, rel=1e-12, abs=1e-12)
        assert a.final_return_pct[i] == pytest.approx(final, rel=1e-12)
    assert (a.actual_max_drawdown_pct, a.actual_return_pct) == pytest.approx(hand_path(trades))
    q = a.quantiles
    assert list(q.columns) == ["5%", "50%", "95%"] and list(q.index) == ["max_drawdown_pct", "final_return_pct"]
    assert (q["5%"] <= q["50%"]).all() and (q["50%"] <= q["95%"]).all()


def test_monte_carlo_all_winning_trades():
    trades = [1.0, 2.5, 0.5]
    mc = monte_carlo(trades, n=20, seed=3)
    assert (mc.max_drawdown_pct == 0.0).all()
    for i in range(20):
        picked = [trades[j] for j in mc.indices[i]]
        assert mc.final_return_pct[i] == pytest.approx((np.prod([1 + r / 100 for r in picked]) - 1) * 100, rel=1e-12)


def test_monte_carlo_of_a_backtest(run):
    bt = run.backtest(run.best)
    mc = run.best.monte_carlo(n=300, seed=5)
    again = monte_carlo(bt, n=300, seed=5)
    np.testing.assert_array_equal(mc.final_return_pct, again.final_return_pct)
    # each trade's return on the balance before it: the original order compounds to capital + Σ net P&L
    assert mc.n_trades == len(bt.trades) > 0
    assert mc.actual_return_pct == pytest.approx(bt.trades["net_pnl"].sum() / 100.0 * 100.0, rel=1e-9)
    from_table = monte_carlo(bt.trades, n=300, seed=5, initial_capital=100.0)
    np.testing.assert_allclose(from_table.final_return_pct, mc.final_return_pct, rtol=1e-12)
    q = mc.quantiles
    assert (q["5%"] <= q["50%"]).all() and (q["50%"] <= q["95%"]).all()


def test_monte_carlo_is_vectorised():
    trades = np.random.default_rng(0).normal(0.3, 2.0, size=1000)
    monte_carlo(trades, n=10, seed=1)
    t0 = time.perf_counter()
    mc = monte_carlo(trades, n=1000, seed=1)
    assert time.perf_counter() - t0 < 1.0  # ~30 ms on a quiet core
    assert mc.max_drawdown_pct.shape == (1000,)


def test_monte_carlo_rejects_bad_input():
    for kwargs, field in (({"n": 0}, "n"), ({"initial_capital": 0}, "initial_capital")):
        with pytest.raises(ConfigError) as err:
            monte_carlo([1.0, 2.0], **kwargs)
        assert err.value.field == field
    with pytest.raises(ConfigError):
        monte_carlo([1.0, -100.0])


# ------------------------------------------------------------------------------ hold-out


def test_holdout_equals_plain_backtests(run, frame):
    table = run.holdout("2024-02-12", top_k=5)
    top = complete(run)[:5]
    assert table["trial"].tolist() == [r.trial_number for r in top]
    days_is = (pd.Timestamp(IS_END, tz="UTC").floor("15min") - pd.Timestamp(IS_START, tz="UTC")).total_seconds() / 86400
    ho_metrics = []
    for row, r in zip(table.itertuples(), top):
        ho = backtest(frame, "s01_trailing_ma", r.params, start="2024-02-12", warmup_bars=WARMUP)
        ho_metrics.append(ho.metrics)
        days_ho = (ho.data.index[-1] - ho.data.index[ho.data.trade_start_idx]).total_seconds() / 86400
        assert row.is_sharpe_ratio == r.metrics["sharpe_ratio"]
        assert row.is_net_profit_pct == r.metrics["net_profit_pct"]
        for m in ("net_profit_pct", "max_drawdown_pct", "total_trades", "win_rate", "sharpe_ratio"):
            assert getattr(row, f"holdout_{m}") == ho.metrics[m] or (
                ho.metrics[m] is None and math.isnan(getattr(row, f"holdout_{m}")))
        assert row.is_annual_return_pct == pytest.approx(r.metrics["net_profit_pct"] * 365 / days_is, rel=1e-12)
        assert row.holdout_annual_return_pct == pytest.approx(ho.metrics["net_profit_pct"] * 365 / days_ho, rel=1e-12)
        if row.is_annual_return_pct > 0:
            assert row.profit_degradation == pytest.approx(row.holdout_annual_return_pct / row.is_annual_return_pct)
        else:
            assert math.isnan(row.profit_degradation)
    assert table["is_rank"].tolist() == [1, 2, 3, 4, 5]
    ho_sr = [m["sharpe_ratio"] if m["sharpe_ratio"] is not None else -math.inf for m in ho_metrics]
    ranks = [1 + sum(o > s for o in ho_sr) for s in ho_sr]
    assert table["holdout_rank"].tolist() == ranks


def test_holdout_refuses_an_overlapping_window(run):
    for start, end in (("2024-02-01", None), ("2024-01-01", "2024-01-05"), ("2024-02-10 12:00", None)):
        with pytest.raises(ConfigError, match="overlaps the optimisation window") as err:
            run.holdout(start, end)
        assert err.value.field == "start"
    before = run.holdout("2024-01-01", "2024-01-02 23:59", top_k=2)  # entirely before the window: allowed
    assert len(before) == 2
    with pytest.raises(ConfigError) as err:
        run.holdout("2030-01-01")
    assert err.value.field == "start"
