"""Every code block of the README runs as pasted (issue: "the README's API example fails as pasted").

The blocks run in order in one folder that holds the LINK reference data as
``prices.csv`` (the name the README uses), exactly as a reader would paste them:
``python`` blocks as a script file (or, when they start with ``# in a notebook cell``,
in a Jupyter kernel), ``bash`` blocks with bash. ``text`` blocks are synopses and are
not run. The first block (set-up plus the main job) is run by
tests/test_cli_options.py::test_readme_first_command_through_the_console_script and by
CI itself; here it is checked to be those two commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import needs_shared

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)
NOTEBOOK_CELL = "# in a notebook cell"

pytestmark = pytest.mark.slow


@dataclass
class Block:
    lang: str
    code: str
    line: int

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.lang})"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def test_readme_blocks_are_runnable_or_marked_as_synopsis():
    blocks = readme_blocks()
    assert blocks and all(b.lang in ("python", "bash", "text") for b in blocks), \
        [str(b) for b in blocks if b.lang not in ("python", "bash", "text")]
    first = blocks[0]
    commands = [line for line in first.code.splitlines() if line and not line.startswith("#")]
    assert commands == ['pip install -e . && merlin-kit optimize --data sample --budget trials:300',
                        'pip install -e ".[test]" && python -m pytest'], first.code


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "MERLIN_KIT_RUNS": ""}


def _run_in_kernel(block: Block, folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(block.code)]
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    return "".join(o.get("text", "") for o in nb.cells[0].outputs)


@needs_shared
def test_readme_code_blocks_run_as_pasted(tmp_path, link_csv, monkeypatch):
    if shutil.which("merlin-kit") is None:
        pytest.skip("the merlin-kit console script is not installed (pip install -e '.[test]')")
    shutil.copyfile(link_csv, tmp_path / "prices.csv")
    ran = []
    for i, block in enumerate(readme_blocks()[1:], start=1):
        if block.lang == "text":
            continue
        if block.lang == "python" and block.code.startswith(NOTEBOOK_CELL):
            output = _run_in_kernel(block, tmp_path, monkeypatch)
            ran.append((block, output))
            continue
        if block.lang == "python":
            script = tmp_path / f"readme_block_{i}.py"
            script.write_text(block.code, encoding="utf-8")
            cmd = [sys.executable, script.name]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", block.code]
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=_env())
        assert out.returncode == 0, f"{block} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        assert "Traceback" not in out.stderr, f"{block}:\n{out.stderr[-5000:]}"
        ran.append((block, out.stdout))
    assert len(ran) >= 6, [str(b) for b, _ in ran]
    # what the blocks promise, in their own words
    outputs = {b.line: o for b, o in ran}
    assert any("wfe" in o and "oos_win_rate" in o for o in outputs.values())  # the walk-forward example
    assert (tmp_path / "runs" / "api-example" / "results.csv").exists()
    assert (tmp_path / "wf-s01" / "walkforward.journal").exists() and (tmp_path / "wf-s01" / "summary.json").exists()
    assert (tmp_path / "report.html").exists() and (tmp_path / "results.csv").exists()  # the notebook cell
