"""End to end: the real dashboard (`python -m streamlit run app/app.py`) on localhost, driven by headless
Chromium through Playwright at 1,400 x 1,000 px, checked for what a person sees: every page's metric cards and
selects whole (none cut short with an ellipsis), tables that fit the page, no Deploy button; the planner's
recommendation and its plotly chart, and a new SLO taking effect after pressing Plan. A screenshot of each page
is kept in tests/artifacts (MOEPLAN_TEST_ARTIFACTS moves it).

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it) and the playwright package (the test
extra); skips without them, and fails without them under CI=true (the `browser` fixture, tests/conftest.py)."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamlit_health import wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "app.py"
RENDER_TIMEOUT_MS = 120_000
WINDOW = {"width": 1400, "height": 1000}
MAX_SCREENSHOT_PX = 8000

# each page, and what shows it has finished: metric cards, or its first chart
PAGES = {"planner": ("", "[data-testid='stMetricValue']"),
         "placement": ("placement", "div.js-plotly-plot"),
         "simulation": ("simulation", "[data-testid='stMetricValue']"),
         "hardware": ("hardware", "div.js-plotly-plot"),
         "validation": ("validation", "[data-testid='stMetricValue']")}

# every element of a metric card (label, value, delta) or of a select's shown value that clips its text: wider
# content than box (Streamlit cuts these with text-overflow: ellipsis), or text that ends with an ellipsis
CUT_TEXT = """() => {
  const parts = document.querySelectorAll('[data-testid="stMetricLabel"], [data-testid="stMetricValue"], '
                                          + '[data-testid="stMetricDelta"], [data-testid="stSelectbox"]');
  const found = [];
  for (const part of parts) {
    const kind = part.dataset.testid;
    for (const e of [part, ...part.querySelectorAll('*')]) {
      const text = ((e.tagName === 'INPUT' ? e.value : e.innerText) || '').trim();  // a select shows its value in an input
      if (e.clientWidth === 0 || !text) continue;
      if (e.scrollWidth > e.clientWidth || text.endsWith('\u2026') || text.endsWith('...'))
        found.push({kind, text, scrollWidth: e.scrollWidth, clientWidth: e.clientWidth});
    }
  }
  return found;
}"""
CARDS = "() => document.querySelectorAll('[data-testid=\"stMetricValue\"]').length"
WIDE_TABLES = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller, [data-testid="stTable"]'))
  .filter(e => e.scrollWidth > e.clientWidth).map(e => [e.innerText.slice(0, 40), e.scrollWidth, e.clientWidth])"""
CONTENT_HEIGHT = """() => Math.max(document.querySelector('[data-testid="stMain"]').scrollHeight,
  ...Array.from(document.querySelectorAll('[data-testid="stSidebarContent"]')).map(e => e.scrollHeight))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streamlit")
    port = _free_port()
    log = (folder / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server, folder / "streamlit.log", "streamlit")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _settled(page, ready: str) -> None:
    """Wait for the page's own element, then for the script run to end (Streamlit's running indicator gone)."""
    page.locator(ready).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(1000)  # fonts and the last element's layout


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main area and sidebar, so the window grows to their height."""
    height = min(page.evaluate(CONTENT_HEIGHT) + 100, MAX_SCREENSHOT_PX)
    page.set_viewport_size({"width": WINDOW["width"], "height": max(height, WINDOW["height"])})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size(WINDOW)


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_shows_whole_cards_and_selects_and_tables_that_fit(browser, app_url, artifacts, name):
    path, ready = PAGES[name]
    page = browser.new_page(viewport=WINDOW)
    try:
        page.goto(f"{app_url}/{path}")
        _settled(page, ready)
        _screenshot(page, artifacts / f"app-{name}.png")
        assert page.locator("[data-testid='stException']").count() == 0
        if ready == "[data-testid='stMetricValue']":
            assert page.evaluate(CARDS) >= 4
        assert page.evaluate(CUT_TEXT) == [], f"text cut short on the {name} page (screenshot: {artifacts})"
        assert page.evaluate(WIDE_TABLES) == [], f"a table wider than the {name} page"
        assert page.evaluate("document.documentElement.scrollWidth") <= WINDOW["width"]
        assert page.get_by_role("button", name="Deploy").count() == 0, "Streamlit's Deploy button in the toolbar"
    finally:
        page.close()


def test_planner_page_in_a_real_browser(browser, app_url):
    page = browser.new_page(viewport=WINDOW)
    page.goto(app_url)
    recommendation = page.locator("[data-testid='stAlertContentSuccess']").first
    recommendation.wait_for(timeout=RENDER_TIMEOUT_MS)
    assert "16 x h200-sxm" in recommendation.inner_text()
    assert "per million output tokens" in recommendation.inner_text()
    page.locator("div.js-plotly-plot").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    assert page.get_by_text("TPOT SLO 100 ms").count() == 1

    tpot = page.get_by_label("TPOT (ms)")
    tpot.fill("120")
    tpot.press("Enter")
    page.get_by_role("button", name="Plan", exact=True).click()
    page.get_by_text("TPOT SLO 120 ms").wait_for(timeout=RENDER_TIMEOUT_MS)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "h200-sxm" in page.locator("[data-testid='stAlertContentSuccess']").first.inner_text()
    page.close()
