"""The stitched out-of-sample result: the OOS windows end to end, their trades and the WFE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ._runner import WindowResult

TRADE_COLUMNS = ("direction", "entry_time", "exit_time", "entry_price", "exit_price", "size", "net_pnl", "profit_pct")


@dataclass
class StitchedResult:
    """The OOS windows end to end: ``equity`` (starts at 100) and ``metrics`` (spec "Stitched out-of-sample result")."""

    equity: pd.Series
    metrics: dict[str, Any]


def stitch(windows: list[WindowResult], *, is_days: int, oos_days: int) -> StitchedResult:
    """The stitched OOS equity (starts at 100) and its metrics, literally as the spec defines them."""
    pieces: list[pd.Series] = []
    level = 100.0
    for w in windows:
        e = w.oos_equity
        if len(e) == 0:
            continue
        path = level * (e / e.iloc[0])  # B × (1 + return path)
        if pieces:
            path = path.iloc[1:]  # the first point equals B
        pieces.append(path)
        level = float(path.iloc[-1]) if len(path) else level
    equity = pd.concat(pieces) if pieces else pd.Series([100.0], dtype=float)
    equity = equity.astype(float).rename("equity")
    values = equity.to_numpy()
    peaks = np.maximum.accumulate(values)
    drawdown = float(np.max((peaks - values) / peaks) * 100.0) if len(values) else 0.0
    oos = [float(w.oos_metrics.get("net_profit_pct") or 0.0) for w in windows]
    ins = [0.0 if w.is_metrics is None else float(w.is_metrics.get("net_profit_pct") or 0.0) for w in windows]
    metrics = {
        "net_profit_pct": float(values[-1] - 100.0),
        "max_drawdown_pct": drawdown,
        "total_trades": int(sum(int(w.oos_metrics.get("total_trades") or 0) for w in windows)),
        "wfe": walk_forward_efficiency(ins, oos, is_days=is_days, oos_days=oos_days),
        "oos_win_rate": 100.0 * sum(p > 0 for p in oos) / len(oos) if oos else 0.0,
    }
    return StitchedResult(equity=equity, metrics=metrics)


def walk_forward_efficiency(is_net_profits: list[float], oos_net_profits: list[float], *, is_days: int,
                            oos_days: int) -> float:
    """WFE in % (Pardo): annualised mean OOS net profit ÷ annualised mean IS net profit × 100.

    annualised = mean % × 365 ÷ window days; an IS figure of 0 gives 0 when the OOS figure is ≤ 0, else 100.
    """
    is_ann = float(np.mean(is_net_profits)) * 365.0 / is_days if is_net_profits else 0.0
    oos_ann = float(np.mean(oos_net_profits)) * 365.0 / oos_days if oos_net_profits else 0.0
    if is_ann == 0:
        return 0.0 if oos_ann <= 0 else 100.0
    return oos_ann / is_ann * 100.0


def stitched_trades(windows: list[WindowResult]) -> pd.DataFrame:
    """The windows' OOS trades in time order (entry time, then window), each with its ``window`` number."""
    frames = [w.oos_trades.assign(window=w.number) for w in windows if len(w.oos_trades)]
    if not frames:
        return _empty_trades().assign(window=pd.Series(dtype=int))
    trades = pd.concat(frames, ignore_index=True)
    trades = trades.sort_values(["entry_time", "window"], kind="mergesort").reset_index(drop=True)
    return trades[["window", *TRADE_COLUMNS]]


def _empty_trades() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c.endswith("_time") else
                                      (object if c == "direction" else float)) for c in TRADE_COLUMNS})
