"""Run a strategy on a prepared window and turn its output into trades, curves and metrics.

:class:`Backtester` is the hot path of an optimisation: it binds a strategy to
one prepared window once (month boundaries, indicator cache) and then costs a
kernel call plus the metrics per parameter set.  :func:`backtest` is the
one-call convenience API built on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ._memory import keep_freed_memory
from .data import DataSource, PreparedData, is_validated, load_data, prepare
from .errors import DataError
from .metrics import compute_metrics, month_starts
from .strategies import IndicatorCache, Strategy, StrategyOutput, get_strategy

keep_freed_memory()  # bar-sized arrays are allocated per backtest: reuse the heap (see _memory)


class Backtester:
    """A strategy bound to one prepared window: evaluate many parameter sets cheaply."""

    def __init__(self, strategy: Strategy | str | type, data: PreparedData, *, cache: IndicatorCache | None = None) -> None:
        self.strategy = get_strategy(strategy)
        self.data = data
        self.cache = cache if cache is not None else IndicatorCache()
        self._month_starts = month_starts(data.time)

    def run(self, params: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], StrategyOutput, dict[str, Any]]:
        """Validate ``params``, run the strategy and compute metrics: ``(metrics, output, full_params)``."""
        full = self.strategy.validate_params(params)
        output = self.strategy.run(self.data, full, self.cache)
        return compute_metrics(output, self._month_starts), output, full

    def result(self, params: Mapping[str, Any] | None = None) -> "BacktestResult":
        metrics, output, full = self.run(params)
        return BacktestResult.from_output(self.strategy, full, metrics, output, self.data)


@dataclass
class BacktestResult:
    """One backtest: metrics, trades, curves, and what produced them.

    ``trades``, ``equity`` and ``balance`` are pandas objects built from the
    kernel's arrays on first access (then kept): building them costs more than
    the backtest itself, and a parameter loop that reads only ``metrics``
    should not pay for them.
    """

    strategy: Strategy
    params: dict[str, Any]
    metrics: dict[str, Any]
    data: PreparedData = field(repr=False)
    output: StrategyOutput = field(repr=False)

    @classmethod
    def from_output(
        cls, strategy: Strategy, params: dict[str, Any], metrics: dict[str, Any], output: StrategyOutput, data: PreparedData
    ) -> "BacktestResult":
        return cls(strategy=strategy, params=params, metrics=metrics, data=data, output=output)

    @cached_property
    def trades(self) -> pd.DataFrame:
        """One row per closed trade: direction, entry/exit time and price, size, net P&L, profit %."""
        output, index = self.output, self.data.index
        return pd.DataFrame(
            {
                "direction": np.where(output.direction > 0, "long", "short"),
                "entry_time": index[output.entry_idx],
                "exit_time": index[output.exit_idx],
                "entry_price": output.entry_price,
                "exit_price": output.exit_price,
                "size": output.size,
                "net_pnl": output.net_pnl,
                "profit_pct": output.profit_pct,
            }
        )

    @cached_property
    def equity(self) -> pd.Series:
        """Mark-to-market equity per bar of the window (warm-up bars included)."""
        return pd.Series(self.output.equity, index=self.data.index, name="equity")

    @cached_property
    def balance(self) -> pd.Series:
        """Realised balance per bar of the window."""
        return pd.Series(self.output.balance, index=self.data.index, name="balance")

    @property
    def trade_start(self) -> pd.Timestamp:
        """First bar on which the strategy could trade (after warm-up)."""
        return self.data.index[self.data.trade_start_idx]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"metrics": ..., "trades": [...]}`` with ISO-8601 UTC times."""
        trades = []
        for row in self.trades.itertuples(index=False):
            trades.append(
                {
                    "direction": row.direction,
                    "entry_time": row.entry_time.isoformat(),
                    "exit_time": row.exit_time.isoformat(),
                    "entry_price": float(row.entry_price),
                    "exit_price": float(row.exit_price),
                    "size": float(row.size),
                    "net_pnl": float(row.net_pnl),
                    "profit_pct": float(row.profit_pct),
                }
            )
        return {"strategy": self.strategy.id, "params": self.params, "metrics": self.metrics, "trades": trades}


def backtest(
    data: DataSource | str | pd.DataFrame | PreparedData,
    strategy: Strategy | str | type = "s01_trailing_ma",
    params: Mapping[str, Any] | None = None,
    *,
    start: Any = None,
    end: Any = None,
    warmup_bars: int = 1000,
) -> BacktestResult:
    """Backtest ``strategy`` with ``params`` (defaults for missing ones) on ``data``.

    ``data`` is a CSV/Parquet/Feather path, bytes, a file object, a DataFrame,
    ``"sample"`` or an already :func:`~merlin_kit.data.prepare`-d window (then
    start/end/warm-up are taken from it).  A frame returned by ``load_ohlcv`` and
    not changed since is not validated again (:func:`~merlin_kit.data.is_validated`).
    """
    if isinstance(data, PreparedData):
        if start is not None or end is not None:
            raise DataError("start/end cannot be applied to already prepared data; pass the OHLCV frame instead")
        prepared = data
    else:
        frame = data if is_validated(data) else load_data(data)  # a load_ohlcv frame, unchanged: checked already
        prepared = prepare(frame, start, end, warmup_bars)
    return Backtester(strategy, prepared).result(params)
