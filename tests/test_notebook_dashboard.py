"""optuna-dashboard on a run's storage: from Python (``dashboard()``) and from the shell (``merlin-kit dashboard``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("optuna_dashboard")

from merlin_kit.errors import ConfigError
from merlin_kit.notebook import DashboardHandle, dashboard
from merlin_kit.notebook.dashboard import free_port, resolve_storage
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, start_optimization

REPO = Path(__file__).resolve().parents[1]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


@pytest.fixture(scope="module")
def saved_run(small_csv, tmp_path_factory):
    """A finished single-worker run whose study is saved in its run folder."""
    out = tmp_path_factory.mktemp("saved") / "run"
    return optimize(
        OptimizationConfig(data=str(small_csv), worker_processes=1, warmup_bars=200,
                           optimize_params=["closeCountLong", "stopLongX"]),
        OptunaConfig(n_trials=7, seed=4, save_study=True, output_dir=str(out), study_name="dash-saved"),
    )


def get_json(url: str) -> dict:
    with _OPENER.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def finished_trials(base: str, study_id: int = 0) -> int:
    detail = get_json(f"{base}/api/studies/{study_id}?after=0")
    return sum(t["state"] in ("Complete", "Pruned", "Fail") for t in detail["trials"])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dashboard_of_a_saved_run_lists_its_trials(saved_run):
    with dashboard(saved_run) as handle:
        assert isinstance(handle, DashboardHandle) and handle.running
        assert handle.url.startswith("http://127.0.0.1:") and handle.url.endswith("/dashboard/")
        assert handle.storage == str((saved_run.run_dir / "study.journal").resolve())
        base = handle.url.rsplit("/dashboard/", 1)[0]
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash-saved"]
        assert finished_trials(base, studies[0]["study_id"]) == 7
        html = handle._repr_html_()
        assert f'href="{handle.url}"' in html and "optuna-dashboard" in html
        port = handle.port
    assert not handle.running and not port_open(port)


@pytest.mark.parametrize("how", ["run_dir", "journal", "journal+open"])
def test_dashboard_accepts_folder_journal_path_and_location(saved_run, how):
    journal = saved_run.run_dir / "study.journal"
    target = {"run_dir": saved_run.run_dir, "journal": str(journal), "journal+open": f"journal+open://{journal}"}[how]
    assert resolve_storage(target) == str(journal.resolve())


def test_dashboard_errors_name_the_fix(small_csv, tmp_path, saved_run):
    temp_run = optimize(OptimizationConfig(data=str(small_csv), worker_processes=1, warmup_bars=200,
                                           optimize_params=["closeCountLong"]), OptunaConfig(n_trials=2))
    with pytest.raises(ConfigError, match="save_study=True"):
        dashboard(temp_run)
    with pytest.raises(ConfigError, match="has no study.journal"):
        dashboard(tmp_path)
    with pytest.raises(ConfigError, match="no such journal file"):
        dashboard(tmp_path / "missing.journal")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="in use"):
            dashboard(saved_run, port=busy.getsockname()[1])


@pytest.mark.slow
def test_dashboard_shows_trials_while_workers_add_them(small_csv, tmp_path):
    run = start_optimization(
        OptimizationConfig(data=str(small_csv), worker_processes=2, warmup_bars=200,
                           optimize_params=["closeCountLong", "stopLongX", "maLength"]),
        OptunaConfig(budget_mode="time", time_limit=120, save_study=True, output_dir=str(tmp_path / "live")),
    )
    try:
        deadline = time.monotonic() + 90
        while run.progress().finished < 3:
            assert time.monotonic() < deadline, "no trials from the workers"
            time.sleep(0.2)
        handle = dashboard(run)  # while the run is going (the temporary journal would do too)
        base = handle.url.rsplit("/dashboard/", 1)[0]
        first = finished_trials(base)
        assert first >= 3
        deadline = time.monotonic() + 30  # optuna-dashboard caches the trials for 2-10 s
        while finished_trials(base) <= first:
            assert time.monotonic() < deadline, "the dashboard did not show new trials"
            time.sleep(1)
    finally:
        run.stop()
    handle.stop()


@pytest.mark.posix_only  # send_signal(SIGINT)
def test_cli_dashboard_serves_a_run_folder_until_interrupted(saved_run):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "merlin_kit", "dashboard", str(saved_run.run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"optuna-dashboard: http://127.0.0.1:{port}/dashboard/"), line + proc.stderr.read()
        assert finished_trials(f"http://127.0.0.1:{port}") == 7
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    assert code == 0
    time.sleep(0.3)
    assert not port_open(port), "Ctrl-C stops the dashboard too"


def test_cli_dashboard_errors_are_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "merlin_kit", "dashboard", str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert res.returncode == 2
    assert "has no study.journal" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "merlin_kit", "dashboard"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert res.returncode == 2 and "run folder" in res.stderr
