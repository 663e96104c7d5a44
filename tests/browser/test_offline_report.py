"""report.html is self-contained: with every network request blocked, Chromium draws its charts."""

from __future__ import annotations

import pytest

pytest.importorskip("plotly")

from merlin_kit.data import sample
from merlin_kit.notebook import write_report
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize


def test_report_draws_its_figures_offline(chromium, artifacts, tmp_path):
    data = tmp_path / "small.csv"
    sample(3000).to_csv(data, index_label="time")
    run = optimize(OptimizationConfig(data=str(data), worker_processes=1, warmup_bars=200,
                                      optimize_params=["maLength", "closeCountLong", "stopLongX"]),
                   OptunaConfig(n_trials=8, sampler="random", seed=2, output_dir=tmp_path / "run"))
    report = write_report(run, tmp_path / "report.html")
    context = chromium.new_context(offline=True)
    requests: list[str] = []
    try:
        page = context.new_page()
        # file:// is the report itself; anything else (a CDN, a font) would be a dependency on the network
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file://") else None)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort())
        page.goto(report.as_uri())
        page.wait_for_function("() => window.Plotly !== undefined", timeout=30_000)
        sections = page.locator("section[id^=fig-]")
        n = sections.count()
        assert n >= 3, f"only {n} figure sections in the report"
        # every figure is drawn: plotly renders an SVG per plot ...
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.js-plotly-plot')).every(p => p.querySelector('.main-svg'))",
            timeout=30_000)
        drawn = page.locator(".js-plotly-plot .main-svg").count()
        assert drawn >= n
        # ... with its data: each plot holds at least one drawn trace, and the charts have axis ticks
        untraced = page.evaluate(
            "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".filter(p => !p.querySelector('.trace, .parcoords .axis')).map(p => p.closest('section').id)")
        assert untraced == [], f"figures without a drawn trace: {untraced}"
        assert page.locator(".js-plotly-plot .xtick").count() > 0
        page.screenshot(path=str(artifacts / "report_offline.png"), full_page=False)
        assert requests == [], f"the report asked the network for {requests}"
    finally:
        context.close()


def test_cdn_report_stays_an_explicit_choice(tmp_path):
    """``include_plotlyjs="cdn"`` still writes the small, online-only variant when asked for."""
    run = optimize(OptimizationConfig(data=sample(2000), worker_processes=1, warmup_bars=200,
                                      optimize_params=["maLength"]),
                   OptunaConfig(n_trials=3, sampler="random", seed=1, output_dir=tmp_path / "run"))
    inline = write_report(run, tmp_path / "inline.html").read_text()
    cdn = write_report(run, tmp_path / "cdn.html", include_plotlyjs="cdn").read_text()
    assert 'src="https://cdn.plot.ly' not in inline and len(inline) > 3_000_000
    assert 'src="https://cdn.plot.ly' in cdn and len(cdn) < len(inline) // 5
