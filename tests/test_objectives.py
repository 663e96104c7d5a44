"""Multi-objective runs: the objectives, the Pareto front, hypervolume and its convergence budget.

The front in the results is checked against a brute-force non-dominated set of
the study's feasible COMPLETE trials, computed here independently; the
hypervolume against Optuna's own algorithm; convergence on two real worker
processes sharing a journal; and a run on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit.errors import ConfigError
from merlin_kit.optimize import (
    OptimizationConfig, OptunaConfig, close_storage, hypervolume, open_storage, optimize, parse_objectives,
)
from merlin_kit.optimize._attrs import METRICS_ATTR, OWNER_ATTR, converged_attr
from merlin_kit.optimize._objectives import reference_point, trials_since_hv_gain
from merlin_kit.optimize.config import validate

PARAMS = ["closeCountLong", "closeCountShort", "stopLongX", "stopShortX"]
TWO = [("net_profit_pct", "maximize"), ("max_drawdown_pct", "minimize")]


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("mo_small.csv", 4000)


def make(csv: Path, workers: int = 2) -> OptimizationConfig:
    return OptimizationConfig(data=str(csv), worker_processes=workers, optimize_params=PARAMS, warmup_bars=200)


# -- parsing -----------------------------------------------------------------------------------------------
def test_objectives_accept_aliases_short_directions_and_natural_defaults():
    got = parse_objectives(["net_profit:max", ("max_drawdown", "min"), "sharpe", ("ulcer",)])
    assert [(o.metric, o.direction) for o in got] == [
        ("net_profit_pct", "maximize"), ("max_drawdown_pct", "minimize"), ("sharpe_ratio", "maximize"),
        ("ulcer_index", "minimize")]
    assert [(o.metric, o.direction) for o in parse_objectives("net_profit_pct:max, max_drawdown_pct:min")] == [
        ("net_profit_pct", "maximize"), ("max_drawdown_pct", "minimize")]


@pytest.mark.parametrize("objectives, says", [
    ([("profit", "max"), ("max_drawdown_pct", "min")], "'profit' is unknown; allowed: score"),
    ([("net_profit_pct", "up"), ("max_drawdown_pct", "min")], "must be one of max, maximize, min, minimize"),
    ([("net_profit_pct", "max"), ("net_profit", "min")], "'net_profit_pct' is given twice"),
    ([f"{m}:max" for m in ("score", "net_profit", "romad", "sharpe", "sortino", "sqn", "win_rate")], "at most 6"),
    ([], "must be a list"),
])
def test_bad_objectives_are_a_config_error_naming_the_field(objectives, says):
    with pytest.raises(ConfigError, match="objectives") as info:
        validate(OptimizationConfig(), OptunaConfig(objectives=objectives))
    assert info.value.field == "objectives" and says in str(info.value)


def test_multi_objective_refuses_pruning_and_min_profit_and_checks_hv_reference():
    with pytest.raises(ConfigError, match="cannot prune") as info:
        validate(OptimizationConfig(), OptunaConfig(objectives=TWO, pruner="median"))
    assert info.value.field == "pruner"
    with pytest.raises(ConfigError, match="'net_profit_pct >= 5'") as info:
        validate(OptimizationConfig(min_profit=5), OptunaConfig(objectives=TWO))
    assert info.value.field == "min_profit"
    with pytest.raises(ConfigError, match="2 finite numbers") as info:
        validate(OptimizationConfig(), OptunaConfig(objectives=TWO, hv_reference=[1.0]))
    assert info.value.field == "hv_reference"
    with pytest.raises(ConfigError, match="both given") as info:
        validate(OptimizationConfig(), OptunaConfig(target="romad", objectives=TWO))
    assert info.value.field == "objectives"
    checked = validate(OptimizationConfig(), OptunaConfig(objectives=["net_profit:max", "max_drawdown:min"]))
    assert checked.config.objectives == [["net_profit", "maximize"], ["max_drawdown", "minimize"]]


# -- hypervolume ----------------------------------------------------------------------------------------
def test_two_objective_hypervolume_by_hand_and_against_optuna():
    from optuna._hypervolume import compute_hypervolume

    # (1,3) (2,2) (3,1) under reference (4,4): 3 + 2 + 1 boxes of the staircase
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == 6.0
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4)) == 6.0  # dominated / outside: nothing
    assert hypervolume([], (4, 4)) == 0.0
    rng = np.random.default_rng(3)
    for _ in range(20):
        pts = rng.random((15, 2))
        assert hypervolume(pts, (1.0, 1.0)) == pytest.approx(compute_hypervolume(pts, np.ones(2)))


def test_three_objective_hypervolume_matches_inclusion_exclusion():
    rng = np.random.default_rng(5)
    pts = rng.random((4, 3))
    ref = np.ones(3)
    exact = 0.0
    for k in range(1, len(pts) + 1):  # union of boxes [p, ref] by inclusion-exclusion
        for subset in itertools.combinations(pts, k):
            corner = np.max(subset, axis=0)
            exact += (-1) ** (k + 1) * float(np.prod(ref - corner))
    assert hypervolume(pts, ref) == pytest.approx(exact)


def test_hypervolume_gain_counts_only_this_runs_trials_and_a_fixed_reference():
    ref = [10.0, 10.0]
    entries = [(True, True, (5.0, 5.0)), (True, True, (6.0, 6.0)), (False, True, (4.0, 6.0)),
               (True, False, None), (True, True, (5.0, 5.0)), (True, True, (1.0, 9.0))]
    # gain at 0, none at 1 (dominated), gain at 2 (other run: not counted), 3 infeasible, 4 duplicate, gain at 5
    assert trials_since_hv_gain(entries[:5], ref)[0] == 3
    since, volume = trials_since_hv_gain(entries, ref)
    assert since == 0 and volume == pytest.approx(hypervolume([(5, 5), (4, 6), (1, 9)], ref))
    assert reference_point([(0.0, 1.0), (2.0, 1.0)]) == [2.2, 2.0]


# -- real runs ----------------------------------------------------------------------------------------------
def _violation(metrics: dict, text: str) -> float:
    """The test's own reading of 'metric OP bound'."""
    name, op, bound = text.split()
    value = metrics.get(name)
    if value is None:
        return float("inf")
    return float(bound) - value if op.startswith(">") else value - float(bound)


