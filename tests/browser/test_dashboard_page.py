"""The optuna-dashboard page of a finished, saved run lists its trials (Chromium via Playwright)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna_dashboard")

from merlin_kit.data import sample
from merlin_kit.notebook.dashboard import free_port
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize

REPO = Path(__file__).resolve().parents[2]
N_TRIALS = 8


def test_dashboard_page_lists_the_trials_of_a_finished_run(chromium, artifacts, tmp_path):
    data = tmp_path / "small.csv"
    sample(3000).to_csv(data, index_label="time")
    run = optimize(
        OptimizationConfig(data=str(data), worker_processes=2, warmup_bars=200,
                           optimize_params=["closeCountLong", "stopLongX", "maType"]),
        OptunaConfig(n_trials=N_TRIALS, seed=11, save_study=True, output_dir=str(tmp_path / "run"),
                     study_name="browser-dashboard"),
    )
    assert run.summary.total_trials == N_TRIALS
    # from the shell, as a user would: merlin-kit dashboard RUN_DIR
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "merlin_kit", "dashboard", str(run.run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert "optuna-dashboard: http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split()[1]
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(url)
            page.get_by_text("browser-dashboard").first.wait_for(timeout=60_000)
            page.screenshot(path=str(artifacts / "dashboard_studies.png"))
            page.get_by_text("browser-dashboard").first.click()
            page.wait_for_url("**/studies/*", timeout=30_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the history chart
            page.screenshot(path=str(artifacts / "dashboard_study.png"))
            page.goto(page.url.split("?")[0].rstrip("/") + "/trials")
            page.get_by_text(f"{N_TRIALS} Trials").wait_for(timeout=30_000)
            for n in range(N_TRIALS):
                assert page.get_by_text(f"Trial {n}", exact=True).count() >= 1, f"Trial {n} missing"
            # the trial the engine found best is the one the dashboard marks "Best Trial"
            best = run.best.trial_number
            marked = page.locator("li").filter(has_text="Best Trial")
            assert marked.count() == 1 and marked.first.inner_text().splitlines()[0].strip() == f"Trial {best}"
            assert page.get_by_text("Complete", exact=True).count() >= N_TRIALS
            page.screenshot(path=str(artifacts / "dashboard_trials.png"))
        finally:
            page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
