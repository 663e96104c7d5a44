"""S01 on the real LINK file must equal the TradingView-matched reference trade for trade."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from merlin_kit import backtest
from tests.conftest import BASELINE_TRADES, needs_shared

pytestmark = needs_shared

REL = 1e-9
#: the spec's reference value (the JSON's recovery_factor was written by an older formula)
RECOVERY_FACTOR_SPEC = 3.3019


@pytest.fixture(scope="module")
def result(link_csv, baseline, baseline_params):
    p = baseline["parameters"]
    return backtest(link_csv, "s01_trailing_ma", baseline_params, start=p["start"], end=p["end"], warmup_bars=baseline["warmup_bars"])


@pytest.fixture(scope="module")
def reference_trades() -> pd.DataFrame:
    return pd.read_csv(BASELINE_TRADES, parse_dates=["entry_time", "exit_time"])


def test_trade_count(result, reference_trades):
    assert len(reference_trades) == 93
    assert len(result.trades) == 93


def test_trades_identical(result, reference_trades):
    ours = result.trades
    assert list(ours["direction"]) == list(reference_trades["direction"])
    assert list(ours["entry_time"]) == list(reference_trades["entry_time"])
    assert list(ours["exit_time"]) == list(reference_trades["exit_time"])
    for col in ("entry_price", "exit_price", "size", "net_pnl", "profit_pct"):
        np.testing.assert_allclose(ours[col].to_numpy(), reference_trades[col].to_numpy(), rtol=REL, atol=0, err_msg=col)


@pytest.mark.parametrize(
    "key", ["net_profit_pct", "max_drawdown_pct", "total_trades", "sharpe_ratio", "profit_factor", "romad", "ulcer_index", "sqn", "consistency_score"]
)
def test_metrics_match_reference_json(result, baseline, key):
    assert result.metrics[key] == pytest.approx(baseline[key], rel=REL, abs=0)


def test_recovery_factor_per_spec(result):
    m = result.metrics
    assert m["recovery_factor"] == pytest.approx(m["net_profit_pct"] / m["max_drawdown"], rel=1e-12)
    assert round(m["recovery_factor"], 4) == RECOVERY_FACTOR_SPEC


def test_metric_types_are_plain_python(result):
    for key, value in result.metrics.items():
        assert value is None or type(value) in (int, float), (key, type(value))
        if isinstance(value, float):
            assert math.isfinite(value)


def test_curves_span_prepared_window(result, baseline):
    assert len(result.equity) == len(result.balance) == result.data.n_bars
    assert result.trade_start == pd.Timestamp("2025-06-15", tz="UTC")
    assert result.data.trade_start_idx == baseline["warmup_bars"]
    # realised balance ends at the reference net profit
    assert result.balance.iloc[-1] == pytest.approx(100 + baseline["net_profit_pct"], rel=REL)
