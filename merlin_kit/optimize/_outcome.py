"""What a trial's backtest metrics make of it: COMPLETE with a value, PRUNED or FAIL, and why.

The ask/tell worker (:class:`~._worker.TrialRunner`) and the sweep worker
(:mod:`._sweep_worker`) both judge a backtest here, so a sweep's trial carries
exactly the state, value, intermediate value and attributes that the same
point gets by ask/tell.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Mapping

from optuna.trial import TrialState

from ._attrs import ERROR_ATTR, PRUNE_REASON_ATTR, TRACEBACK_ATTR


@dataclass(frozen=True)
class Outcome:
    """How a trial ends. ``reported``: the value is also reported at step 0 (what a PRUNED trial's value is)."""

    state: TrialState
    value: float | None = None
    reported: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def final_value(self) -> float | None:
        """The trial's value once told: its own (COMPLETE), the reported one (PRUNED), else none."""
        return self.value if self.state == TrialState.COMPLETE or self.reported else None


def judge(metrics: Mapping[str, Any], metric: str, min_profit: float | None) -> Outcome:
    """The outcome of a finished backtest: undefined target -> PRUNED, non-finite -> FAIL, below
    ``min_profit`` -> PRUNED (value reported), else COMPLETE."""
    value = metrics[metric]
    if value is None:
        reason = f"target metric {metric!r} is undefined for this result (e.g. too few trades)"
        return Outcome(TrialState.PRUNED, attrs={PRUNE_REASON_ATTR: reason})
    value = float(value)
    if not math.isfinite(value):
        return Outcome(TrialState.FAIL, attrs={ERROR_ATTR: f"objective is {value}"})
    if min_profit is not None and metrics["net_profit_pct"] < min_profit:
        reason = f"net profit {metrics['net_profit_pct']:.4g}% is below the minimum {min_profit}%"
        return Outcome(TrialState.PRUNED, value, reported=True, attrs={PRUNE_REASON_ATTR: reason})
    return Outcome(TrialState.COMPLETE, value)


def failure_attrs(exc: BaseException) -> dict[str, str]:
    """The attrs of a trial whose backtest raised ``exc`` (call inside the ``except``): error and traceback."""
    return {ERROR_ATTR: f"{type(exc).__name__}: {exc}", TRACEBACK_ATTR: traceback.format_exc()[-4000:]}
