"""Shared fixtures. Tests that read ../shared/data skip where it is absent (a user's clone) and fail
where CI=true, because CI always has it beside the checkout."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the shared reference data is missing at {SHARED_DATA}")
    pytest.skip(f"shared reference data not found at {SHARED_DATA} (only beside the project checkout)")
