"""`moeplan app`: the Streamlit server as a child process that stops when `moeplan app` is told to stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from moeplan import api

STOP_GRACE_S = 10.0  # how long a child told to stop gets before it is killed


def app_command(port: int, headless: bool, address: str | None = None) -> list[str]:
    """The `streamlit run` command of the dashboard. Without `address` no flag: STREAMLIT_SERVER_ADDRESS (or
    Streamlit's default, every interface) binds it."""
    # -P: the current folder must not shadow moeplan's packages (a stray sim.py there would)
    command = [sys.executable, "-P", "-m", "streamlit", "run", str(api.app_script()), "--server.port", str(port),
               "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false"]
    return command + (["--server.address", address] if address else [])


def run_forwarding_signals(command: list[str], grace_s: float = STOP_GRACE_S) -> int:
    """Run a child process to its end, passing SIGTERM, SIGINT and SIGHUP on to it: a service manager or a
    terminal stopping `moeplan app` stops the Streamlit server too, instead of leaving it running. A child still
    there `grace_s` after the first signal is killed. Returns its exit status (128 + N for signal N)."""
    child = subprocess.Popen(command)
    deadline: list[float] = []  # set by the first signal

    def forward(signum, _frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)
        deadline.append(time.monotonic() + grace_s)

    signals = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, forward) for s in signals}
    try:
        while True:  # polled: a wait without a timeout resumes after a signal and would never reach the deadline
            try:
                status = child.wait(timeout=0.2)
                return 128 - status if status < 0 else status
            except subprocess.TimeoutExpired:
                if deadline and time.monotonic() > deadline[0]:
                    child.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
