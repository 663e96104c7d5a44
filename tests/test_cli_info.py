"""A new user's first steps on the command line: what can be optimised, output into a pipe, the notebook extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from merlin_kit.strategies import get_strategy, list_strategies

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "merlin_kit", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300, env={**environ, **env})


def test_describe_is_the_schema():
    s01 = get_strategy("s01_trailing_ma")
    table = s01.describe()
    assert list(table["name"]) == s01.param_names()
    assert list(table["optimized"]) == [p.optimize for p in s01.params]
    row = table.set_index("name").loc["maLength"]
    assert (row["type"], row["default"], row["opt_low"], row["opt_high"], row["opt_step"]) == ("int", 45, 25, 500, 25)
    assert isinstance(row["default"], int)  # not 45.0: the table shows what the user would type
    assert table.set_index("name").loc["maType", "choices"].startswith("SMA, EMA")


def test_params_command_lists_names_defaults_and_ranges():
    out = cli("params", "s01_trailing_ma")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "s01_trailing_ma: 25 parameters"
    by_name = {line.split()[0]: line for line in lines[2:27]}
    assert set(by_name) == set(get_strategy("s01_trailing_ma").param_names())
    assert by_name["maLength"].split()[1:5] == ["int", "45", "25:500:25", "yes"]
    assert by_name["stopLongRR"].split()[1:4] == ["float", "3.0", "2:4:0.2"] and "yes" not in by_name["stopLongRR"]
    assert "SMA, EMA, WMA" in by_name["maType"]


def test_params_table_fits_the_terminal():
    """In an 80-column terminal no line is wider (descriptions are cut with '…'); into a pipe lines stay whole."""
    narrow = cli("params", "s01_trailing_ma", COLUMNS="80").stdout.splitlines()
    assert max(len(line) for line in narrow) <= 80 and any(line.endswith("…") for line in narrow)
    whole = cli("params", "s01_trailing_ma").stdout
    assert "Short stop: highest-high lookback" in whole and "…" not in whole


def test_params_json_round_trips_describe():
    out = cli("params", "s04_stochrsi", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == get_strategy("s04_stochrsi").param_names()
    assert rows[0]["default"] == get_strategy("s04_stochrsi").params[0].default


def test_strategies_command_lists_every_usable_strategy():
    out = cli("strategies", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(list_strategies())
    assert rows["s01_trailing_ma"]["params"] == 25 and rows["s01_trailing_ma"]["optimized"] == 17
    text = cli("strategies").stdout
    assert "s04_stochrsi" in text and "merlin-kit params STRATEGY" in text


def test_unknown_strategy_is_named():
    out = cli("params", "nope")
    assert out.returncode == 2 and "unknown strategy 'nope'" in out.stderr


def test_output_into_a_closed_pipe_ends_quietly():
    """`merlin-kit backtest ... --json | head -c 10`: the reader leaves early; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "merlin_kit", "backtest", "--data", "sample", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b'{"metrics"'
    proc.stdout.close()  # ~80 kB follow: more than a pipe holds, so the writer meets the closed end
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("missing", ["ipywidgets", "plotly"])
def test_notebook_without_its_extra_names_the_extra(missing):
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "from merlin_kit.notebook import ConfigPanel")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: merlin_kit.notebook.ConfigPanel needs the notebook extra")
    assert f"({missing} is not installed)" in last and "pip install 'merlin-kit[notebook]'" in last


def test_optimize_table_fits_the_terminal_and_folds_repeated_parameter_sets(tmp_path):
    """Four possible parameter sets, 40 trials: the top-N lists each set once with its trial count, within 80 columns."""
    out = subprocess.run([sys.executable, "-m", "merlin_kit", "optimize", "--data", "sample", "--budget", "trials:40",
                          "--workers", "1", "--params", "maType=SMA,EMA", "closeCountLong=2:3", "--seed", "1",
                          "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Top "))
    assert lines[head].startswith("Top 4 of 4 distinct parameter sets (40 results;")
    table = lines[head + 1:next(i for i in range(head + 1, len(lines)) if lines[i].startswith("Study "))]
    assert table and max(len(line) for line in table) <= 80, table
    import pandas as pd

    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(results) == 40 and len(results.drop_duplicates(["maType", "closeCountLong"])) == 4
    counts = results.groupby(["maType", "closeCountLong"]).size()
    blocks = [line.split() for line in table if line.strip()]
    trials_col = blocks[0].index("trials")
    listed = [int(row[trials_col]) for row in blocks[1:5]]
    assert sorted(listed) == sorted(counts.tolist()) and sum(listed) == 40


def test_results_table_distinct_keeps_the_best_of_each_set(tmp_path):
    from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize, results_table

    run = optimize(OptimizationConfig(data="sample", worker_processes=1, optimize_params=["maType"],
                                      param_ranges={"maType": {"choices": ["SMA", "EMA", "HMA"]}}),
                   OptunaConfig(n_trials=12, sampler="random", seed=4, output_dir=tmp_path / "r"))
    full = results_table(run)
    folded = results_table(run, distinct=True)
    assert len(full) == 12 and sorted(folded["maType"]) == sorted(full["maType"].unique())
    assert folded["trials"].sum() == 12
    for _, row in folded.iterrows():  # the row kept is the best trial of its set
        same = full[full["maType"] == row["maType"]]
        assert row["trial"] == same.iloc[0]["trial"] and row["trials"] == len(same)


def test_backtest_report_names_its_parameters_and_warm_up():
    cold = cli("backtest", "--data", "sample", "--params", '{"maLength": 100, "stopLongX": 2.5}')
    assert cold.returncode == 0, cold.stderr
    text = " ".join(cold.stdout.split())  # the report wraps long lines
    assert "maLength=100*," in text and "stopLongX=2.5*," in text and "maType=EMA, " in text
    assert "(* = not the strategy's default)" in text
    assert "no warm-up: without --start trading begins at the first bar" in text
    warm = cli("backtest", "--data", "sample", "--start", "2024-03-01", "--warmup", "500")
    text = " ".join(warm.stdout.split())
    assert "Trading from 2024-03-01 00:00:00+00:00 (500 warm-up bars before it)" in text and "(all defaults)" in text
