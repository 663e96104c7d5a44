"""Score and sampler options of the command line, and the score-saturation warning of a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from merlin_kit._cli_args import optimization_config, sampler_config
from merlin_kit.cli import build_parser
from merlin_kit.errors import ConfigError
from merlin_kit.scoring import ScoreConfig, minmax_score, saturation_warnings
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def parsed(*argv: str):
    args = build_parser().parse_args(["optimize", *argv])
    return optimization_config(args), sampler_config(args)


def test_score_options_become_the_score_config():
    opt, _ = parsed("--score-weights", "romad=0.5,sharpe=0.5", "--score-bounds", "romad=0:30",
                    "--score-bounds", "sharpe=-1:5,pf=0:8", "--score-metrics", "romad,sharpe")
    score = opt.score_config()
    assert score.active_weights() == [("romad", 0.5), ("sharpe", 0.5)]
    assert score.bounds["romad"] == (0.0, 30.0) and score.bounds["sharpe"] == (-1.0, 5.0)
    assert score.bounds["pf"] == (0.0, 8.0) and score.bounds["sqn"] == (-2.0, 7.0)  # the others keep defaults
    assert score.enabled == ("romad", "sharpe")
    assert parsed()[0].score is None  # no option: the reference score


@pytest.mark.parametrize("argv, words", [
    (["--score-weights", "romadd=1"], ["'romadd'", "romad, sharpe, pf, ulcer, sqn, consistency"]),
    (["--score-weights", "romad"], ["METRIC=VALUE"]),
    (["--score-weights", "romad=x"], ["not a number"]),
    (["--score-bounds", "romad=30"], ["MIN:MAX", "romad=0:30"]),
    (["--score-bounds", "romad=30:0"], ["greater than min"]),
    (["--score-metrics", "romad,foo"], ["'foo'", "allowed: romad"]),
    (["--score-weights", "romad=1", "--score-metrics", "sharpe"], ["weight > 0"]),
])
def test_bad_score_options_name_the_key_and_the_allowed_values(argv, words):
    with pytest.raises(ConfigError) as exc:
        parsed(*argv)
    for word in words:
        assert word in str(exc.value)


def test_sampler_options_are_typed():
    _, cfg = parsed("--sampler", "nsga2", "--sampler-option", "population_size=8", "--sampler-option",
                    "crossover=sbx", "--sampler-option", "mutation_prob=0.25", "--startup-trials", "3")
    assert cfg["sampler_options"] == {"population_size": 8, "crossover": "sbx", "mutation_prob": 0.25}
    assert cfg["n_startup_trials"] == 3
    _, cfg = parsed("--sampler", "tpe", "--sampler-option", "group=true")
    assert cfg["sampler_options"] == {"group": True}


def test_saturation_names_the_metric_and_the_bound_to_widen():
    score = ScoreConfig(weights={"romad": 0.5, "sharpe": 0.5}, bounds={"romad": (0, 10)})
    top = [{"romad": 12.0 + i, "sharpe_ratio": 3.5} for i in range(3)]
    rest = [{"romad": 2.0, "sharpe_ratio": 1.0}] * 7
    assert all(minmax_score(m, score) == 100.0 for m in top)
    lines = saturation_warnings(top + rest, score)
    assert "3 of 10 complete trials (30%)" in lines[0]
    assert any(line.startswith("romad reached its upper bound 10 in 30% of trials")
               and "widen with --score-bounds romad=0:20" in line for line in lines)
    assert any("sharpe reached its upper bound 3" in line and "sharpe=-1:5" in line for line in lines)
    assert saturation_warnings(top[:1] + rest * 2, score) == []  # 1 of 15: under 10 %
    assert saturation_warnings(top + rest, ScoreConfig(weights={"romad": 0.5, "sharpe": 0.5},
                                                       bounds={"romad": (0, 30), "sharpe": (-1, 5)})) == []


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


def optimize_cli(tmp_path: Path, csv: Path, *score: str) -> tuple[subprocess.CompletedProcess, dict]:
    tmp_path.mkdir()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "merlin_kit", "optimize", "--data", str(csv), "--workers", "2", "--warmup", "200",
         "--budget", "trials:12", "--sampler", "random", "--seed", "3", "--params", "closeCountLong", "stopLongX",
         "--no-save-study", "--out", str(out), *score],
        capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=240)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc, json.loads((out / "summary.json").read_text())


def test_a_saturating_run_warns_and_a_wide_one_does_not(tmp_path, small_csv):
    """Bounds every result exceeds: every trial scores 100 and the run says which bound to widen."""
    proc, summary = optimize_cli(tmp_path / "narrow", small_csv, "--score-weights", "romad=1",
                                 "--score-bounds", "romad=-1000:-999")
    assert any("romad reached its upper bound -999" in w and "--score-bounds romad=-1000:" in w
               for w in summary["warnings"]), summary["warnings"]
    assert "romad reached its upper bound -999" in proc.stderr
    proc, summary = optimize_cli(tmp_path / "wide", small_csv, "--score-weights", "romad=1",
                                 "--score-bounds", "romad=-1000:1000")
    assert summary["warnings"] == [] and "saturates" not in proc.stderr
