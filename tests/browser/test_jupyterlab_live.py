"""03_interactive.ipynb in a real JupyterLab, driven by Chromium: Run, watch it live, Stop.

JupyterLab runs on 127.0.0.1 with a token and a temporary root folder holding a
copy of the notebook (its parameters cell pointed at small data and a time
budget).  The test runs all cells, presses Run in the panel, and checks that the
progress bar and the history chart gain points while no cell executes —
updates pushed by the monitor thread, not by executing cells — then presses Stop
and checks the final state.  Screenshots go to test-artifacts/; the one of the live
monitor becomes docs/img/live_monitor.png (the README's) when that file is missing or
MERLIN_KIT_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")

from merlin_kit.data import sample
from tests.browser.conftest import jupyterlab

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "03_interactive.ipynb"
DOCS_SHOT = REPO / "docs" / "img" / "live_monitor.png"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def prepare_notebook(root: Path, data: Path, out_dir: Path) -> Path:
    """A copy of 03_interactive.ipynb whose parameters cell uses small data, a user strategy, 2 workers and a
    long time budget."""
    nb = json.loads(NOTEBOOK.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = "".join(cell["source"]) + (
        f"\n# test overrides\ndata_path = {str(data)!r}\nbudget_mode = 'time'\ntime_limit = 300\nworkers = 2\n"
        # a user strategy (importable from the repository): ~0.25 s a trial keeps the browser's redraws light
        "strategy = 'tests._strategies:SlowS01'\n"
        f"seed = 1\noutput_dir = {str(out_dir)!r}\n"
    )
    path = root / NOTEBOOK.name
    path.write_text(json.dumps(nb, indent=1))
    return path


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 (token, temporary root, settings, workspaces and runtime dirs)."""
    root = tmp_path / "root"
    root.mkdir()
    data = tmp_path / "small.csv"
    sample(4000).to_csv(data, index_label="time")
    prepare_notebook(root, data, tmp_path / "run")
    with jupyterlab(tmp_path, root) as server:
        yield {**server, "run_dir": tmp_path / "run"}


# -- page helpers -------------------------------------------------------------------------------
def kernel_status(page) -> str:
    """'idle' / 'busy' / ... from the notebook toolbar's execution indicator."""
    return page.evaluate("""() => {
        const el = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
        return el ? (el.getAttribute('data-status') || '') : '';
    }""")


def running_cells(page) -> int:
    """Cells whose prompt shows [*] (executing or queued)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt'))
        .filter(p => p.textContent.includes('[*]')).length""")


def history_points(page) -> int:
    """Markers of the first trace of the monitor's first chart (the optimisation history)."""
    return page.evaluate("""() => {
        const plot = document.querySelector('.merlin-live-monitor .js-plotly-plot');
        if (!plot) return -1;
        const trace = plot.querySelector('.scatterlayer .trace');
        return trace ? trace.querySelectorAll('path.point').length : 0;
    }""")


def progress_fraction(page) -> float:
    return page.evaluate("""() => {
        const bar = document.querySelector('.merlin-live-monitor .progress-bar');
        if (!bar) return -1;
        const track = bar.parentElement.getBoundingClientRect().width;
        return track > 0 ? bar.getBoundingClientRect().width / track : 0;
    }""")


