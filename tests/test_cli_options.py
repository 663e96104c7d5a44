"""README promises of the command line that no other test checks, each through a real `merlin-kit` process.

Every test here was seen to fail once with the feature broken on purpose (the break is named in
each docstring). The subprocesses run this checkout's code (PYTHONPATH=repository) in a temporary
folder, so a run's default folder (./merlin_runs/<study>/) lands in that folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from merlin_kit.optimize._start import resolve_start_method
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TIMEOUT = 240  # generous: two shared cores


def cli(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merlin_kit", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out


def param_columns(results: pd.DataFrame) -> list[str]:
    """The strategy parameters of results.csv: the columns between ``state`` and the first metric."""
    cols = list(results.columns)
    return cols[cols.index("state") + 1:cols.index("net_profit_pct")]


def journal_trials(journal: Path, study: str) -> list:
    import optuna

    from merlin_kit.optimize._storage import StorageLocation

    storage = StorageLocation.parse(str(journal)).open(create=False)
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


# 1. the README's first command, through the installed console script ----------------------------------------

def test_readme_first_command_through_the_console_script(tmp_path):
    """`merlin-kit optimize --data sample --budget trials:300`, default workers and run folder.

    Break seen failing: cmd_optimize no longer printed the results table (``_print_results_table`` skipped).
    """
    script = shutil.which("merlin-kit")
    if script is None:
        pytest.skip("the merlin-kit console script is not installed (pip install -e .)")
    # the script imports whatever merlin_kit its interpreter finds: with PYTHONPATH it must be this checkout's
    first = Path(script).read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    python = first[2:].strip() if first.startswith("#!") and "python" in first else sys.executable
    where = subprocess.run([python, "-c", "import merlin_kit; print(merlin_kit.__file__)"], capture_output=True,
                           text=True, env=ENV, cwd=tmp_path, timeout=60)
    assert Path(where.stdout.strip()).resolve() == (REPO / "merlin_kit" / "__init__.py").resolve(), where

    out = subprocess.run([script, "optimize", "--data", "sample", "--budget", "trials:300"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=TIMEOUT)
    ok(out)
    assert "300 / 300 trials" in out.stderr  # the progress bar, on stderr
    assert re.search(r"Top 10 of \d+ distinct parameter sets \(300 results; .*target: score", out.stdout)
    assert "300 trials (" in out.stdout and "stopped: budget reached" in out.stdout
    runs = list((tmp_path / "merlin_runs").iterdir())
    assert len(runs) == 1, runs
    run_dir = runs[0]
    assert {p.name for p in run_dir.iterdir()} >= {"results.csv", "summary.json", "study.journal"}
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 300 and results["trial"].nunique() == 300
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_trials"] == 300 and summary["study_name"] == run_dir.name
    assert summary["workers"] == max(1, os.cpu_count() or 1)  # default: one worker per CPU core
    # default start method auto: forkserver here (Linux/macOS), spawn on Windows
    assert summary["start_method"] == resolve_start_method("auto") and summary["stop_reason"] == "budget reached"
    assert len(journal_trials(run_dir / "study.journal", run_dir.name)) == 300


# 2. per-worker seeds: seed + worker_id --------------------------------------------------------------------------

def _per_worker_params(tmp_path: Path, name: str) -> dict[int, list[tuple]]:
    ok(cli("optimize", "--data", "sample", "--budget", "trials:24", "--workers", "2", "--sampler", "random",
           "--seed", "5", "--start-method", "fork", "--out", str(tmp_path / name), "--study", name, "--json",
           cwd=tmp_path))
    results = pd.read_csv(tmp_path / name / "results.csv").sort_values("trial")
    cols = param_columns(results)
    assert "maLength" in cols and "maType" in cols
    return {int(w): [tuple(row) for row in group[cols].itertuples(index=False)]
            for w, group in results.groupby("worker")}


@pytest.mark.needs_fork
def test_each_worker_samples_with_seed_plus_its_id_and_reruns_reproduce(tmp_path):
    """``--seed 5 --workers 2 --sampler random``: workers differ; a rerun repeats each worker's sequence.

    Break seen failing: make_sampler gave every worker ``o.seed`` (no ``+ worker_id``).
    """
    a = _per_worker_params(tmp_path, "seed-a")
    b = _per_worker_params(tmp_path, "seed-b")
    for run in (a, b):
        assert set(run) == {0, 1}, f"both workers must have run trials: {({w: len(p) for w, p in run.items()})}"
        assert run[0][0] != run[1][0], "the two workers' first trials have the same parameters"
        assert not set(run[0]) & set(run[1]), "the two workers sampled the same parameter sets"
    for worker in (0, 1):
        n = min(len(a[worker]), len(b[worker]))  # how many trials a worker claims varies between runs
        assert a[worker][:n] == b[worker][:n], f"worker {worker} did not repeat its parameters with the same seed"


# 3. the percentile pruner with several workers; no patient pruner --------------------------------------------------------

def _pruned_run(tmp_path: Path, pruner: str, small_csv: Path, n: int = 40) -> pd.DataFrame:
    out = ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", f"trials:{n}",
                 "--workers", "2", "--sampler", "random", "--seed", "1", "--pruner", pruner,
                 "--out", str(tmp_path / pruner), "--json", cwd=tmp_path))
    summary = json.loads(out.stdout)
    results = pd.read_csv(tmp_path / pruner / "results.csv")
    assert summary["total_trials"] == n and len(results) == n  # the budget stays exact with pruning
    assert summary["completed_trials"] + summary["pruned_trials"] + summary["failed_trials"] == n
    assert summary["workers"] == 2
    return results


def test_percentile_pruner_prunes_with_several_workers(tmp_path, small_csv):
    """Break seen failing: make_pruner returned NopPruner for every pruner."""
    results = _pruned_run(tmp_path, "percentile", small_csv)
    pruned = results[results["state"] == "PRUNED"]
    assert len(pruned) > 0, "the percentile pruner pruned nothing"
    assert (pruned["note"] == "pruned by the percentile pruner").any(), pruned["note"].value_counts()
    assert (results["state"] == "COMPLETE").any()


def test_patient_pruner_is_refused_naming_the_allowed_pruners(tmp_path, small_csv):
    """``--pruner patient`` used to be accepted and never pruned: a trial is one backtest that reports one value
    (step 0), and optuna's PatientPruner returns False while a trial has <= patience+1 steps, so the wrapped
    MedianPruner was never asked. Patience over steps means nothing with one step, so the option is refused
    before anything runs, with the allowed pruners and the reason (exit 2, one line), and no run folder is made.

    Break seen failing: "patient" put back in PRUNERS (and in make_pruner): the run exited 0 with no trial pruned.
    """
    out = cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:10", "--workers", "2",
              "--sampler", "random", "--seed", "1", "--pruner", "patient", "--out", str(tmp_path / "r"), "--json",
              cwd=tmp_path, timeout=120)
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "pruner must be one of none, median, percentile, got 'patient'" in lines[0]
    assert "one value" in lines[0]
    assert not (tmp_path / "r" / "results.csv").exists()


def test_a_study_made_with_the_patient_pruner_is_refused_by_workers():
    """A study stored by an older version with pruner 'patient': a worker says so instead of silently not pruning.

    Break seen failing: make_pruner returned NopPruner for any unknown name (no error raised).
    """
    from merlin_kit.errors import ConfigError
    from merlin_kit.optimize._worker import make_pruner
    from merlin_kit.optimize.config import OptunaConfig

    class Cfg:
        optuna = OptunaConfig(pruner="patient")

    with pytest.raises(ConfigError, match="pruner 'patient' is not supported; allowed: none, median, percentile"):
        make_pruner(Cfg())  # type: ignore[arg-type]


# 4. a worker joining a finished run --------------------------------------------------------------------------

def test_worker_joining_a_finished_run_exits_at_once(tmp_path, small_csv):
    """Break seen failing: WorkerLoop.claim ignored ``budget_fully_queued`` (the worker then waited for a queued
    trial for QUEUE_WAIT_SECONDS and stopped with "no queued trial appeared")."""
    journal = tmp_path / "s.journal"
    ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:5", "--workers", "1",
           "--storage", str(journal), "--study", "s", "--out", str(tmp_path / "run"), "--json", cwd=tmp_path))
    before = journal_trials(journal, "s")
    assert len(before) == 5
    started = time.monotonic()
    out = ok(cli("worker", "--storage", str(journal), "--study", "s", cwd=tmp_path, timeout=120))
    took = time.monotonic() - started
    assert ": 0 trials (0 failed); trial budget reached" in out.stderr, out.stderr
    after = journal_trials(journal, "s")
    assert [(t.number, t.state) for t in after] == [(t.number, t.state) for t in before]
    assert took < 60, f"the worker took {took:.1f} s to leave a finished run"


def test_worker_refuses_to_join_a_sqlite_study(tmp_path, small_csv):
    """A SQLite study is written by its run's own process; a second writer is refused before anything runs
    (``optimize`` already refuses SQLite with several workers: a joined worker is one more)."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:3", "--workers", "1",
           "--storage", db, "--study", "s", "--out", str(tmp_path / "run"), "--json", cwd=tmp_path))
    out = cli("worker", "--storage", db, "--study", "s", cwd=tmp_path, timeout=120)
    assert out.returncode != 0
    assert "SQLite study is for one worker process" in out.stderr and "Traceback" not in out.stderr, out.stderr