def _brute_front(trials, constraint: str) -> set[int]:
    pool = [t for t in trials if t.state == TrialState.COMPLETE
            and _violation(t.user_attrs[METRICS_ATTR], constraint) <= 0]
    loss = {t.number: (-t.values[0], t.values[1]) for t in pool}
    front = set()
    for a in pool:
        dominated = any(all(x <= y for x, y in zip(loss[b.number], loss[a.number])) and loss[b.number] != loss[a.number]
                        for b in pool)
        if not dominated:
            front.add(a.number)
    return front


def test_front_in_results_is_the_non_dominated_feasible_set(small_csv, tmp_path):
    constraint = "total_trades >= 40"  # about half the trials of this window violate it
    run = optimize(make(small_csv), OptunaConfig(objectives=TWO, constraints=[constraint], n_trials=30,
                                                 sampler="random", seed=4, output_dir=tmp_path / "run"))
    trials = run.study.get_trials(deepcopy=False)
    assert len([t for t in trials if t.state.is_finished()]) == 30
    expected = _brute_front(trials, constraint)
    assert expected, "the seed should give some feasible trials"
    assert {r.trial_number for r in run.results if r.pareto} == expected
    # the front first, best primary objective first; run.best is its head
    front = [r for r in run.results if r.pareto]
    assert run.results[:len(front)] == front
    assert [r.values[0] for r in front] == sorted((r.values[0] for r in front), reverse=True)
    assert run.best is front[0]
    # infeasible trials are kept, marked, after every feasible one
    infeasible = [r for r in run.results if r.state == "COMPLETE" and not r.feasible]
    assert infeasible, "the constraint should bite"
    assert all(r.violation == pytest.approx(_violation(r.metrics, constraint)) and r.violation > 0
               for r in infeasible)
    complete = [r for r in run.results if r.state == "COMPLETE"]
    assert [r.feasible for r in complete] == sorted((r.feasible for r in complete), reverse=True)
    # the study: directions, metric names (optuna-dashboard shows them), Optuna's own front agrees
    assert run.study.metric_names == ["net_profit_pct", "max_drawdown_pct"]
    assert {t.number for t in run.study.best_trials} == expected
    # results.csv and summary.json carry the objectives, the flags, the violation and the front
    import pandas as pd
    csv = pd.read_csv(tmp_path / "run" / "results.csv")
    assert {"net_profit_pct", "max_drawdown_pct", "pareto", "feasible", "violation",
            f"violation: {constraint}"} <= set(csv.columns)
    assert set(csv.loc[csv["pareto"], "trial"]) == expected
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["objectives"] == [["net_profit_pct", "maximize"], ["max_drawdown_pct", "minimize"]]
    assert summary["constraints"] == [constraint]
    assert [p["trial"] for p in summary["pareto_front"]] == [r.trial_number for r in front]


