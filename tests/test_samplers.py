"""Every sampler through the kit's trial queue with real worker processes, and every bad sampler setting refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from optuna.trial import TrialState

from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, check_sampler, optimize
from merlin_kit.optimize.config import SAMPLERS, validate

FEW = ["closeCountLong", "closeCountShort", "stopLongX", "stopShortX"]
N = 16
#: small populations so that several generations run within N trials
OPTIONS = {"cmaes": {"popsize": 4}, "nsga2": {"population_size": 4}, "nsga3": {"population_size": 4}}


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


def make(csv: Path, workers: int = 2, **kwargs) -> OptimizationConfig:
    return OptimizationConfig(data=str(csv), worker_processes=workers, optimize_params=FEW, warmup_bars=200, **kwargs)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
def test_every_sampler_runs_exactly_n_trials_with_two_workers(sampler, small_csv, tmp_path):
    """Break seen failing: a sampler built without the queue (study.optimize) overshoots N with 2 workers."""
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        pytest.skip("the gp sampler needs torch (pip install \"merlin-kit[gp]\"), not installed here")
    cfg = OptunaConfig(n_trials=N, sampler=sampler, sampler_options=OPTIONS.get(sampler, {}), seed=11,
                       n_startup_trials=4, storage=str(tmp_path / "study.journal"), study_name=f"s-{sampler}")
    run = optimize(make(small_csv), cfg)
    trials = run.study.get_trials(deepcopy=False)
    assert len(trials) == N and run.summary.total_trials == N
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    stored = run.study.user_attrs
    assert any(isinstance(v, dict) and v.get("optuna", {}).get("sampler") == sampler for v in stored.values())


def test_qmc_workers_walk_one_sequence_without_duplicates(small_csv, tmp_path):
    """Each trial takes the sequence's point of its trial number: distinct points across both workers.

    Break seen failing: Optuna's QMCSampler reads and then writes a shared counter, so two workers can take
    the same index; with per-worker seeds (seed + k) the scrambled sequences differ between workers.
    """
    import numpy as np
    from scipy.stats import qmc

    opt = OptimizationConfig(data=str(small_csv), worker_processes=2, optimize_params=["riskPerTrade"],
                             param_ranges={"riskPerTrade": {"min": 0.5, "max": 50.0}}, warmup_bars=200)
    run = optimize(opt, OptunaConfig(n_trials=N, sampler="qmc", sampler_options={"scramble": True}, seed=5,
                                     storage=str(tmp_path / "q.journal"), study_name="qmc"))
    trials = sorted(run.study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert len(trials) == N
    values = [t.params["riskPerTrade"] for t in trials]
    assert len(set(values)) == N, values
    point = 0.5 + qmc.Sobol(1, seed=5, scramble=True).random(N)[:, 0] * (50.0 - 0.5)
    # a trial drawn before any trial knew the search space is random (trial 0, maybe 1); every other trial
    # takes the sequence's point at its trial number
    later = [t for t in trials if t.number > 0]
    hits = sum(bool(np.isclose(t.params["riskPerTrade"], point[t.number])) for t in later)
    assert hits >= len(later) - 1, (values, point.tolist())


@pytest.mark.parametrize("name, options, n_objectives, constrained, words", [
    ("cmaes", {}, 2, False, ["one objective", "nsga2"]),
    ("cmaes", {}, 1, True, ["constraints", "tpe, nsga2, nsga3, gp"]),
    ("tpe", {"popsize": 3}, 1, False, ["'popsize'", "multivariate, group"]),
    ("tpe", {"n_startup_trials": 3}, 1, False, ["n_startup_trials", "--startup-trials"]),
    ("tpe", {"group": True, "multivariate": False}, 1, False, ["multivariate"]),
    ("cmaes", {"popsize": 1}, 1, False, ["integer >= 2"]),
    ("cmaes", {"with_margin": True, "use_separable_cma": True}, 1, False, ["exclude"]),
    ("nsga2", {"crossover_prob": 1.5}, 2, False, ["[0, 1]"]),
    ("nsga2", {"crossover": "magic"}, 2, False, ["uniform, blxalpha"]),
    ("nsga3", {"crossover": "undx", "population_size": 2}, 3, False, [">= 3"]),
    ("qmc", {"qmc_type": "lhs"}, 1, False, ["sobol, halton"]),
    ("random", {"seed": 1}, 1, False, ["allowed: none"]),
    ("annealing", {}, 1, False, ["tpe, random, cmaes"]),
])
def test_invalid_sampler_settings_are_config_errors(name, options, n_objectives, constrained, words):
    with pytest.raises(ConfigError) as exc:
        check_sampler(name, options, n_objectives=n_objectives, constrained=constrained)
    for word in words:
        assert word in str(exc.value)


def test_valid_options_come_back_typed():
    assert check_sampler("nsga3", {"population_size": "8", "crossover": "sbx", "mutation_prob": "0.1"},
                         n_objectives=3, constrained=True) == {"population_size": 8, "crossover": "sbx",
                                                               "mutation_prob": 0.1}
    assert check_sampler("tpe", {"group": "true"}, n_objectives=1, constrained=False) == {"group": True}
    assert check_sampler("qmc", {}, n_objectives=2, constrained=False) == {}
    # non-adaptive samplers draw regardless of constraints; the constraints then sort their results
    assert check_sampler("random", {}, n_objectives=2, constrained=True) == {}
    assert check_sampler("qmc", {}, n_objectives=1, constrained=True) == {}


@pytest.mark.parametrize("cfg, words", [
    (dict(sampler="cmaes", objectives=["net_profit_pct:max", "max_drawdown_pct:min"]), ["one objective", "nsga2"]),
    (dict(sampler="cmaes", constraints=["total_trades >= 5"]), ["constraints", "tpe, nsga2"]),
    (dict(sampler="grid", objectives=["net_profit_pct:max", "max_drawdown_pct:min"]), ["sweep", "sweep=False"]),
    (dict(sampler="random", sweep=True, constraints=["total_trades >= 5"]), ["sweep", "constraints"]),
])
def test_validate_checks_the_sampler_against_the_runs_objectives_and_constraints(cfg, words):
    """The run's real objectives and constraints reach check_sampler (and the sweep rules) before any worker."""

    with pytest.raises(ConfigError) as exc:
        validate(OptimizationConfig(data="sample", optimize_params=["maLength"]),
                 OptunaConfig(n_trials=10, **cfg))
    for word in words:
        assert word in str(exc.value)


