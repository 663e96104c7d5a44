"""Real-browser tests: Playwright driving the system Chromium (never a downloaded browser).

They skip, with the reason, where /usr/bin/chromium (or $MERLIN_KIT_CHROMIUM) or the
playwright package is missing (a user's machine); CI installs Debian's chromium and sets
MERLIN_KIT_REQUIRE_BROWSER=1, so there they run or fail.
Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("MERLIN_KIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the system Chromium with Playwright (skipped without it)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium():
    """A Playwright Chromium browser (headless), from the system package."""
    # CI sets MERLIN_KIT_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip
    missing = pytest.fail if os.environ.get("MERLIN_KIT_REQUIRE_BROWSER") == "1" else pytest.skip
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM}: install it (Debian: apt-get install chromium) or set "
                "MERLIN_KIT_CHROMIUM; browser tests never download one")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed (pip install 'merlin-kit[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
