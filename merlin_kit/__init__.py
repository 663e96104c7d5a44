"""merlin_kit: exact, fast backtests and multi-process Optuna optimisation of trading strategies.

Public API::

    from merlin_kit import load_ohlcv, prepare, backtest, get_strategy
"""

from __future__ import annotations

from .backtest import Backtester, BacktestResult, backtest
from .data import PreparedData, fingerprint, load_data, load_ohlcv, prepare, sample, save_ohlcv
from .errors import ConfigError, DataError, MerlinError, OptimizationError, ParameterError, StrategyError
from .indicators import MA_KINDS
from .metrics import METRIC_NAMES
from .scoring import ScoreConfig
from .strategies import IndicatorCache, Param, Strategy, StrategyOutput, get_strategy, list_strategies, register_strategy

__version__ = "0.1.0"

__all__ = [
    "Backtester", "BacktestResult", "ConfigError", "DataError", "IndicatorCache", "MA_KINDS", "METRIC_NAMES",
    "MerlinError", "OptimizationError", "Param", "ParameterError", "PreparedData", "ScoreConfig", "Strategy",
    "StrategyError", "StrategyOutput", "backtest", "fingerprint", "get_strategy", "list_strategies", "load_data",
    "load_ohlcv", "prepare", "register_strategy", "sample", "save_ohlcv", "__version__",
]