def test_hypervolume_convergence_stops_both_workers(small_csv):
    patience = 8
    reference = [-100.0, 100.0]  # net profit -100 %, drawdown 100 %: every trial lies inside
    # trials of ~0.25 s: both workers are running before the run can converge
    slow = dataclasses.replace(make(small_csv), strategy="tests._strategies:SlowS01")
    run = optimize(slow, OptunaConfig(
        objectives=TWO, budget_mode="convergence", convergence_patience=patience, n_trials=None,
        sampler="random", seed=3, hv_reference=reference))
    from optuna._hypervolume import compute_hypervolume

    trials = [t for t in run.study.get_trials(deepcopy=False) if t.state.is_finished()]

    def since_gain(finished: list) -> int:  # the test's own count: trials since Optuna's hypervolume last grew
        points, best, since = [], 0.0, 0
        for t in sorted(finished, key=lambda t: t.number):
            if t.state == TrialState.COMPLETE:
                points.append((-t.values[0], t.values[1]))
                hv = compute_hypervolume(np.array(points), np.array([100.0, 100.0]))
                if hv > best * (1 + 1e-12):
                    best, since = hv, -1
            since += 1
        return since

    # replay the trials in the order they finished: the run reached `patience` trials without a gain at
    # some moment, and after it at most the trial each of the two workers had in flight finished
    order = sorted(trials, key=lambda t: t.datetime_complete)
    reached = next((i for i in range(1, len(order) + 1) if since_gain(order[:i]) >= patience), None)
    assert reached is not None, "the run stopped before `patience` trials without a gain"
    assert len(order) - reached <= 2, (reached, len(order))
    assert len(trials) < 300
    assert "converged" in run.summary.stop_reason
    assert run.study.user_attrs.get(converged_attr(run.run_id)) is not None
    workers = {t.user_attrs[OWNER_ATTR]["worker"] for t in trials}
    assert len(workers) == 2, "both workers ran trials, and both stopped"
    assert all(w.exitcode == 0 for w in run.summary.worker_reports if w.pid is not None)