def button(panel, label: str):
    """A widget button of the panel by its exact label (its icon and tooltip aside)."""
    return panel.locator("button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))


def scroll_to(element) -> None:
    """Scroll an element into view without Playwright's wait for it to be "stable" (a live monitor never is)."""
    element.evaluate("el => el.scrollIntoView({block: 'start'})")


def shoot(page, element, path: Path) -> None:
    """Screenshot of an element that keeps changing (a live monitor is never "stable" for Playwright)."""
    box = element.bounding_box()
    view = page.viewport_size
    clip = {"x": max(0, box["x"]), "y": max(0, box["y"]), "width": min(box["width"], view["width"] - max(0, box["x"])),
            "height": min(box["height"], view["height"] - max(0, box["y"]))}
    page.screenshot(path=str(path), clip=clip)


_T0 = [time.monotonic()]


def wait_for(page, predicate, timeout: float, what: str, shot: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            print(f"[{time.monotonic() - _T0[0]:6.1f} s] {what}: ok")
            return value
        if time.monotonic() > deadline:
            if shot is not None:
                page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        page.wait_for_timeout(250)


@contextmanager
def evidence_on_failure(page, shot: Path, lab: dict):
    """On a failure: a full-page screenshot and the tail of JupyterLab's log; the page is closed either way."""
    try:
        yield
    except Exception:
        try:
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            pass
        print(lab["log"].read_text()[-4000:])
        raise
    finally:
        page.close()


def run_all_cells(page, fail_shot: Path):
    """In the opened notebook: wait for its kernel, Run ▸ Run All Cells, wait for the panel and an idle kernel."""
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=90_000)
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    try:  # older settings or a slow start can still ask which kernel to use
        select.wait_for(timeout=3_000)
        select.click()
    except Exception:
        pass
    wait_for(page, lambda: kernel_status(page) == "idle", 90, "the kernel to start", fail_shot)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    panel = page.locator(".merlin-config-panel")
    panel.wait_for(timeout=120_000)
    wait_for(page, lambda: kernel_status(page) == "idle", 120, "all cells to run", fail_shot)
    return panel


def test_live_monitor_in_jupyterlab(chromium, artifacts, lab):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    _T0[0] = time.monotonic()
    fail_shot = artifacts / "jupyterlab_failure.png"
    with evidence_on_failure(page, fail_shot, lab):
        page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
        panel = run_all_cells(page, fail_shot)
        page.set_viewport_size({"width": 1280, "height": 2600})  # the whole panel, for the artefact
        scroll_to(panel)
        page.wait_for_timeout(300)
        shoot(page, panel, artifacts / "jupyterlab_panel.png")
        page.set_viewport_size({"width": 1400, "height": 1000})
        run_button = button(panel, "Run")
        assert run_button.is_enabled(), "a valid configuration enables Run"

        # an invalid range: the message appears beside its row and Run is disabled, until it is fixed
        row = panel.locator(".widget-hbox", has=page.get_by_text("maLength", exact=True)).first
        low = row.locator("input[type=number]").first
        low.fill("9999")
        low.press("Enter")
        row.get_by_text("min (9999) > max (500)").wait_for(timeout=30_000)
        wait_for(page, lambda: run_button.is_disabled(), 30, "Run to be disabled by the bad range", fail_shot)
        row.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "jupyterlab_invalid_range.png"))
        low.fill("25")
        low.press("Enter")
        wait_for(page, lambda: run_button.is_enabled(), 30, "Run to be enabled again", fail_shot)
        assert row.get_by_text("min (9999)").count() == 0

        run_button.click()
        monitor = page.locator(".merlin-live-monitor")
        monitor.wait_for(timeout=60_000)
        scroll_to(monitor)
        # the kernel finished handling the click and no cell runs: from now on the monitor thread sends the
        # updates (the kernel still handles the charts' own comm messages, so its status may flicker)
        wait_for(page, lambda: kernel_status(page) == "idle", 60, "the kernel to be idle after Run", fail_shot)
        assert running_cells(page) == 0
        wait_for(page, lambda: history_points(page) >= 3, 120, "the history chart to show trials", fail_shot)
        frac1, points1 = progress_fraction(page), history_points(page)
        page.screenshot(path=str(artifacts / "jupyterlab_running_1.png"))
        wait_for(page, lambda: history_points(page) >= points1 + 5, 60, "the history chart to gain points", fail_shot)
        wait_for(page, lambda: progress_fraction(page) > frac1, 30, "the progress bar to advance", fail_shot)
        assert running_cells(page) == 0, "the updates must arrive while no cell executes"
        text = monitor.inner_text()
        assert "running…" in text and "best objective" in text and "trials/s" in text
        assert text.count("running,") == 2, "two workers shown as running"
        assert re.search(r"\d+ s / 5 min 00 s \(\d+ trials\)", text), text
        page.wait_for_timeout(1500)  # a couple more refreshes for a fuller screenshot
        page.set_viewport_size({"width": 1280, "height": 2000})  # the whole monitor fits the notebook view
        scroll_to(monitor)
        page.wait_for_timeout(500)
        shoot(page, monitor, artifacts / "jupyterlab_live_monitor.png")
        if not DOCS_SHOT.exists() or os.environ.get("MERLIN_KIT_UPDATE_SCREENSHOTS") == "1":
            DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(artifacts / "jupyterlab_live_monitor.png", DOCS_SHOT)

        button(panel, "Stop").click()
        wait_for(page, lambda: "Finished" in monitor.inner_text(), 120, "the final state after Stop", fail_shot)
        final = monitor.locator(".js-plotly-plot")
        wait_for(page, lambda: final.count() >= 4, 60, "the equity and importance charts", fail_shot)
        text = monitor.inner_text()
        assert "stopped by user" in text and "Best score" in text
        assert "Results" in text and "Sort by" in text
        assert monitor.locator(".progress-bar-warning").count() == 1, "a stopped run shows a warning-coloured bar"
        equity = final.nth(2)
        assert "equity" in equity.inner_text() and "drawdown" in equity.inner_text()
        assert button(panel, "Run").is_enabled()
        assert not button(panel, "Stop").is_enabled()
        assert (lab["run_dir"] / "results.csv").exists() and (lab["run_dir"] / "study.journal").exists()
        points_final = history_points(page)
        assert points_final >= points1 + 5
        page.set_viewport_size({"width": 1280, "height": 3200})
        scroll_to(monitor)
        page.wait_for_timeout(500)
        shoot(page, monitor, artifacts / "jupyterlab_final.png")

        # the dashboard link in the panel
        button(panel, "optuna-dashboard").click()
        link = panel.locator("a", has_text="optuna-dashboard: http://127.0.0.1:")
        link.wait_for(timeout=60_000)
        href = link.get_attribute("href")
        response = page.request.get(href.replace("/dashboard/", "/api/studies"))
        assert response.ok and response.json()["study_summaries"][0]["study_name"].startswith("test_slow_s01")
        page.screenshot(path=str(artifacts / "jupyterlab_done.png"), full_page=True)

        # a cell run from JupyterLab is also recognised as having a live frontend (what monitor(run) uses
        # in 02_optimize.ipynb); papermill and nbclient are not (tests/test_notebook_papermill.py)
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.locator(".jp-NotebookPanel .jp-Cell").last.click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        page.keyboard.press("Enter")
        page.keyboard.type("from merlin_kit.notebook import has_frontend; print('frontend:', has_frontend())")
        page.keyboard.press("Shift+Enter")
        page.get_by_text("frontend: True").wait_for(timeout=30_000)
