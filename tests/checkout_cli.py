"""This checkout's CLI in a subprocess, never an installed copy: a test runs the code it sits beside (a worktree, a
stale `pip install .`), from any working directory."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "moeplan.cli"]


def env(**extra: str) -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH, plus `extra`."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def run(*args: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env())
