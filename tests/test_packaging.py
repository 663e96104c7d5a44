"""environment.yml must install what pyproject.toml declares (names and lower bounds)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")

REPO = Path(__file__).resolve().parents[1]


def _normalise(req: str) -> tuple[str, str]:
    req = req.split(";")[0].replace(" ", "")
    m = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(3)


def _conda_deps() -> dict[str, str]:
    deps: dict[str, str] = {}
    in_deps = False
    for line in (REPO / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        if in_deps and re.match(r"^\s{2}- ", line) and not line.strip().startswith("- pip:"):
            name, spec = _normalise(line.strip()[2:])
            deps[name] = spec
    return deps


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    conda = _conda_deps()
    wanted = list(project["dependencies"])
    wanted += [r for r in project["optional-dependencies"]["test"] if not r.startswith("merlin-kit")]
    for extra in ("notebook", "parquet", "postgres", "redis", "samplers", "dask"):
        wanted += project["optional-dependencies"][extra]
    conda_names = {"psycopg2-binary": "psycopg2", "redis": "redis-py"}
    for req in wanted:
        name, spec = _normalise(req)
        name = conda_names.get(name, name)
        assert name in conda, f"{name} is in pyproject.toml but not in environment.yml"
        assert conda[name] == spec, f"{name}: pyproject says {spec!r}, environment.yml says {conda[name]!r}"
    assert "python" in conda and conda["python"] == ">=" + project["requires-python"].lstrip(">=")


def test_console_script_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["merlin-kit"] == "merlin_kit.cli:console_main"


def test_console_main_runs_exit_handlers_and_flushes_before_its_quick_exit(tmp_path):
    """console_main ends with os._exit (no interpreter clean-up): exit handlers must still run and piped output
    must arrive complete."""
    import subprocess
    import sys

    mark = tmp_path / "atexit-ran"
    code = ("import atexit, sys; path = sys.argv[1]; atexit.register(lambda: open(path, 'w').write('ran')); "
            "sys.argv = ['merlin-kit', 'params', 's01_trailing_ma']; "
            "from merlin_kit.cli import console_main; console_main()")
    done = subprocess.run([sys.executable, "-c", code, str(mark)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "ran"
    assert done.stdout.startswith("s01_trailing_ma: 25 parameters")
    assert " ".join(done.stdout.split()).endswith("the others keep their default.")  # the last line too: flushed before os._exit


def test_notebook_extra_gives_what_the_notebook_instructions_use():
    """README: `pip install -e ".[notebook]"`, then `jupyter lab` and `papermill ...`: both must come with it."""
    notebook = {_normalise(r)[0] for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                ["optional-dependencies"]["notebook"]}
    assert {"jupyterlab", "papermill", "ipywidgets", "plotly", "optuna-dashboard", "ipykernel"} <= notebook
