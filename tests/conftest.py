"""Shared fixtures. Tests that read ../shared/data skip where it is absent (a user's clone) and fail
where CI=true, because CI always has it beside the checkout."""

import os
import runpy
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the shared reference data is missing at {SHARED_DATA}")
    pytest.skip(f"shared reference data not found at {SHARED_DATA} (only beside the project checkout)")


@pytest.fixture(scope="session")
def context_study(tmp_path_factory) -> Path:
    """The folder docs/whatif_kimi_k2_context.py wrote its CSV and chart to, run once as a script for every test
    that reads it (it plans 16 points: half a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("whatif")
    script = Path(__file__).resolve().parents[1] / "docs" / "whatif_kimi_k2_context.py"
    argv = sys.argv
    sys.argv = [script.name, str(out)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    return out
