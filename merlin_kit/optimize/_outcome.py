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
from typing import Any, Mapping, Sequence

from optuna.trial import TrialState

from ._attrs import ERROR_ATTR, PRUNE_REASON_ATTR, TRACEBACK_ATTR
from ._objectives import Objective, objective_values


@dataclass(frozen=True)
class Outcome:
    """How a trial ends. ``reported``: the value is also reported at step 0 (what a PRUNED trial's value is)."""

    state: TrialState
    value: float | list[float] | None = None
    reported: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def final_value(self) -> float | list[float] | None:
        """The trial's value once told: its own (COMPLETE), the reported one (PRUNED), else none."""
        return self.value if self.state == TrialState.COMPLETE or self.reported else None


def judge(metrics: Mapping[str, Any], objectives: Sequence[Objective], min_profit: float | None) -> Outcome:
    """The outcome of a finished backtest: an undefined objective -> PRUNED, a non-finite one -> FAIL,
    below ``min_profit`` -> PRUNED (value reported; one objective only), else COMPLETE.

    ``value`` is a float with one objective and the list of values with several (what ``study.tell`` takes).
    """
    values = objective_values(dict(metrics), objectives)
    undefined = [o.metric for o, v in zip(objectives, values) if v is None]
    if undefined:  # every objective alike: PRUNED with the reason (a multi-objective study too)
        reason = (f"target metric {', '.join(map(repr, undefined))} is undefined for this result "
                  "(e.g. too few trades)")
        return Outcome(TrialState.PRUNED, attrs={PRUNE_REASON_ATTR: reason})
    bad = next((v for v in values if not math.isfinite(v)), None)
    if bad is not None:
        return Outcome(TrialState.FAIL, attrs={ERROR_ATTR: f"objective is {bad}"})
    if len(values) > 1:  # no pruning: config.check_objectives refuses pruner and min_profit here
        return Outcome(TrialState.COMPLETE, values)
    value = values[0]
    if min_profit is not None and metrics["net_profit_pct"] < min_profit:
        reason = f"net profit {metrics['net_profit_pct']:.4g}% is below the minimum {min_profit}%"
        return Outcome(TrialState.PRUNED, value, reported=True, attrs={PRUNE_REASON_ATTR: reason})
    return Outcome(TrialState.COMPLETE, value)


def failure_attrs(exc: BaseException) -> dict[str, str]:
    """The attrs of a trial whose backtest raised ``exc`` (call inside the ``except``): error and traceback."""
    return {ERROR_ATTR: f"{type(exc).__name__}: {exc}", TRACEBACK_ATTR: traceback.format_exc()[-4000:]}