# 5. other optimize options -----------------------------------------------------------------------------------

def test_fixed_parameter_is_kept_and_not_searched(tmp_path, small_csv):
    """``--fixed '{"maType": "EMA"}'``. Break seen failing: _optimization_config dropped --fixed."""
    out = ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:8", "--workers", "1",
                 "--sampler", "random", "--seed", "2", "--fixed", '{"maType": "EMA"}', "--out", str(tmp_path / "r"),
                 "--study", "fixed", "--json", cwd=tmp_path))
    results = pd.read_csv(tmp_path / "r" / "results.csv")
    assert len(results) == 8 and set(results["maType"]) == {"EMA"}
    assert json.loads(out.stdout)["best_params"].get("maType") in (None, "EMA")
    for trial in journal_trials(tmp_path / "r" / "study.journal", "fixed"):
        assert "maType" not in trial.params  # not a search dimension
        assert "maLength" in trial.params  # the others are searched


@pytest.mark.posix_only  # forkserver
def test_min_profit_prunes_every_trial_below_it_with_forkserver(tmp_path, small_csv):
    """``--min-profit 1000`` (no trial earns 1000 %) on forkserver workers.

    Breaks seen failing: TrialRunner.evaluate skipped the min-profit check (trials COMPLETE); cmd_optimize
    dropped --start-method (summary said spawn).
    """
    out = ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:8", "--workers", "2",
                 "--sampler", "random", "--min-profit", "1000", "--start-method", "forkserver",
                 "--out", str(tmp_path / "r"), "--json", cwd=tmp_path))
    summary = json.loads(out.stdout)
    assert summary["start_method"] == "forkserver"
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["start_method"] == "forkserver"
    assert summary["total_trials"] == 8 and summary["pruned_trials"] == 8 and summary["completed_trials"] == 0
    results = pd.read_csv(tmp_path / "r" / "results.csv")
    assert len(results) == 8 and set(results["state"]) == {"PRUNED"}
    assert results["note"].str.contains(r"is below the minimum 1000(?:\.0)?%", regex=True).all(), results["note"]


