"""A PostgreSQL server that goes away in the middle of a run: one line, not a page of tracebacks, and the
next run on the restarted server reaps the trials the dead run left RUNNING.

Uses a private PostgreSQL started with ``.ci/services.sh`` on its own port and folder (so stopping it
disturbs no other test); skipped with a reason where the PostgreSQL server binaries are not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit.optimize import OptimizationConfig, OptunaConfig, open_storage, optimize

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / ".ci" / "services.sh"
PARAMS = ["closeCountLong", "closeCountShort", "stopLongX", "stopShortX"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _services(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {SERVICES} && {command}"], env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture()
def private_pg():
    """``(url, stop, start)`` of a PostgreSQL server of this test alone."""
    probe = _services("_merlin_pg_bindir", dict(os.environ))
    if probe.returncode != 0 or shutil.which("psql") is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    folder = tempfile.mkdtemp(prefix="merlin-pg-gone-", dir="/tmp")
    os.chmod(folder, 0o755)  # the server runs as the 'postgres' user when we are root
    env = {**os.environ, "MERLIN_PG_PORT": str(_free_port()), "MERLIN_SERVICES_DIR": folder}

    def start() -> str:
        done = _services('start_postgres >/dev/null && echo "$MERLIN_TEST_POSTGRES_URL"', env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def stop() -> None:
        done = _services('_merlin_pg_run "$(_merlin_pg_bindir)/pg_ctl" -D "$MERLIN_SERVICES_DIR/pg" -m immediate '
                         '-w stop', env)
        assert done.returncode == 0, done.stderr

    url = start()
    try:
        yield url, stop, start
    finally:
        _services('_merlin_pg_run "$(_merlin_pg_bindir)/pg_ctl" -D "$MERLIN_SERVICES_DIR/pg" -m immediate -w stop',
                  env)
        shutil.rmtree(folder, ignore_errors=True)


def _finished(url: str, study: str) -> int:
    try:
        loaded = optuna.load_study(study_name=study, storage=open_storage(url))
    except Exception:  # the study is not created yet
        return 0
    return sum(t.state.is_finished() for t in loaded.get_trials(deepcopy=False))


def test_postgres_going_away_mid_run_is_one_line_and_the_next_run_reaps(private_pg, write_sample_csv, tmp_path):
    url, stop, start = private_pg
    csv = write_sample_csv("gone.csv", 3000)
    cmd = [sys.executable, "-m", "merlin_kit", "optimize", "--data", str(csv), "--warmup", "200",
           "--strategy", "tests._strategies:SlowS01", "--params", *PARAMS, "--budget", "trials:400",
           "--workers", "2", "--sampler", "random", "--storage", url, "--study", "gone", "--out", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while _finished(url, "gone") < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        stop()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("merlin-kit optimize: error: storage postgresql://merlin:***@127.0.0.1:"), err
    assert "stopped answering during the run" in last
    assert "merlin:merlin@" not in out + err  # the password is never shown
    assert len([line for line in err.splitlines() if "stopped answering" in line]) <= 4  # parent + one per worker

    start()
    loaded = optuna.load_study(study_name="gone", storage=open_storage(url))
    left_running = [t.number for t in loaded.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    run = optimize(
        OptimizationConfig(data=str(csv), strategy="tests._strategies:SlowS01", worker_processes=2,
                           optimize_params=PARAMS, warmup_bars=200),
        OptunaConfig(n_trials=4, sampler="random", storage=url, study_name="gone"),
    )
    assert run.summary.total_trials == 4
    after = {t.number: t for t in run.study.get_trials(deepcopy=False)}
    assert all(after[n].state == TrialState.FAIL for n in left_running)  # the dead run's trials were reaped
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