def test_cli_objectives_and_constraint(small_csv, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "merlin_kit", "optimize", "--data", str(small_csv),
                               "--warmup", "200", "--workers", "1", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    bad = cli("--objectives", "net_profit_pct:max,drawdown:min", "--budget", "trials:5")
    assert bad.returncode != 0 and "'drawdown' is unknown; allowed" in bad.stderr
    bad = cli("--objectives", "net_profit_pct:max,max_drawdown_pct:min", "--constraint", "total_trades => 3",
              "--budget", "trials:5")
    assert bad.returncode != 0 and "OP one of >=, <=, >, <" in bad.stderr
    ok = cli("--objectives", "net_profit_pct:max,max_drawdown_pct:min", "--constraint", "total_trades >= 10",
             "--constraint", "max_drawdown_pct < 60", "--params", *PARAMS, "--budget", "trials:12",
             "--sampler", "random", "--seed", "2", "--out", str(tmp_path / "cli"))
    assert ok.returncode == 0, ok.stderr
    assert "Pareto front:" in ok.stdout and "total_trades >= 10, max_drawdown_pct < 60" in ok.stdout
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["constraints"] == ["total_trades >= 10", "max_drawdown_pct < 60"]
    assert summary["pareto_front"]


@pytest.mark.timeout(240)
def test_two_objectives_on_postgresql(small_csv, tmp_path):
    url = os.environ.get("MERLIN_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MERLIN_TEST_POSTGRES_URL is not set")
    name = f"merlin-test-mo-{uuid.uuid4().hex[:10]}"
    try:
        run = optimize(make(small_csv), OptunaConfig(
            objectives=TWO, constraints=["total_trades >= 40"], n_trials=16, sampler="tpe", n_startup_trials=4,
            seed=8, storage=url, study_name=name, output_dir=tmp_path / "run"))
        trials = run.study.get_trials(deepcopy=False)
        assert sum(t.state.is_finished() for t in trials) == 16
        assert {r.trial_number for r in run.results if r.pareto} == _brute_front(trials, "total_trades >= 40")
        storage = open_storage(url)
        assert optuna.load_study(study_name=name, storage=storage).metric_names == [
            "net_profit_pct", "max_drawdown_pct"]
    finally:
        storage = open_storage(url)
        if name in {s.study_name for s in storage.get_all_studies()}:
            optuna.delete_study(study_name=name, storage=storage)
        close_storage(storage)


def test_panel_objectives_and_constraints_round_trip_and_show_errors_beside_the_target():
    from merlin_kit.notebook import ConfigPanel

    panel = ConfigPanel(OptimizationConfig(), OptunaConfig(objectives=[("net_profit", "max"), ("sharpe", "min")],
                                                           constraints=["total_trades >= 30"]))
    assert panel.target.value == "net_profit" and panel.objectives.more.value == ("sharpe_ratio:min",)
    _, cfg = panel.config()
    assert [(o.metric, o.direction) for o in parse_objectives(cfg.objectives)] == [
        ("net_profit_pct", "maximize"), ("sharpe_ratio", "minimize")]
    assert list(cfg.constraints) == ["total_trades >= 30"]
    panel.objectives.constraints.value = "total_trades => 3"
    panel.validate()
    assert "OP one of >=, <=, >, <" in panel.errors["target"]
    panel.objectives.constraints.value = ""
    panel.objectives.more.value = ()
    assert panel.config()[1].objectives is None  # one objective again: the target


def test_resuming_a_study_with_other_objectives_or_constraints_is_refused(small_csv, tmp_path):
    storage = str(tmp_path / "study.journal")
    base = dict(n_trials=3, sampler="random", seed=1, storage=storage, study_name="mo-resume")
    optimize(make(small_csv, 1), OptunaConfig(objectives=TWO, constraints=["total_trades >= 10"], **base))
    with pytest.raises(ConfigError, match="direction") as info:  # the study's directions differ
        optimize(make(small_csv, 1), OptunaConfig(target="net_profit", **base))
    assert info.value.field == "study_name"
    with pytest.raises(ConfigError, match="constraints") as info:
        optimize(make(small_csv, 1), OptunaConfig(objectives=TWO, constraints=["total_trades >= 20"], **base))
    assert info.value.field == "study_name"
    resumed = optimize(make(small_csv, 1), OptunaConfig(objectives=TWO, constraints=["total_trades >= 10"], **base))
    assert resumed.summary.study_trials == 6
