"""Run folders go to one predictable place: $MERLIN_KIT_RUNS, the git repository's merlin_runs/, or ./merlin_runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from merlin_kit.optimize import default_run_dir, runs_root

REPO = Path(__file__).resolve().parents[1]


def test_outside_a_repository_runs_go_below_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MERLIN_KIT_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runs_root() == Path("merlin_runs") and default_run_dir("a b") == Path("merlin_runs") / "a-b"


def test_inside_a_repository_runs_go_to_its_top(tmp_path, monkeypatch):
    """A notebook in notebooks/ and a shell at the top of the repository write to the same folder."""
    monkeypatch.delenv("MERLIN_KIT_RUNS", raising=False)
    (tmp_path / "proj" / ".git").mkdir(parents=True)
    notebooks = tmp_path / "proj" / "notebooks" / "deep"
    notebooks.mkdir(parents=True)
    monkeypatch.chdir(notebooks)
    assert runs_root() == tmp_path / "proj" / "merlin_runs"
    monkeypatch.chdir(tmp_path / "proj")
    assert default_run_dir("s") == tmp_path / "proj" / "merlin_runs" / "s"


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MERLIN_KIT_RUNS", str(tmp_path / "elsewhere"))
    assert default_run_dir("s") == tmp_path / "elsewhere" / "s"


def test_cli_run_folder_follows_the_environment(tmp_path):
    """The CLI's default --out uses the same rule (the README's first command, run anywhere)."""
    out = subprocess.run([sys.executable, "-m", "merlin_kit", "optimize", "--data", "sample", "--budget", "trials:3",
                          "--workers", "1", "--params", "maLength", "--study", "env-runs", "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "MERLIN_KIT_RUNS": str(tmp_path / "runs-here")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs-here" / "env-runs" / "results.csv").exists()
    assert not (tmp_path / "merlin_runs").exists()


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_run_folders_are_git_ignored():
    for path in ("merlin_runs/x/results.csv", "notebooks/merlin_runs/x/study.journal", "runs/sweep/report.html"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_optuna_log_lines_in_a_notebook_have_no_colour_codes(tmp_path, monkeypatch):
    """Jupyter kernels set FORCE_COLOR=1; the run's log lines (and its workers') must still be plain text."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\n"
        "assert os.environ.get('FORCE_COLOR')  # what makes colorlog colour a non-terminal\n"
        "from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize\n"
        "run = optimize(OptimizationConfig(data='sample', worker_processes=2, optimize_params=['maLength']),\n"
        f"               OptunaConfig(n_trials=4, sampler='random', save_study=True, output_dir={str(tmp_path / 'r')!r}))\n"
        "import optuna; optuna.logging.get_logger('optuna').info('after the run')\n")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "A new study created" in text and "after the run" in text
    assert "\x1b[" not in text, repr(text[:500])


def test_study_names_that_differ_only_in_case_are_refused(tmp_path, monkeypatch):
    """``S01`` and ``s01`` are one folder on Windows and macOS: the second would overwrite the first's results."""
    from merlin_kit.errors import ConfigError
    from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize

    monkeypatch.delenv("MERLIN_KIT_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    first = optimize(OptimizationConfig(data="sample", optimize_params=["maLength"]),
                     OptunaConfig(n_trials=2, sampler="random", study_name="S01", save_study=True))
    assert first.run_dir == Path("merlin_runs") / "S01"
    assert default_run_dir("S01") == Path("merlin_runs") / "S01"  # the same name: a resume, allowed
    with pytest.raises(ConfigError, match=r"differs only in case from the existing .*S01") as info:
        optimize(OptimizationConfig(data="sample", optimize_params=["maLength"]),
                 OptunaConfig(n_trials=2, sampler="random", study_name="s01", save_study=True))
    assert info.value.field == "study_name"
    assert sorted(p.name for p in (tmp_path / "merlin_runs").iterdir()) == ["S01"]
