"""Where a benchmark's headline figures go: benchmarks/results/<name>.json, with the machine, the date, the
commit and how busy the machine was, so the README quotes what a run measured and
tests/test_readme_figures.py holds the README to the file."""

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# a spec that names no serving engine is planned on the fitted kernel models, as the README quotes its figures
# (README, "Measured kernel tables"), unless MOEPLAN_BACKEND names an engine for the run; run_context records it
os.environ.setdefault("MOEPLAN_BACKEND", "fitted")


def run_context() -> dict:
    """When a run starts: the CPU model, the CPUs this process may use and the load average (timings are only
    comparable with all three), and the commit it runs."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cpus": len(os.sched_getaffinity(0)), "system": platform.platform(),
            "python": platform.python_version(), "load_average_1m": round(os.getloadavg()[0], 2), "commit": _commit(),
            "backend": os.environ["MOEPLAN_BACKEND"]}


def _commit() -> str:
    """The commit the benchmark ran at, marked when the working tree had changes ("" outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f"{head}+changes" if dirty else head


def write_results(name: str, figures: dict, started: dict) -> Path:
    """Write benchmarks/results/<name>.json: `figures` (the run's headline numbers, SI units in the key names),
    `started` (run_context() when the run began) and the load average at the end, so a reader sees whether the
    machine was shared while it ran."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"benchmark": f"benchmarks/{name}.py", "date": datetime.date.today().isoformat(), "commit": started["commit"],
              "machine": {k: v for k, v in started.items() if k not in ("load_average_1m", "commit")},
              "load_average_1m": {"start": started["load_average_1m"], "end": round(os.getloadavg()[0], 2)},
              "figures": figures}
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(RESULTS_DIR.parents[1])}")
    return path
