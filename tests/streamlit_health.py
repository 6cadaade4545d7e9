"""Waiting for a Streamlit server a test started (tests/test_launch.py, tests/test_app_browser.py)."""

import time
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT_S = 90  # a cold Streamlit start on a busy 2-CPU machine takes tens of seconds


def wait_until_healthy(url: str, process, log: Path, what: str) -> None:
    """Return once `url`/_stcore/health says ok; fail with the log's tail if `process` ends or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.3)