@pytest.mark.needs_fork
def test_time_budget_with_fork_workers(tmp_path, small_csv):
    """``--budget time:4 --start-method fork``: trials run until the deadline, then the run ends.

    Breaks seen failing: WorkerLoop.should_stop ignored the deadline (the parent then stopped the workers as
    stuck: stop_reason "time limit reached (stuck trials stopped)"); cmd_optimize dropped --start-method (spawn).
    """
    started = time.monotonic()
    out = ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "time:4", "--workers", "2",
                 "--sampler", "random", "--start-method", "fork", "--out", str(tmp_path / "r"), "--json",
                 cwd=tmp_path, timeout=120))
    took = time.monotonic() - started
    summary = json.loads(out.stdout)
    assert summary["budget_mode"] == "time" and summary["stop_reason"] == "time limit reached"
    assert summary["start_method"] == "fork"
    assert summary["total_trials"] > 0
    assert summary["optimization_time_seconds"] >= 3.5  # it used its time
    assert took < 90, f"a 4 s budget took {took:.0f} s"


def test_convergence_budget_stops_after_patience_without_improvement(tmp_path, small_csv):
    """``--budget convergence:5``: the workers stop once 5 finished trials in a row brought no improvement.

    The summary's stop_reason and the workers' own stop reasons (study user attrs) say "converged".
    Break seen failing: WorkerLoop.should_stop ignored convergence (the run never ended:
    subprocess timeout after 180 s).
    """
    out = ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "convergence:5",
                 "--workers", "2", "--sampler", "random", "--seed", "3", "--out", str(tmp_path / "r"),
                 "--study", "conv", "--json", cwd=tmp_path, timeout=180))
    summary = json.loads(out.stdout)
    assert summary["budget_mode"] == "convergence"
    assert summary["stop_reason"] == "converged: no improvement in 5 trials"
    assert "trials without improvement" in out.stderr
    results = pd.read_csv(tmp_path / "r" / "results.csv")
    assert len(results) == summary["total_trials"] >= 6
    after_best = results[results["trial"] > summary["best_trial_number"]]
    assert len(after_best) >= 5, "stopped before 5 trials without improvement"
    import optuna

    from merlin_kit.optimize._storage import StorageLocation

    storage = StorageLocation.parse(str(tmp_path / "r" / "study.journal")).open(create=False)
    attrs = optuna.load_study(study_name="conv", storage=storage).user_attrs
    reasons = [v.get("stop_reason", "") for v in attrs.values() if isinstance(v, dict) and "stop_reason" in v]
    assert reasons and any(r.startswith("converged: no improvement in") for r in reasons), reasons


def test_dashboard_serves_http_on_the_printed_url(tmp_path, small_csv):
    """``merlin-kit dashboard --storage JOURNAL`` prints a URL that answers HTTP.

    Break seen failing: cmd_dashboard printed a URL with the wrong port (port + 1): connection refused.
    """
    journal = tmp_path / "d.journal"
    ok(cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:3", "--workers", "1",
           "--storage", str(journal), "--study", "d", "--out", str(tmp_path / "run"), "--json", cwd=tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "merlin_kit", "dashboard", "--storage", str(journal)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV)
    try:
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(90)
        assert first and first[0].startswith("optuna-dashboard: http://"), (first, proc.poll())
        url = first[0].split()[1]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:
            try:
                with opener.open(url, timeout=10) as response:
                    assert response.status == 200
                    assert b"html" in response.read(4096).lower()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            code = None
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    assert code == 143  # SIGTERM: 128 + 15, as the README says
