"""Constraints on any metric: ``"total_trades >= 30"``, ``"max_drawdown_pct <= 25"``.

A constraint's *violation* follows Optuna's convention (a value <= 0 is
satisfied): ``metric >= b`` gives ``b - metric``, ``metric <= b`` gives
``metric - b`` (strict ``>``/``<`` the same: a trial exactly at the bound is
counted satisfied, as Optuna cannot express strictness).  A metric that is
undefined for a result (``None``, e.g. a Sharpe ratio without trades) violates
its constraint infinitely: nothing says it holds.

Violations are always computed from a trial's stored metrics
(:data:`~._attrs.METRICS_ATTR`): by the worker, which records them with
``trial.set_constraint(text, violation)`` (Optuna 5's way; every constrained
sampler, ``study.best_trials`` and optuna-dashboard read them: Optuna 5
deprecates ``constraints_func``), and again by the parent for the results.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from optuna.trial import FrozenTrial

from ..errors import ConfigError
from ._attrs import METRICS_ATTR
from ._objectives import resolve_metric

OPERATORS = (">=", "<=", ">", "<")
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric OP bound``; ``text`` is how the user wrote it (column and label)."""

    text: str
    metric: str
    op: str
    bound: float

    def violation(self, metrics: Mapping[str, Any]) -> float:
        value = metrics.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.inf
        value = float(value)
        return self.bound - value if self.op in (">=", ">") else value - self.bound


def parse_constraint(text: Any) -> Constraint:
    """One ``"metric OP number"``; a ConfigError on field ``constraints`` naming what is allowed."""
    if not isinstance(text, str):
        raise ConfigError(f"constraints: each constraint is a string 'metric OP number', got {text!r}",
                          field="constraints")
    match = _PATTERN.match(text)
    if match is None:
        raise ConfigError(f"constraints: {text!r} is not 'metric OP number' with OP one of "
                          f"{', '.join(OPERATORS)} (e.g. 'total_trades >= 30')", field="constraints", param=text)
    name, op, bound = match.groups()
    try:
        value = float(bound)
    except ValueError:
        raise ConfigError(f"constraints: {text!r}: {bound!r} is not a number", field="constraints",
                          param=text) from None
    metric = resolve_metric(name, "constraints")
    return Constraint(" ".join(text.split()), metric, op, value)


def parse_constraints(items: Any) -> list[Constraint]:
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"constraints must be a list of 'metric OP number' strings, got {items!r}",
                          field="constraints")
    return [parse_constraint(c) for c in items]


def violations(constraints: Sequence[Constraint], metrics: Mapping[str, Any]) -> list[float]:
    """One violation per constraint (<= 0: satisfied)."""
    return [c.violation(metrics) for c in constraints]


def total_violation(values: Sequence[float]) -> float:
    """Sum of the positive violations: 0 for a feasible trial."""
    return float(sum(v for v in values if v > 0))


def trial_violations(constraints: Sequence[Constraint], trial: FrozenTrial) -> list[float]:
    """A trial's violations from the metrics it stored; without metrics (it failed first) it is infeasible."""
    metrics = trial.user_attrs.get(METRICS_ATTR)
    if not metrics:
        return [math.inf] * len(constraints)
    return violations(constraints, metrics)


def trial_feasible(constraints: Sequence[Constraint], trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial_violations(constraints, trial))
