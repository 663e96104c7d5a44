"""The merlin-kit command line: reports, JSON, exit codes and messages for people."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BASELINE_TRADES, needs_shared


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merlin_kit", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


@needs_shared
def test_backtest_json_matches_reference(link_csv, baseline, baseline_params):
    p = baseline["parameters"]
    out = cli("backtest", "--data", str(link_csv), "--strategy", "s01_trailing_ma", "--params", json.dumps(baseline_params),
              "--start", p["start"], "--end", p["end"], "--warmup", "1000", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert set(payload) == {"metrics", "trades"}
    assert payload["metrics"]["total_trades"] == 93
    ref = pd.read_csv(BASELINE_TRADES)
    assert [t["entry_time"] for t in payload["trades"]] == list(ref["entry_time"])
    assert payload["trades"][0]["exit_time"].endswith("+00:00")


def test_backtest_report_on_sample():
    out = cli("backtest", "--data", "sample", "--strategy", "s01_trailing_ma")
    assert out.returncode == 0, out.stderr
    assert "net_profit_pct" in out.stdout and "Trades (" in out.stdout and "S01 Trailing MA" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["backtest", "--data", "/no/such/file.csv"], "not found"),
        (["backtest", "--data", "sample", "--strategy", "nope"], "unknown strategy 'nope'"),
        (["backtest", "--data", "sample", "--params", "{\"maLength\": -4}"], "maLength"),
        (["backtest", "--data", "sample", "--params", "{\"bogus\": 1}"], "unknown parameter(s) 'bogus'"),
        (["backtest", "--data", "sample", "--params", "[1,2]"], "--params must be a JSON object"),
        (["backtest", "--data", "sample", "--start", "2030-01-01"], "2030"),
        (["optimize", "--data", "sample", "--budget", "trials:0"], "n_trials must be an integer >= 1"),
        (["optimize", "--data", "sample", "--budget", "weeks:3"], "expected trials:N, time:SECONDS or convergence:PATIENCE"),
        (["optimize", "--data", "sample", "--params", "maLength=300:100:25"], "min (300) > max (100)"),
        (["optimize", "--data", "sample", "--target", "profit"], "target 'profit' is unknown"),
        (["optimize", "--data", "sample", "--workers", "99"], "worker_processes must be an integer from 1 to 32"),
    ],
)
def test_errors_exit_2_without_traceback(args, message):
    out = cli(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_optimize_writes_run_folder_and_table(small_csv, tmp_path):
    out = cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:12", "--workers", "2",
              "--sampler", "random", "--seed", "1", "--params", "closeCountLong=2:6", "stopLongX", "maType=SMA,EMA",
              "--out", str(tmp_path / "run"), "--study", "cli-test")
    assert out.returncode == 0, out.stderr
    assert "12 / 12 trials" in out.stderr  # the progress bar goes to stderr (report.progress_text)
    assert "Top 10 of 12 distinct parameter sets (12 results;" in out.stdout and "closeCountLong" in out.stdout
    run_dir = tmp_path / "run"
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 12 and set(results["maType"]) <= {"SMA", "EMA"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_trials"] == 12 and summary["workers"] == 2 and summary["multiprocess_mode"] is True
    assert (run_dir / "study.journal").exists()


def test_optimize_json_and_no_save_study(small_csv, tmp_path):
    out = cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:6", "--workers", "1",
              "--sampler", "random", "--json", "--no-save-study", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["total_trials"] == 6 and summary["best_params"] and summary["storage"] is None
    assert not (tmp_path / "r" / "study.journal").exists()
    assert (tmp_path / "r" / "results.csv").exists()


def test_optimize_holdout_keeps_the_last_days_out_and_tests_the_top_results(small_csv, tmp_path):
    from merlin_kit import backtest, load_ohlcv
    from merlin_kit.robustness import holdout_split

    out = cli("optimize", "--data", str(small_csv), "--warmup", "200", "--budget", "trials:8", "--workers", "1",
              "--sampler", "random", "--seed", "3", "--params", "maLength", "closeCountLong", "--holdout", "7d",
              "--out", str(tmp_path / "r"), "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    frame = load_ohlcv(str(small_csv))
    opt_end, ho_start = holdout_split(frame, 7)
    assert frame.index[-1] - ho_start < pd.Timedelta(days=7) <= frame.index[-1] - opt_end
    results = pd.read_csv(tmp_path / "r" / "results.csv")
    table = pd.read_csv(tmp_path / "r" / "holdout.csv")
    assert len(shown["holdout"]) == len(table) == 8 and list(table["trial"]) == list(results["trial"][:8])
    best = results.iloc[0]
    params = {"maLength": int(best["maLength"]), "closeCountLong": int(best["closeCountLong"])}
    on_holdout = backtest(str(small_csv), "s01_trailing_ma", params, start=ho_start, warmup_bars=200)
    assert table["holdout_net_profit_pct"].iloc[0] == pytest.approx(on_holdout.metrics["net_profit_pct"], abs=1e-12)
    in_sample = backtest(str(small_csv), "s01_trailing_ma", params, end=opt_end, warmup_bars=200)
    assert table["is_net_profit_pct"].iloc[0] == pytest.approx(in_sample.metrics["net_profit_pct"], abs=1e-12)
    too_long = cli("optimize", "--data", str(small_csv), "--budget", "trials:2", "--holdout", "400d")
    assert too_long.returncode == 2 and "leaves no bar to optimise on" in too_long.stderr