def test_gp_without_torch_names_the_extra():
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: the missing-package error cannot happen")
    with pytest.raises(ConfigError, match=r"merlin-kit\[gp\]"):
        validate(make(Path("x.csv")), OptunaConfig(sampler="gp"))


def test_bad_option_is_refused_by_validate_before_any_worker(small_csv):
    with pytest.raises(ConfigError) as exc:
        validate(make(small_csv), OptunaConfig(sampler="cmaes", sampler_options={"population_size": 8}))
    assert exc.value.field == "sampler_options" and exc.value.param == "population_size"
    assert "popsize" in str(exc.value)


def test_walk_forward_windows_are_reused_only_with_the_same_sampler_options(tmp_path):
    """The resume key of a walk-forward window holds the options (absent when none: older keys unchanged)."""
    from merlin_kit.walkforward._runner import plan_walk_forward

    opt = OptimizationConfig(data="sample", optimize_params=FEW, warmup_bars=200)

    def settings(**kw):
        cfg = OptunaConfig(sampler="cmaes", output_dir=str(tmp_path / str(len(kw))), **kw)
        return plan_walk_forward(opt, cfg, is_days=60, oos_days=30).settings

    assert "sampler_options" not in settings()
    assert settings(sampler_options={"popsize": "6"})["sampler_options"] == {"popsize": 6}


def test_a_worker_machine_without_the_samplers_package_is_told_before_it_joins(small_csv, tmp_path):
    """``merlin-kit worker`` checks the study's sampler can be built here (as the parent did on its machine)."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: the missing-package error cannot happen")
    from merlin_kit.optimize import check_join, open_storage
    from merlin_kit.optimize._runconfig import load_run_config, store_run_config

    journal = str(tmp_path / "study.journal")
    optimize(make(small_csv, 1), OptunaConfig(n_trials=2, sampler="random", storage=journal, study_name="j"))
    check_join(journal, "j")
    storage = open_storage(journal)
    study_id = storage.get_study_id_from_name("j")
    cfg = load_run_config(storage, study_id)
    cfg.optuna.sampler = "gp"  # as if the study had been made on a machine with torch
    store_run_config(storage, study_id, cfg)
    with pytest.raises(ConfigError, match=r"merlin-kit\[gp\]"):
        check_join(journal, "j")
