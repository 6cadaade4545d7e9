"""Shared fixtures. Tests that read ../shared/data skip where it is absent (a user's clone) and fail
where CI=true, because CI always has it beside the checkout. Tests in a real browser (headless Chromium through
Playwright) skip without Debian's /usr/bin/chromium or the playwright package, and fail without them under CI=true."""

import os
import runpy
import sys
from pathlib import Path

import pytest

# Specs that name no serving engine are priced by the fitted kernel models, as the README's first command (no
# measured tables installed) prices them, so the suite's figures do not move with the moeplan[measured] extra; the
# tests of the engine moeplan picks by itself unset it (tests/test_backend.py). Subprocesses inherit it.
os.environ["MOEPLAN_BACKEND"] = "fitted"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# where browser tests keep their screenshots (git-ignored); MOEPLAN_TEST_ARTIFACTS moves it, e.g. for CI to upload
ARTIFACTS = Path(os.environ.get("MOEPLAN_TEST_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the shared reference data is missing at {SHARED_DATA}")
    pytest.skip(f"shared reference data not found at {SHARED_DATA} (only beside the project checkout)")


@pytest.fixture(scope="session")
def measured(shared_data) -> Path:
    """NVIDIA's silicon sample of measured deployments (../shared/data/measured/aic-silicon-moe.csv)."""
    path = shared_data / "measured" / "aic-silicon-moe.csv"
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing on CI")
        pytest.skip(f"{path} is absent (a clone without ../shared/data)")
    return path


# Workers the suite runs on by default (pytest-xdist). Each loads the catalogs and tables again: two workers on 2 cores
# took the suite from 25 to 14-16 minutes, their processes' summed RSS peaking at 11 GB, so a big machine is capped.
MAX_WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Run on this machine's cores (at most MAX_WORKERS) where pytest-xdist is installed and no `-n` was given; `-n 0`
    runs in one process, as --pdb and --collect-only do. Tests sharing an expensive session fixture name its
    `xdist_group`, so one worker computes it."""
    option = config.option
    if (not config.pluginmanager.hasplugin("xdist") or os.environ.get("PYTEST_XDIST_WORKER")
            or option.numprocesses is not None or option.usepdb or option.collectonly):
        return
    option.numprocesses = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                              MAX_WORKERS)
    if option.dist == "no":
        option.dist = "loadgroup"


def pytest_configure(config):
    # declared here too, so the mark is known where pytest-xdist is not installed
    config.addinivalue_line("markers", "xdist_group(name): run on the same pytest-xdist worker as the group's other tests")


CHROMIUM = Path("/usr/bin/chromium")


def _no_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright's sync API), one per test module."""
    reason = _no_browser()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder test artefacts (screenshots) are kept in after the run: tests/artifacts unless MOEPLAN_TEST_ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def context_study(tmp_path_factory) -> Path:
    """The folder docs/whatif_kimi_k2_context.py wrote its CSV and chart to, run once as a script for every test
    that reads it (it plans 16 points: half a minute on 2 cores; its tests share the xdist_group "context_study")."""
    out = tmp_path_factory.mktemp("whatif")
    script = Path(__file__).resolve().parents[1] / "docs" / "whatif_kimi_k2_context.py"
    argv = sys.argv
    sys.argv = [script.name, str(out)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    return out
