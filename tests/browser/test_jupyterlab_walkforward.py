"""The panel's walk-forward mode in a real JupyterLab, driven by Chromium: Run, watch the windows, see the result.

A notebook with one cell creates the panel in walk-forward mode on the bundled
sample (3 windows of 30 IS + 10 OOS days, 12 trials per window of a strategy that
takes ~0.25 s a trial, so that each window lasts a few seconds; 1 worker).  The
test presses Run and checks, in the page: the window layout chart, "window k of
3" while no cell executes (updates pushed by the view's thread), then the
stitched OOS equity chart (its trace drawn, the OOS windows shaded), the IS vs
OOS scatter, the windows table and the stitched metrics.
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
    button, evidence_on_failure, kernel_status, run_all_cells, running_cells, scroll_to, shoot, wait_for,
)

NOTEBOOK = "walkforward_panel.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CELL = """\
from merlin_kit.notebook import ConfigPanel
from merlin_kit.optimize import OptimizationConfig, OptunaConfig

opt = OptimizationConfig(data="sample", strategy="tests._strategies:SlowS01",
                         optimize_params=["maLength", "closeCountLong"], warmup_bars=500, worker_processes=1,
                         end="2024-03-01")
cfg = OptunaConfig(n_trials=12, sampler="random", seed=1, save_study=True, output_dir={out!r})
panel = ConfigPanel(opt, cfg, walk_forward={{"is_days": 30, "oos_days": 10}})
panel
"""


def write_notebook(root: Path, out_dir: Path) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "wf-panel", "metadata": {}, "outputs": [],
                   "source": CELL.format(out=str(out_dir))}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (root / NOTEBOOK).write_text(json.dumps(nb, indent=1))


@pytest.fixture
def lab(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, tmp_path / "wf")
    with jupyterlab(tmp_path, root) as server:
        yield {**server, "out": tmp_path / "wf"}


def plot_traces(view, title: str) -> list[dict]:
    """Names and point counts of the traces of the view's plotly chart titled ``title`` ([] when not drawn)."""
    return view.evaluate("""(el, title) => {
        for (const gd of el.querySelectorAll('.js-plotly-plot')) {
            const t = gd.layout && gd.layout.title;
            const text = typeof t === 'string' ? t : (t && t.text) || '';
            if (!text.startsWith(title)) continue;
            return (gd.data || []).map(tr => ({name: tr.name || '', n: (tr.x || []).length,
                                              shapes: ((gd.layout || {}).shapes || []).length,
                                              drawn: gd.querySelectorAll('.scatterlayer .trace path.js-line').length}));
        }
        return [];
    }""", title)


def test_walkforward_mode_in_jupyterlab(chromium, artifacts, lab):
    page = chromium.new_page(viewport={"width": 1400, "height": 1200})
    fail_shot = artifacts / "jupyterlab_walkforward_failure.png"
    t0 = time.monotonic()
    with evidence_on_failure(page, fail_shot, lab):
        page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK}?token={lab['token']}")
        panel = run_all_cells(page, fail_shot)
        # the mode selector shows Walk-forward, with its inputs
        mode = panel.locator(".widget-toggle-buttons button", has_text="Walk-forward")
        assert "mod-active" in (mode.get_attribute("class") or ""), "Walk-forward is the selected mode"
        assert panel.get_by_text("IS days", exact=True).is_visible() and panel.get_by_text("OOS days", exact=True).is_visible()
        run_button = button(panel, "Run")
        wait_for(page, lambda: run_button.is_enabled(), 30, "Run to be enabled", fail_shot)

        run_button.click()
        view = page.locator(".merlin-walkforward-view")
        view.wait_for(timeout=60_000)
        scroll_to(view)
        wait_for(page, lambda: plot_traces(view, "Walk-forward windows"), 60, "the window layout chart", fail_shot)
        assert {t["name"] for t in plot_traces(view, "Walk-forward windows")} == {"IS", "OOS"}
        wait_for(page, lambda: kernel_status(page) == "idle", 60, "the kernel to be idle after Run", fail_shot)
        assert running_cells(page) == 0
        # live progress across windows, pushed while no cell executes
        wait_for(page, lambda: re.search(r"window \d of 3", view.inner_text()), 120, "'window k of 3'", fail_shot)
        wait_for(page, lambda: re.search(r"window \d: \d+ / 12 trials", view.inner_text()), 60,
                 "the current window's trial progress", fail_shot)
        wait_for(page, lambda: re.search(r"window [23] of 3", view.inner_text()), 120, "a later window", fail_shot)
        assert running_cells(page) == 0, "the updates must arrive while no cell executes"
        page.screenshot(path=str(artifacts / "jupyterlab_walkforward_running.png"))

        # the end: the stitched OOS equity chart, its trace drawn and the windows shaded
        wait_for(page, lambda: plot_traces(view, "Stitched out-of-sample equity"), 240, "the stitched chart", fail_shot)
        traces = plot_traces(view, "Stitched out-of-sample equity")
        assert traces[0]["name"] == "stitched OOS equity" and traces[0]["n"] > 10, traces
        assert traces[0]["shapes"] >= 3, "each of the 3 OOS windows is shaded"
        wait_for(page, lambda: plot_traces(view, "Stitched out-of-sample equity")[0]["drawn"] >= 1, 30,
                 "the stitched curve to be drawn", fail_shot)
        assert plot_traces(view, "In-sample vs out-of-sample")[0]["n"] == 3
        text = view.inner_text()
        assert "finished: 3 windows, 36 trials" in text, text
        assert re.search(r"Stitched OOS: net profit -?\d+\.\d\d %, max drawdown \d+\.\d\d %, trades \d+, "
                         r"WFE -?\d+\.\d %, OOS win rate \d+\.\d %", text), text
        assert "oos_net_profit_pct" in text and "maLength" in text, "the windows table"
        assert "finished: 3 windows" in panel.locator(".widget-html", has_text="finished:").first.inner_text()
        assert button(panel, "Run").is_enabled() and not button(panel, "Stop").is_enabled()
        assert (lab["out"] / "windows.csv").exists() and (lab["out"] / "summary.json").exists()
        page.set_viewport_size({"width": 1280, "height": 2600})
        scroll_to(view)
        page.wait_for_timeout(500)
        shoot(page, view, artifacts / "jupyterlab_walkforward_final.png")
        print(f"[{time.monotonic() - t0:6.1f} s] done")
