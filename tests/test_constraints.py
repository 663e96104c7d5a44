"""Constraints on metrics: parsing, violations from stored metrics, and a constrained one-objective run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from optuna.trial import TrialState

from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, parse_constraints
from merlin_kit.optimize._attrs import METRICS_ATTR
from merlin_kit.optimize._constraints import total_violation, violations
from merlin_kit.optimize.config import validate

PARAMS = ["closeCountLong", "closeCountShort", "stopLongX", "stopShortX"]


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("c_small.csv", 4000)


def test_violation_follows_optunas_sign_convention():
    cs = parse_constraints(["total_trades >= 30", "max_drawdown <= 25", "sharpe>0.5", "win_rate < 60"])
    assert [c.metric for c in cs] == ["total_trades", "max_drawdown_pct", "sharpe_ratio", "win_rate"]
    metrics = {"total_trades": 20, "max_drawdown_pct": 10.0, "sharpe_ratio": None, "win_rate": 61.0}
    assert violations(cs, metrics) == [10.0, -15.0, math.inf, 1.0]
    assert total_violation(violations(cs, metrics)) == math.inf
    assert total_violation([-1.0, 0.0]) == 0.0 and total_violation([2.0, -3.0, 0.5]) == 2.5
    assert parse_constraints(["  total_trades   >=  30 "])[0].text == "total_trades >= 30"


@pytest.mark.parametrize("text, says", [
    ("trades >= 30", "'trades' is unknown; allowed: score, net_profit"),
    ("total_trades => 30", "OP one of >=, <=, >, <"),
    ("total_trades >= thirty", "not 'metric OP number'"),
    (30, "a string 'metric OP number'"),
])
def test_bad_constraints_are_a_config_error_before_anything_starts(text, says):
    with pytest.raises(ConfigError) as info:
        validate(OptimizationConfig(), OptunaConfig(constraints=[text]))
    assert info.value.field == "constraints" and says in str(info.value)


def test_constrained_single_objective_run(small_csv, tmp_path):
    constraint = "total_trades >= 40"  # about half the trials of this window violate it
    run = optimize(
        OptimizationConfig(data=str(small_csv), worker_processes=2, optimize_params=PARAMS, warmup_bars=200),
        OptunaConfig(target="net_profit", constraints=[constraint], n_trials=24, sampler="tpe", n_startup_trials=6,
                     seed=2, output_dir=tmp_path / "run"))
    trials = {t.number: t for t in run.study.get_trials(deepcopy=False)}
    for r in run.results:
        if r.state == TrialState.FAIL.name:
            continue
        stored = trials[r.trial_number]
        # the worker recorded the violation computed from the metrics it stored; the results recompute it
        expected = 40 - stored.user_attrs[METRICS_ATTR]["total_trades"]
        assert stored.constraints == {constraint: expected}
        assert r.constraint_values == [expected] and r.feasible == (expected <= 0)
    complete = [r for r in run.results if r.state == "COMPLETE"]
    feasible = [r for r in complete if r.feasible]
    assert feasible and len(feasible) < len(complete), "the constraint should bite"
    assert complete[:len(feasible)] == feasible  # feasible first; infeasible kept after them
    assert run.best is feasible[0]
    assert run.best.objective == max(r.objective for r in feasible)
    assert [r.trial_number for r in complete if r.pareto] == [run.best.trial_number]
    assert run.summary.best_trial_number == run.best.trial_number
    frame = run.results_frame()
    assert {"feasible", "violation", f"violation: {constraint}"} <= set(frame.columns)
    assert "pareto" not in frame.columns  # one objective: no front column
