"""Every notebook in notebooks/ executes headless with papermill, parameters injected, small budgets.

Assertions are on what the notebooks produce: files in the output folder, the
numbers they print (checked against the library), static figures instead of
widgets (executed notebooks stay small).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

papermill = pytest.importorskip("papermill")
pytest.importorskip("ipykernel")

import merlin_kit as mk

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 4000)


def execute(name: str, tmp_path: Path, **parameters) -> dict:
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, cwd=str(tmp_path),
        kernel_name="python3", progress_bar=False, log_output=False, execution_timeout=240,
    )
    nb = json.loads(out.read_text())
    nb["_path"] = out
    return nb


def text_of(nb: dict) -> str:
    """Every stream and text/plain + text/html output of the executed notebook, joined."""
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append("".join(o["text"]))
            for key in ("text/plain", "text/html"):
                if key in o.get("data", {}):
                    parts.append("".join(o["data"][key]))
            if o.get("output_type") == "error":
                parts.append("\n".join(o.get("traceback", [])))
    return "\n".join(parts)


def mimetypes(nb: dict) -> list[str]:
    return [k for cell in nb["cells"] for o in cell.get("outputs", []) for k in o.get("data", {})]


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("0[12356]_*.ipynb")):
        nb = json.loads(path.read_text())
        assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name} must open with an explanation"
        assert "papermill" in "".join(nb["cells"][0]["source"]), f"{path.name} must say how to run it headless"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path.name} has outputs"
        assert "widgets" not in nb.get("metadata", {}), f"{path.name} carries widget state"
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs one cell tagged 'parameters'"


def test_02_parameters_cell_declares_every_documented_parameter():
    nb = json.loads((NOTEBOOKS / "02_optimize.ipynb").read_text())
    source = "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])
    for name in ("data_path", "strategy", "budget_mode", "n_trials", "time_limit", "patience", "workers", "target",
                 "seed", "study_name", "output_dir"):
        assert f"\n{name} = " in f"\n{source}", name
    assert 'data_path = "sample"' in source


def test_01_quickstart(tmp_path, small_csv):
    params = {"maLength": 100, "maType": "EMA"}
    nb = execute("01_quickstart", tmp_path, data_path=str(small_csv), params=params, warmup_bars=200)
    text = text_of(nb)
    expected = mk.backtest(str(small_csv), "s01_trailing_ma", params, warmup_bars=200)
    m = expected.metrics
    assert "4,000 bars" in text
    assert (f"Net profit {m['net_profit_pct']:.2f} %, max drawdown {m['max_drawdown_pct']:.2f} %, "
            f"{m['total_trades']} trades") in text
    assert f"{len(expected.trades)} trades" in text
    kinds = mimetypes(nb)
    assert kinds.count(PLOTLY_MIME) == 1 and WIDGET_MIME not in kinds
    fig = next(o["data"][PLOTLY_MIME] for c in nb["cells"] for o in c.get("outputs", []) if PLOTLY_MIME in o.get("data", {}))
    names = [t.get("name") for t in fig["data"]]
    assert "equity" in names and "drawdown %" in names and "exit" in names


def test_02_optimize(tmp_path, small_csv):
    out_dir = tmp_path / "sweep"
    nb = execute("02_optimize", tmp_path, data_path=str(small_csv), warmup_bars=200, n_trials=12, workers=2,
                 seed=5, target="romad", output_dir=str(out_dir), study_name="pm-sweep",
                 optimize_params=["maType", "maLength", "closeCountLong", "stopLongX"], top=3)
    text = text_of(nb)
    csv = pd.read_csv(out_dir / "results.csv")
    assert len(csv) == 12 and csv.columns[0] == "romad"
    assert {"maType", "maLength", "closeCountLong", "stopLongX", "net_profit_pct", "score"} <= set(csv.columns)
    assert csv["romad"].iloc[0] == csv["romad"].max()  # best first
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["total_trials"] == 12 and summary["workers"] == 2 and summary["study_name"] == "pm-sweep"
    report = (out_dir / "report.html").read_text()
    assert "merlin_kit report: pm-sweep" in report and "Optimisation history" in report
    assert report.count("<tr") >= 13 and "Parameter importances" in report
    assert (out_dir / "study.journal").exists()
    assert "Saved 12 results" in text and "Study pm-sweep: 12 trials (12 complete" in text
    assert f"Best trial {int(csv['trial'].iloc[0])}:" in text
    # headless: static figures, no widget state (a FigureWidget would add ~5 MB)
    kinds = mimetypes(nb)
    assert WIDGET_MIME not in kinds and "widgets" not in nb["metadata"]
    assert kinds.count(PLOTLY_MIME) >= 5  # history, parallel, equity, importances, top-N comparison
    assert nb["_path"].stat().st_size < 2_000_000


def test_02_optimize_time_budget(tmp_path, small_csv):
    out_dir = tmp_path / "timed"
    nb = execute("02_optimize", tmp_path, data_path=str(small_csv), warmup_bars=200, budget_mode="time",
                 time_limit=4, workers=2, output_dir=str(out_dir), optimize_params=["closeCountLong", "stopLongX"])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["budget_mode"] == "time" and summary["total_trials"] > 0
    assert len(pd.read_csv(out_dir / "results.csv")) == summary["total_trials"]
    assert (out_dir / "report.html").exists()
    assert f"Saved {summary['total_trials']} results" in text_of(nb)


def test_02_optimize_multi_objective(tmp_path, small_csv):
    out_dir = tmp_path / "pareto"
    nb = execute("02_optimize", tmp_path, data_path=str(small_csv), warmup_bars=200, n_trials=12, workers=2,
                 seed=3, sampler="random", objectives=["net_profit_pct:max", "max_drawdown_pct:min"],
                 constraints=["total_trades >= 20"], output_dir=str(out_dir),
                 optimize_params=["closeCountLong", "stopLongX"], top=2)
    csv = pd.read_csv(out_dir / "results.csv")
    assert len(csv) == 12 and list(csv.columns[:2]) == ["net_profit_pct", "max_drawdown_pct"]
    assert {"pareto", "feasible", "violation", "violation: total_trades >= 20"} <= set(csv.columns)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["objectives"] == [["net_profit_pct", "maximize"], ["max_drawdown_pct", "minimize"]]
    assert [p["trial"] for p in summary["pareto_front"]] == list(csv.loc[csv["pareto"], "trial"])
    assert "Pareto front" in (out_dir / "report.html").read_text()
    assert "Pareto front:" in text_of(nb)  # the summary line names the front


def _port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_03_interactive_autorun(tmp_path, small_csv):
    out_dir = tmp_path / "interactive"
    nb = execute("03_interactive", tmp_path, data_path=str(small_csv), budget_mode="trials", n_trials=10, workers=2,
                 seed=2, autorun=True, output_dir=str(out_dir))
    text = text_of(nb)
    assert "10 trials (10 complete" in text
    assert "n_trials=10" in text and "budget_mode='trials'" in text  # panel.config() printed
    assert len(pd.read_csv(out_dir / "results.csv")) == 10
    link = next(line for line in text.splitlines() if "optuna-dashboard: http://127.0.0.1:" in line)
    url = link.split('href="')[1].split('"')[0]
    time.sleep(0.5)
    assert not _port_open(url), "the notebook stops its dashboard in batch mode"
    kinds = mimetypes(nb)
    assert kinds.count(PLOTLY_MIME) >= 4  # static figures: history, parallel, equity, importances
    # the panel itself is a widget (its small state is saved); the live FigureWidgets are not created
    widget_state = json.dumps(nb["metadata"].get("widgets", {}))
    assert "FigureModel" not in widget_state and "anywidget" not in widget_state


def test_06_cluster_on_a_local_cluster(tmp_path, small_csv):
    pytest.importorskip("distributed")
    out_dir = tmp_path / "cluster"
    nb = execute("06_cluster", tmp_path, data_path=str(small_csv), n_trials=12, n_workers=2,
                 output_dir=str(out_dir), headless=True)
    text = text_of(nb)
    assert "2 Dask tasks" in text and "12 trials (12 complete" in text
    assert text.count(" on tcp://127.0.0.1:") == 2  # each kit worker named by its Dask worker's address
    assert (out_dir / "study.journal").exists()  # the journal optuna-dashboard read
    link = next(line for line in text.splitlines() if "optuna-dashboard: http://127.0.0.1:" in line)
    time.sleep(0.5)
    assert not _port_open(link.split('href="')[1].split('"')[0]), "the notebook stops its dashboard headless"


def test_05_validate(tmp_path, small_csv, monkeypatch):
    from merlin_kit.data import load_ohlcv
    from merlin_kit.walkforward import split_windows

    # the kernel imports this checkout's merlin_kit (and its new modules), not another installed copy
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    out_dir = tmp_path / "validate"
    expected_windows = split_windows(load_ohlcv(small_csv), is_days=16, oos_days=8)
    assert len(expected_windows) == 3  # the budget of this test: 3 windows on 4,000 bars (~41 days)
    nb = execute("05_validate", tmp_path, data_path=str(small_csv), warmup_bars=200, is_days=16, oos_days=8,
                 n_trials=6, workers=2, seed=3, pbo_splits=8, mc_paths=200, out_dir=str(out_dir))
    text = text_of(nb)
    assert "Traceback" not in text
    # walk-forward: the four files, one row per window of split_windows, the printed stitched numbers
    for name in ("windows.csv", "oos_trades.csv", "stitched_equity.csv", "summary.json"):
        assert (out_dir / name).exists(), name
    windows = pd.read_csv(out_dir / "windows.csv")
    assert len(windows) == len(expected_windows)
    assert list(windows["oos_start"]) == [w.oos_start.isoformat(sep=" ") for w in expected_windows]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["windows"] == len(expected_windows) and summary["total_trials"] == 6 * len(expected_windows)
    m = summary["stitched"]
    assert (f"Stitched OOS: net profit {m['net_profit_pct']:.2f} %, max drawdown {m['max_drawdown_pct']:.2f} %, "
            f"{m['total_trades']} trades, WFE {m['wfe']:.1f} %, OOS win rate {m['oos_win_rate']:.1f} %") in text
    assert f"{len(expected_windows)} windows (16 IS + 8 OOS days)" in text
    # overfitting statistics of the whole-period run (2 x 6 trials): DSR, PBO, stress test, Monte Carlo tables
    full = json.loads((out_dir / "full-period" / "summary.json").read_text())
    assert full["total_trials"] == 12
    assert "Deflated Sharpe Ratio: N = 12 trials" in text and "sr0" in text and "dsr" in text
    assert "PBO = " in text and "over 70 combinations (S = 8," in text  # binom(8, 4)
    assert "Stress test of the top 3 results" in text and "retention" in text and "profitable_share" in text
    assert "Monte Carlo of trial" in text and "200 paths" in text and "final_return_pct" in text
    # static figures only: layout, stitched equity, IS vs OOS, PBO logits, degradation; small notebook
    kinds = mimetypes(nb)
    assert WIDGET_MIME not in kinds and "widgets" not in nb["metadata"]
    assert kinds.count(PLOTLY_MIME) == 5
    assert nb["_path"].stat().st_size < 3_000_000
