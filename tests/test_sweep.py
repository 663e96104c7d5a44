"""Sweeps (grid, random, QMC): precomputed points, evaluated in claimed batches, one record per trial.

Real storages (journal file, PostgreSQL, Redis), real worker processes, the real S01 kernel.  What must
hold: a grid covers every point exactly once; a sweep's trial is the trial ask/tell makes of the same
point (params, distributions, user attrs, value, intermediate values, state); the budget is exact; a
worker killed mid-batch loses nothing and duplicates nothing; a resumed study skips the points it has;
optuna-dashboard reads the study.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import uuid
import wsgiref.util
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit._platform import host_id
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization
from merlin_kit.optimize._attrs import OWNER_ATTR, SWEEP_POINT_ATTR, SWEEP_TICKET_ATTR, counts_towards_budget
from merlin_kit.optimize._engine import OptimizationRun
from merlin_kit.optimize._storage import close_storage, open_storage
from merlin_kit.optimize._sweep import SweepPlan, write_trials
from merlin_kit.optimize.config import SearchDim, check_sweep, grid_size, validate

pytestmark = pytest.mark.timeout(240)

#: 4 x 3 x 5 = 60 grid points (int, int, float with a step)
GRID = {"closeCountLong": {"min": 2, "max": 8, "step": 2}, "closeCountShort": {"min": 3, "max": 5, "step": 1},
        "stopLongX": {"min": 1.0, "max": 3.0, "step": 0.5}}
GRID_VALUES = {"closeCountLong": [2, 4, 6, 8], "closeCountShort": [3, 4, 5], "stopLongX": [1.0, 1.5, 2.0, 2.5, 3.0]}
SLOW = "tests._strategies:SlowS01"  # S01 plus 0.25 s a trial


@pytest.fixture(scope="module")
def data_csv(write_sample_csv) -> Path:
    return write_sample_csv("bars.csv", 3000)


def opt_config(data: Path, workers: int = 1, **kw) -> OptimizationConfig:
    kw.setdefault("param_ranges", GRID)
    return OptimizationConfig(data=str(data), warmup_bars=200, worker_processes=workers, **kw)


def finished(trials) -> list:
    return [t for t in trials if counts_towards_budget(t)]


def point_tuple(t) -> tuple:
    return tuple(t.params[k] for k in GRID_VALUES)


def test_grid_covers_every_point_once_with_two_workers(data_csv, tmp_path):
    cfg = OptunaConfig(sampler="grid", n_trials=1000, sweep_batch=7, storage=str(tmp_path / "s.journal"))
    run = optimize(opt_config(data_csv, workers=2, strategy=SLOW, start_method="fork"), cfg)
    trials = run.study.get_trials(deepcopy=False)
    done = finished(trials)
    assert run.config.n_trials == 60 == len(done) == run.summary.total_trials
    assert Counter(point_tuple(t) for t in done) == Counter(itertools.product(*GRID_VALUES.values()))
    assert sorted(t.system_attrs[SWEEP_POINT_ATTR] for t in done) == list(range(60))
    assert {t.user_attrs[OWNER_ATTR]["worker"] for t in done} == {0, 1}  # both workers took batches
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    assert len(trials) == 60  # every ticket became a point: the study holds nothing else


def test_grid_smaller_budget_is_a_seeded_subset_of_exactly_n(data_csv, tmp_path):
    def points(seed: int) -> list[tuple]:
        cfg = OptunaConfig(sampler="grid", n_trials=17, seed=seed, output_dir=tmp_path / f"r{seed}-{uuid.uuid4().hex}")
        done = finished(optimize(opt_config(data_csv), cfg).study.get_trials(deepcopy=False))
        assert len(done) == 17 == len({point_tuple(t) for t in done})
        return sorted(point_tuple(t) for t in done)

    first = points(3)
    assert first == points(3) and first != points(4)
    assert set(first) <= set(itertools.product(*GRID_VALUES.values()))


def test_sweep_trials_are_the_trials_ask_tell_makes_of_the_same_points(data_csv, tmp_path):
    """Same points by ask/tell (enqueued into the kit's own queue): params, distributions, user attrs,
    values, intermediate values and states agree; min_profit prunes and a raising strategy fails alike."""
    space = {**GRID, "closeCountLong": {"min": 2, "max": 5, "step": 1}, "stopShortX": {"min": 0.5, "max": 4.0}}
    opt = opt_config(data_csv, param_ranges=space, strategy="tests._strategies:RaisingS01", min_profit=40.0)
    storage = str(tmp_path / "s.journal")
    sweep = optimize(opt, OptunaConfig(sampler="random", sweep=True, seed=5, n_trials=40, storage=storage,
                                       study_name="sweep"))
    swept = finished(sweep.study.get_trials(deepcopy=False))
    assert len(swept) == 40
    assert {t.state for t in swept} == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}

    asked = OptimizationRun(opt, OptunaConfig(sampler="random", seed=5, n_trials=40, storage=storage,
                                              study_name="asktell"))
    for t in swept:
        asked._study.enqueue_trial(t.params)
    asked._run_inline()
    told = {json.dumps(t.params, sort_keys=True): t for t in finished(asked.study.get_trials(deepcopy=False))}
    assert len(told) == len({json.dumps(t.params, sort_keys=True) for t in swept})

    def attrs(t) -> dict:
        a = {k: v for k, v in t.user_attrs.items() if k not in (OWNER_ATTR, "traceback")}
        return {**a, "owner_keys": sorted(t.user_attrs[OWNER_ATTR])}

    for s in swept:
        a = told[json.dumps(s.params, sort_keys=True)]
        assert (s.state, s.value, s.intermediate_values) == (a.state, a.value, a.intermediate_values)
        assert s.distributions == a.distributions and s.params == a.params
        assert attrs(s) == attrs(a)
        assert ("traceback" in s.user_attrs) == ("traceback" in a.user_attrs)
    # and the kit's own readers agree: the same results table, row for row
    cols = ["state", "score"] + list(space)
    a_table = asked.results_frame()[cols].sort_values(cols[2:]).reset_index(drop=True)
    s_table = sweep.results_frame()[cols].sort_values(cols[2:]).reset_index(drop=True)
    assert a_table.equals(s_table)


def test_qmc_sweep_is_a_balanced_sobol_sequence(data_csv, tmp_path):
    space = {"stopLongX": {"min": 1.0, "max": 2.75, "step": 0.25}, "closeCountLong": {"min": 2, "max": 9, "step": 1},
             "stopShortX": {"min": 0.5, "max": 4.0, "step": 0.5}}
    cfg = OptunaConfig(sampler="qmc", sweep=True, seed=2, n_trials=64, output_dir=tmp_path / "q")
    done = finished(optimize(opt_config(data_csv, param_ranges=space), cfg).study.get_trials(deepcopy=False))
    assert len(done) == 64
    # 64 scrambled Sobol points: each of 8 values of every parameter exactly 8 times (random draws almost never)
    for name in space:
        assert sorted(Counter(t.params[name] for t in done).values()) == [8] * 8, name


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_a_killed_worker_batch_is_redone_without_duplicates(backend, data_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("MERLIN_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("MERLIN_HEARTBEAT_GRACE", "3")
    location, tag = str(tmp_path / "s.journal"), f"merlin-sweep-{uuid.uuid4().hex[:10]}"
    if backend == "postgres":
        location = os.environ.get("MERLIN_TEST_POSTGRES_URL") or pytest.skip("MERLIN_TEST_POSTGRES_URL is not set")
    cfg = OptunaConfig(sampler="grid", sweep_batch=6, storage=location, study_name=tag, output_dir=tmp_path / "r")
    run = start_optimization(opt_config(data_csv, workers=2, strategy=SLOW, start_method="fork"), cfg)
    try:
        end = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < end:
            for t in run.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                owner = t.user_attrs.get(OWNER_ATTR)
                if owner and SWEEP_TICKET_ATTR in t.system_attrs:
                    victim = owner["pid"]
                    break
            time.sleep(0.05)
        assert victim is not None, "no batch ever ran"
        time.sleep(0.6)  # mid-batch: a few of its six 0.25 s points computed, none written
        os.kill(victim, signal.SIGKILL)
        assert run.wait(120)
    finally:
        run.stop()
    trials = run.study.get_trials(deepcopy=False)
    done = finished(trials)
    assert len(done) == 60 == run.summary.total_trials
    assert sorted(t.system_attrs[SWEEP_POINT_ATTR] for t in done) == list(range(60))
    lost = [t for t in trials if t.state == TrialState.FAIL and not counts_towards_budget(t)]
    assert lost and all("ended during this trial" in t.user_attrs["error"] for t in lost)
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    if backend == "postgres":
        storage = open_storage(location, heartbeat=False)
        optuna.delete_study(study_name=tag, storage=storage)
        close_storage(storage)


def test_a_batch_half_written_before_its_worker_died_is_completed_not_repeated(data_csv, tmp_path):
    """The writer died between trials of its batch (some written, the ticket not finished): the
    re-done batch writes only the missing points."""
    cfg = OptunaConfig(sampler="grid", n_trials=60, sweep_batch=10, storage=str(tmp_path / "s.journal"))
    run = OptimizationRun(opt_config(data_csv), cfg)
    run._start(inline=True)  # queues the tickets
    storage, sid = run._storage, run._study_id
    tickets = storage.get_all_trials(sid, states=(TrialState.WAITING,))
    assert len(tickets) == 6
    first = tickets[0]
    storage.set_trial_state_values(first._trial_id, state=TrialState.RUNNING)
    dead = {"worker": 9, "pid": 2 ** 22 + 12345, "host": host_id(), "run": run.run_id}
    plan = SweepPlan.of(run.run_config)
    half = [optuna.trial.create_trial(params=p, distributions=plan.dists, value=1.0,
                                      user_attrs={OWNER_ATTR: dead}, system_attrs={SWEEP_POINT_ATTR: key})
            for key, p in plan.points(plan.batch_range(first.system_attrs[SWEEP_TICKET_ATTR]["batch"]))[:4]]
    write_trials(storage, sid, half)
    storage.set_trial_state_values(first._trial_id, state=TrialState.FAIL)  # as the reaper does
    assert run._sweep.replace_lost() == 1
    run._in_process_worker().run()
    run._finish()
    done = finished(run.study.get_trials(deepcopy=False))
    assert sorted(t.system_attrs[SWEEP_POINT_ATTR] for t in done) == list(range(60))
    assert sum(t.user_attrs[OWNER_ATTR]["worker"] == 9 for t in done) == 4


def test_resume_skips_points_the_study_has(data_csv, tmp_path):
    storage = str(tmp_path / "s.journal")
    first = optimize(opt_config(data_csv), OptunaConfig(sampler="grid", n_trials=25, seed=1, storage=storage,
                                                        study_name="g"))
    assert first.summary.total_trials == 25
    second = optimize(opt_config(data_csv), OptunaConfig(sampler="grid", n_trials=60, storage=storage,
                                                         study_name="g"))
    done = finished(second.study.get_trials(deepcopy=False))
    assert len(done) == 60 and Counter(point_tuple(t) for t in done) == Counter(
        itertools.product(*GRID_VALUES.values()))
    assert second.summary.total_trials == 35  # the second run evaluated only what was missing
    progress = second.progress()  # and its progress counts what it had to do, not the whole grid
    assert (progress.budget, progress.finished, progress.fraction) == (35, 35, 1.0)


def test_stop_ends_a_grid_between_batches_and_leaves_nothing_waiting(data_csv, tmp_path, startup_seconds):
    cfg = OptunaConfig(sampler="grid", n_trials=60, sweep_batch=4, output_dir=tmp_path / "r")
    run = start_optimization(opt_config(data_csv, strategy=SLOW), cfg)
    try:
        deadline = time.monotonic() + 30 + startup_seconds
        while len(finished(run.study.get_trials(deepcopy=False))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        run.stop()
        assert time.monotonic() - started < 5 + startup_seconds
    finally:
        run.stop()
    trials = run.study.get_trials(deepcopy=False)
    done = finished(trials)
    assert 4 <= len(done) < 60 and len({point_tuple(t) for t in done}) == len(done)
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]


def test_time_budget_grid(data_csv, tmp_path, startup_seconds):
    cfg = OptunaConfig(sampler="grid", budget_mode="time", time_limit=1, sweep_batch=2, output_dir=tmp_path / "r")
    started = time.monotonic()
    run = optimize(opt_config(data_csv, strategy=SLOW), cfg)
    assert time.monotonic() - started < 1 + 5 + startup_seconds
    done = finished(run.study.get_trials(deepcopy=False))
    assert 1 <= len(done) < 60 and run.summary.stop_reason == "time limit reached"


@pytest.mark.parametrize("backend", ["postgres", "redis"])
def test_grid_on_database_storages(backend, data_csv, tmp_path):
    var = {"postgres": "MERLIN_TEST_POSTGRES_URL", "redis": "MERLIN_TEST_REDIS_URL"}[backend]
    url = os.environ.get(var)
    if not url:
        pytest.skip(f"{var} is not set")
    tag = f"merlin-sweep-{uuid.uuid4().hex[:10]}"
    location = url if backend == "postgres" else f"{url}{'&' if '?' in url else '?'}prefix={tag}"
    cfg = OptunaConfig(sampler="grid", sweep_batch=8, storage=location, study_name=tag, output_dir=tmp_path / "r")
    try:
        run = optimize(opt_config(data_csv, workers=2, start_method="fork"), cfg)
        done = finished(run.study.get_trials(deepcopy=False))
        assert Counter(point_tuple(t) for t in done) == Counter(itertools.product(*GRID_VALUES.values()))
    finally:
        storage = open_storage(location, heartbeat=False)
        optuna.delete_study(study_name=tag, storage=storage)
        close_storage(storage)


def test_optuna_dashboard_reads_a_sweep(data_csv, tmp_path):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    journal = tmp_path / "s.journal"
    optimize(opt_config(data_csv, min_profit=0.0), OptunaConfig(sampler="grid", storage=str(journal),
                                                                study_name="dash"))
    storage = open_storage(str(journal), heartbeat=False)
    app = optuna_dashboard.wsgi(storage)
    sid = storage.get_study_id_from_name("dash")
    environ: dict = {"PATH_INFO": f"/api/studies/{sid}", "QUERY_STRING": "after=0", "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    status: list = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200")
    study = json.loads(body)
    assert len(study["trials"]) == 60
    assert {t["state"] for t in study["trials"]} <= {"Complete", "Pruned"}
    assert all(len(t["params"]) == 3 for t in study["trials"])
    assert {p["name"] for p in study["union_search_space"]} == set(GRID_VALUES)


@pytest.mark.parametrize("cfg, field", [
    (OptunaConfig(sampler="tpe", sweep=True), "sweep"),
    (OptunaConfig(sampler="grid", budget_mode="convergence", convergence_patience=5), "budget_mode"),
    (OptunaConfig(sampler="random", sweep=True, budget_mode="time", time_limit=5), "budget_mode"),
    (OptunaConfig(sampler="grid", pruner="median"), "pruner"),
    (OptunaConfig(sampler="grid", sampler_options={"popsize": 4}), "sampler_options"),
    (OptunaConfig(sampler="random", sweep_batch=10), "sweep_batch"),
    (OptunaConfig(sampler="grid", sweep_batch=0), "sweep_batch"),
    (OptunaConfig(sampler="random", sweep="yes"), "sweep"),
])
def test_sweep_settings_are_checked_before_anything_starts(cfg, field):
    with pytest.raises(ConfigError) as err:
        validate(OptimizationConfig(param_ranges=GRID), cfg)
    assert err.value.field == field


def test_a_grid_needs_a_step_for_floats():
    with pytest.raises(ConfigError, match="needs a step") as err:
        check_sweep(OptunaConfig(sampler="grid"), [SearchDim("stopLongX", "float", 1.0, 2.0, None)])
    assert err.value.param == "stopLongX"


def test_grid_budget_is_the_grid_size_unless_smaller():
    space = validate(OptimizationConfig(param_ranges=GRID), OptunaConfig(sampler="grid")).space
    assert grid_size(space) == 60
    assert validate(OptimizationConfig(param_ranges=GRID), OptunaConfig(sampler="grid", n_trials=500)).config.n_trials == 60
    assert validate(OptimizationConfig(param_ranges=GRID), OptunaConfig(sampler="grid", n_trials=7)).config.n_trials == 7


def test_plan_points_do_not_depend_on_the_batch_size():
    space = validate(OptimizationConfig(param_ranges=GRID), OptunaConfig(sampler="grid")).space
    for sampler in ("random", "qmc", "grid"):
        n = 60 if sampler == "grid" else 600
        a, b = SweepPlan(space, sampler, n, 9, 7), SweepPlan(space, sampler, n, 9, 300)
        assert a.points(range(0, n)) == b.points(range(0, n)) == \
            [p for k in range(a.n_batches) for p in a.points(a.batch_range(k))]


def test_walk_forward_windows_each_sweep_their_grid_on_one_set_of_workers(link_csv, tmp_path):
    from merlin_kit.walkforward import walk_forward

    grid = {"closeCountLong": {"min": 2, "max": 8, "step": 2}, "stopLongX": {"min": 1.0, "max": 3.0, "step": 0.5}}
    result = walk_forward(OptimizationConfig(data=str(link_csv), param_ranges=grid, worker_processes=2,
                                             start_method="fork"),
                          OptunaConfig(sampler="grid", output_dir=tmp_path / "wf"), is_days=60, oos_days=30)
    assert len(result.windows) >= 3
    for w in result.windows:
        done = finished(w.run.study.get_trials(deepcopy=False))
        assert len(done) == 20 == len({(t.params["closeCountLong"], t.params["stopLongX"]) for t in done})


def test_remote_workers_sweep_a_grid_and_the_parent_sees_the_end(data_csv, tmp_path):
    """worker_processes=0: two ``merlin-kit worker`` processes (other machines) do every batch; the
    parent ends the run when the last batch is written."""
    import subprocess
    import sys

    url = os.environ.get("MERLIN_TEST_REDIS_URL")
    if not url:
        pytest.skip("MERLIN_TEST_REDIS_URL is not set")
    tag = f"merlin-sweep-{uuid.uuid4().hex[:10]}"
    location = f"{url}{'&' if '?' in url else '?'}prefix={tag}"
    cfg = OptunaConfig(sampler="grid", sweep_batch=5, storage=location, study_name=tag, output_dir=tmp_path / "r")
    run = start_optimization(opt_config(data_csv, workers=0), cfg)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-m", "merlin_kit", "worker", "--storage", location, "--study", tag,
                               "--worker-id", str(k)], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    try:
        assert run.wait(120)
        assert [p.wait(60) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
        done = finished(run.study.get_trials(deepcopy=False))
        assert Counter(point_tuple(t) for t in done) == Counter(itertools.product(*GRID_VALUES.values()))
        assert run.summary.total_trials == 60
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        run.stop()
        storage = open_storage(location, heartbeat=False)
        optuna.delete_study(study_name=tag, storage=storage)
        close_storage(storage)


def test_cli_grid_and_sweep_flags(data_csv, tmp_path):
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "merlin_kit", "optimize", "--data", str(data_csv), "--warmup",
                               "200", "--workers", "1", *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    out = cli("--sampler", "grid", "--params", "closeCountLong=2:8:2", "stopLongX=1:3:0.5", "--budget",
              "trials:1000", "--sweep-batch", "4", "--out", str(tmp_path / "g"))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["total_trials"] == 20 and summary["sampler"] == "grid"
    out = cli("--sampler", "random", "--sweep", "--seed", "3", "--budget", "trials:30", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["total_trials"] == 30
    out = cli("--sampler", "tpe", "--sweep", "--out", str(tmp_path / "t"))
    assert out.returncode == 2 and "sweep=True needs a sampler whose points are known in advance" in out.stderr
