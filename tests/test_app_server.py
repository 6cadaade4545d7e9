"""`moeplan app` (moeplan.app_server): --address binds the server (the environment variable still does without it),
and SIGTERM to `moeplan app` stops the Streamlit server it started instead of leaving it running."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import checkout_cli

from moeplan.app_server import app_command, run_forwarding_signals
from streamlit_health import wait_until_healthy

STOP_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_address_is_a_flag_only_when_given():
    assert app_command(8501, True, "127.0.0.1")[-2:] == ["--server.address", "127.0.0.1"]
    assert "--server.address" not in app_command(8501, True)  # STREAMLIT_SERVER_ADDRESS still applies


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")
def test_sigterm_to_moeplan_app_stops_streamlit(tmp_path):
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    # this checkout's moeplan (not an installed one), in a session of its own: its process group is
    # `moeplan app` and the Streamlit server it starts, and nothing else
    app = subprocess.Popen([*checkout_cli.COMMAND, "app", "--headless", "--port", str(port),
                            "--address", "127.0.0.1"], cwd=tmp_path, env=checkout_cli.env(),
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", app, tmp_path / "app.log", "moeplan app")
        children = Path(f"/proc/{app.pid}/task/{app.pid}/children")
        if children.exists():
            assert children.read_text().split(), "Streamlit runs as a child of moeplan app"
        os.kill(app.pid, signal.SIGTERM)  # to `moeplan app` alone, as a service manager would
        app.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _group_alive(app.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(app.pid), "the Streamlit server outlived moeplan app"
        assert "127.0.0.1" in (tmp_path / "app.log").read_text()
    finally:
        if _group_alive(app.pid):
            os.killpg(app.pid, signal.SIGKILL)
        log.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_child_that_ignores_the_signal_is_killed_after_the_grace():
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    start = time.monotonic()
    # the child ignores SIGTERM; a helper sends this process one while it waits for the child
    sender = subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(2.0); os.kill({os.getpid()}, signal.SIGTERM)"])
    status = run_forwarding_signals([sys.executable, "-c", script], grace_s=1.0)
    sender.wait()
    assert status == 128 + signal.SIGKILL
    assert time.monotonic() - start < 10
