"""End to end: the real dashboard (`python -m streamlit run app/app.py`) on localhost, driven by headless
Chromium through Playwright, checked for what a person sees: the planner's recommendation and its plotly chart,
and a new SLO taking effect after pressing Plan.

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it) and the playwright package (the test
extra); skips without them, and fails without them under CI=true."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT_S = 90
RENDER_TIMEOUT_MS = 90_000


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install '.[test]')"
    return None


@pytest.fixture
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not come up: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_planner_page_in_a_real_browser(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    recommendation = page.locator("[data-testid='stAlertContentSuccess']").first
    recommendation.wait_for(timeout=RENDER_TIMEOUT_MS)
    assert "16 x h200-sxm" in recommendation.inner_text()
    assert "per million output tokens" in recommendation.inner_text()
    page.locator("div.js-plotly-plot").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    assert page.get_by_text("TPOT SLO 50 ms").count() == 1

    tpot = page.get_by_label("TPOT (ms)")
    tpot.fill("60")
    tpot.press("Enter")
    page.get_by_role("button", name="Plan", exact=True).click()
    page.get_by_text("TPOT SLO 60 ms").wait_for(timeout=RENDER_TIMEOUT_MS)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "h200-sxm" in page.locator("[data-testid='stAlertContentSuccess']").first.inner_text()
