"""Strategy schema, parameter validation and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from merlin_kit import MA_KINDS, backtest, get_strategy, sample
from merlin_kit.errors import ParameterError, StrategyError
from merlin_kit.strategies import S01TrailingMA, list_strategies


def test_s01_schema_matches_spec_table():
    s = get_strategy("s01_trailing_ma")
    assert len(s.params) == 25
    ma = s.param("maType")
    assert ma.kind == "choice" and ma.choices == MA_KINDS and ma.default == "EMA" and ma.optimize
    length = s.param("maLength")
    assert (length.default, length.low, length.high, length.opt_low, length.opt_high, length.opt_step) == (45, 0, 500, 25, 500, 25)
    assert not s.param("stopLongRR").optimize and not s.param("riskPerTrade").optimize
    assert s.param("trailLongOffset").default == -1.0
    optimised = [p.name for p in s.params if p.optimize]
    assert len(optimised) == 17


@pytest.mark.parametrize(
    "params, message",
    [
        ({"maLenght": 100}, r"unknown parameter\(s\) 'maLenght' for strategy s01_trailing_ma; valid: maType, maLength"),
        ({"maLength": 501}, r"'maLength' = 501 is out of limits: must be an integer in \[0, 500\]"),
        ({"maLength": 12.5}, "'maLength' must be an integer, got 12.5"),
        ({"maLength": "100"}, r"'maLength' must be an integer in \[0, 500\], got '100' \(str\)"),
        ({"maType": "XMA"}, "'maType' got 'XMA'; allowed: one of 'SMA', 'EMA'"),
        ({"stopLongX": float("nan")}, "must be finite"),
        ({"commissionRate": 0.5}, r"out of limits: must be a number in \[0, 0.01\]"),
        ({"atrPeriod": 0}, r"out of limits: must be an integer in \[1, 500\]"),
        ({"closeCountLong": True}, "must be an integer in"),
    ],
)
def test_bad_parameters_name_the_problem(params, message):
    with pytest.raises(ParameterError, match=message):
        backtest(sample(3000), "s01_trailing_ma", params, warmup_bars=100)


def test_values_are_coerced_to_their_types():
    s = get_strategy("s01_trailing_ma")
    p = s.validate_params({"maLength": 100.0, "stopLongRR": 3, "maType": "sma"})
    assert p["maLength"] == 100 and type(p["maLength"]) is int
    assert p["stopLongRR"] == 3.0 and type(p["stopLongRR"]) is float
    assert p["maType"] == "SMA"


def test_registry_resolves_ids_paths_classes_and_instances():
    assert "s01_trailing_ma" in list_strategies() and "s04_stochrsi" in list_strategies()
    assert isinstance(get_strategy("merlin_kit.strategies.s01_trailing_ma:S01TrailingMA"), S01TrailingMA)
    assert isinstance(get_strategy(S01TrailingMA), S01TrailingMA)
    inst = S01TrailingMA()
    assert get_strategy(inst) is inst
    with pytest.raises(StrategyError, match="cannot import module 'no_such_pkg.mod'"):
        get_strategy("no_such_pkg.mod:Thing")
    with pytest.raises(StrategyError, match="has no attribute 'Nope'"):
        get_strategy("merlin_kit.strategies:Nope")
    with pytest.raises(StrategyError, match="not a merlin_kit Strategy"):
        get_strategy("merlin_kit.data:sample")
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        get_strategy("nope")


def test_defaults_backtest_on_sample_is_consistent():
    r = backtest("sample", "s01_trailing_ma")
    assert r.metrics["total_trades"] == len(r.trades) > 0
    # realised balance after each exit = capital + cumulative net P&L of the closed trades
    exit_idx = r.output.exit_idx
    np.testing.assert_allclose(r.output.balance[exit_idx], 100 + np.cumsum(r.trades["net_pnl"].to_numpy()), rtol=1e-12)
    assert r.metrics["net_profit_pct"] == pytest.approx(r.balance.iloc[-1] - 100)
