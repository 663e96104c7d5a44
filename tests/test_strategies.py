"""Strategy schema, parameter validation, the registry and the indicator cache."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest

from merlin_kit import MA_KINDS, IndicatorCache, PreparedData, backtest, get_strategy, load_ohlcv, prepare, sample
from merlin_kit.errors import ParameterError, StrategyError
from merlin_kit.strategies import S01TrailingMA, list_strategies
from merlin_kit.strategies.base import PARALLEL_MIN_BARS


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


# ----------------------------------------------------------------------------------------------
# IndicatorCache: threaded misses on long series, same numbers as one thread


def _long_series(n: int = 150_000) -> PreparedData:
    frame = load_ohlcv(sample(24_000))
    tiled = frame.iloc[np.arange(n) % len(frame)].copy()
    tiled.index = frame.index[0] + np.arange(n) * (frame.index[1] - frame.index[0])
    return prepare(load_ohlcv(tiled), None, None, 1000)


def test_get_many_on_threads_equals_one_thread_and_counts_hits():
    data = _long_series()
    assert data.n_bars >= PARALLEL_MIN_BARS
    params = {"maType": "KAMA", "maLength": 75, "trailMaType": "HMA", "trailLongLength": 50, "trailShortLength": 50,
              "stopLongLP": 3, "stopShortLP": 20}
    threaded, single = IndicatorCache(threads=2), IndicatorCache(threads=1)
    seen_threads: set[str] = set()

    def spy(key):
        def compute():
            seen_threads.add(threading.current_thread().name)
            return np.full(data.n_bars, float(len(key)))
        return compute

    got = threaded.get_many({("a",): spy(("a",)), ("b", 1): spy(("b", 1))}, bars=data.n_bars)
    assert got[("a",)][0] == 1.0 and got[("b", 1)][0] == 2.0
    assert all(name.startswith("merlin-indicators") for name in seen_threads)
    assert (threaded.hits, threaded.misses) == (0, 2)
    again = threaded.get_many({("a",): spy(("a",)), ("c",): spy(("c",))}, bars=data.n_bars)
    assert again[("a",)] is got[("a",)] and (threaded.hits, threaded.misses) == (1, 3)

    s01 = get_strategy("s01_trailing_ma")
    full = s01.validate_params(params)
    a, b = s01.run(data, full, threaded), s01.run(data, full, single)
    for name in ("entry_idx", "exit_idx", "net_pnl", "balance", "equity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.n_trades > 0


def test_get_many_raises_the_indicator_error_from_a_thread():
    cache = IndicatorCache(threads=2)

    def bad():
        raise ParameterError("length must be >= 0, got -1")

    with pytest.raises(ParameterError, match="length must be >= 0"):
        cache.get_many({("ok",): lambda: np.zeros(PARALLEL_MIN_BARS), ("bad",): bad}, bars=PARALLEL_MIN_BARS)
    assert ("bad",) not in cache._items


def test_allocator_tuning_is_applied_on_glibc_and_can_be_switched_off():
    code = "import merlin_kit, merlin_kit._memory as m; print(m._applied)"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MERLIN_KIT_MALLOC_TUNING": "0"}).stdout.strip()
    assert off == "False"
    is_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert on == str(is_glibc)
