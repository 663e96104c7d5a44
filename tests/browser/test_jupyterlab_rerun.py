"""03_interactive.ipynb run twice in one kernel, in a real JupyterLab driven by Chromium.

A new user runs all cells, presses Run, and runs all cells again as soon as the
monitor says the run has finished — while its thread is still making the final
charts (best-trial equity, importances).  The re-run must replace the panel
cleanly: the old panel's and monitor's models, the late final charts included,
are closed before the new panel shows, and get no message afterwards (orphan
models made the frontend log ``[anywidget] Failed to initialize model``), the
browser logs no widget error, and Run in the new panel shows a live monitor
that reaches its finished state with every chart drawn.

The kernel's messages are read from the page's websocket frames (JupyterLab's
binary protocol carries the JSON header and content as text).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")

from tests.browser.conftest import jupyterlab
from tests.browser.test_jupyterlab_live import (
    NOTEBOOK, button, evidence_on_failure, history_points, kernel_status, progress_fraction, run_all_cells,
    scroll_to, wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: console lines that are widget, comm or anywidget errors
WIDGET_ERROR = re.compile(r"anywidget|widget|comm|model", re.IGNORECASE)
_MSG_TYPE = re.compile(r'"msg_type":\s*"(comm_open|comm_msg|comm_close)"')
_COMM_ID = re.compile(r'"comm_id":\s*"([0-9a-f]+)"')
_METHOD = re.compile(r'"method":\s*"(\w+)"')
_PLOTLY = re.compile(r'"_model_name":\s*"AnyModel"')


def prepare_notebook(root: Path) -> None:
    """03_interactive.ipynb with a 20 s budget on the bundled sample, 2 workers, the default strategy."""
    nb = json.loads(NOTEBOOK.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = "".join(cell["source"]) + (
        "\n# test overrides\nbudget_mode = 'time'\ntime_limit = 20\nworkers = 2\nseed = 1\n"
        f"output_dir = {str(root.parent / 'run')!r}\n")
    (root / NOTEBOOK.name).write_text(json.dumps(nb, indent=1))


@pytest.fixture
def lab(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    prepare_notebook(root)
    with jupyterlab(tmp_path, root) as server:
        yield server


class KernelComms:
    """Comm messages the kernel sent to the page: (seconds, msg_type, comm id, method, is a plotly model)."""

    def __init__(self, page) -> None:
        self.messages: list[tuple[float, str, str, str, bool]] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        text = payload.decode("latin-1") if isinstance(payload, bytes) else payload
        kind = _MSG_TYPE.search(text)
        comm = _COMM_ID.search(text)
        if kind is None or comm is None:
            return
        method = _METHOD.search(text[:20_000])
        plotly = kind.group(1) == "comm_open" and _PLOTLY.search(text) is not None
        self.messages.append((time.monotonic(), kind.group(1), comm.group(1), method.group(1) if method else "",
                              plotly))

    def opened(self, until: float) -> set[str]:
        return {c for t, k, c, _, _ in self.messages if k == "comm_open" and t < until}

    def since(self, start: float, end: float = float("inf")) -> list[tuple[float, str, str, str, bool]]:
        return [m for m in self.messages if start <= m[0] < end]


@pytest.mark.xfail(strict=False, reason=(
    "known open bug (issue 15): in CI the front end can still get an update for a model the re-run closed "
    "('Could not process update msg ... widget model not found'); passes on the fix's own machine"))
def test_rerun_all_cells_after_a_finished_monitor(chromium, artifacts, lab):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    comms = KernelComms(page)
    fail_shot = artifacts / "jupyterlab_rerun_failure.png"
    with evidence_on_failure(page, fail_shot, lab):
        page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
        panel = run_all_cells(page, fail_shot)
        button(panel, "Run").click()
        monitor = page.locator(".merlin-live-monitor")
        monitor.wait_for(timeout=60_000)
        # the user sees the run has finished and runs all cells again at once (the final charts are still coming)
        wait_for(page, lambda: re.search(r"\bfinished\b|Finished", monitor.inner_text()), 120,
                 "the first run to finish", fail_shot)
        rerun_at = time.monotonic()
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.wait_for_timeout(1000)
        wait_for(page, lambda: kernel_status(page) == "idle", 120, "all cells to run again", fail_shot)
        page.wait_for_timeout(4000)  # time for a late model of the old monitor, had it any
        rerun_done = time.monotonic()
        assert page.locator(".merlin-config-panel").count() == 1 and monitor.count() == 0

        panel = page.locator(".merlin-config-panel")
        run_at = time.monotonic()
        button(panel, "Run").click()
        monitor.wait_for(timeout=60_000)
        scroll_to(monitor)
        wait_for(page, lambda: history_points(page) >= 3, 120, "the new monitor's history chart", fail_shot)
        wait_for(page, lambda: "Finished" in monitor.inner_text(), 120, "the second run to finish", fail_shot)
        wait_for(page, lambda: monitor.locator(".js-plotly-plot").count() >= 4, 60, "the final charts", fail_shot)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(artifacts / "jupyterlab_rerun.png"), full_page=True)

        text = monitor.inner_text()
        assert "Best score" in text and "Results" in text, text
        assert progress_fraction(page) > 0.99 and monitor.locator(".progress-bar-success").count() == 1
        # the re-run's panel has no chart: every plotly model opened before the second Run is the old monitor's
        # (its final charts may come while the cells run again); all of them are closed before the new panel shows
        old_plots = {m[2] for m in comms.since(0, run_at) if m[4]}
        closed = {m[2] for m in comms.since(rerun_at, rerun_done) if m[1] == "comm_close"}
        assert len(old_plots) >= 2, "the first monitor's charts (and its final two, unless closed before)"
        assert old_plots <= closed, f"{len(old_plots - closed)} of the old monitor's charts were left open"
        # and they, and every other model of the old panel, get nothing after the re-run but their close
        old = comms.opened(rerun_at) | old_plots
        stray = [m for m in comms.since(rerun_done) if m[2] in old and m[1] != "comm_close"]
        assert not stray, f"{len(stray)} message(s) to the old panel's or monitor's models: {stray[:5]}"
        bad = [e for e in errors if WIDGET_ERROR.search(e)]
        assert not bad, "widget errors in the browser console:\n" + "\n".join(bad)
