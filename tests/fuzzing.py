"""What the fuzz suites share: their example counts, scaled by MOEPLAN_FUZZ_SCALE (CI runs them at 1;
benchmarks/bench_hostile.py runs more), and a tally of every hostile input they ran, written as JSON to the file
MOEPLAN_FUZZ_TALLY names when the process exits (the benchmark's counts come from it)."""

import atexit
import json
import os
from pathlib import Path

SCALE = float(os.environ.get("MOEPLAN_FUZZ_SCALE", "1"))
_TALLY: dict[str, dict] = {}


def examples(ci_count: int) -> int:
    """A suite's max_examples: its CI count, scaled."""
    return max(1, round(ci_count * SCALE))


def record(suite: str, seconds: float, limit_s: float, input_bytes: int = 0, peak_bytes: int = 0) -> None:
    """One input of `suite` ran in `seconds` (its stated limit: `limit_s`), `input_bytes` long, with a traced
    memory peak of `peak_bytes` (0 where not traced)."""
    t = _TALLY.setdefault(suite, {"inputs": 0, "limit_s": limit_s, "over_limit": 0, "max_seconds": 0.0,
                                  "max_input_bytes": 0, "max_traced_peak_bytes": 0})
    t["inputs"] += 1
    t["over_limit"] += seconds > limit_s
    t["max_seconds"] = max(t["max_seconds"], round(seconds, 3))
    t["max_input_bytes"] = max(t["max_input_bytes"], int(input_bytes))
    t["max_traced_peak_bytes"] = max(t["max_traced_peak_bytes"], int(peak_bytes))


def _write() -> None:
    Path(os.environ["MOEPLAN_FUZZ_TALLY"]).write_text(json.dumps(_TALLY, indent=1), encoding="utf-8")


if os.environ.get("MOEPLAN_FUZZ_TALLY"):
    atexit.register(_write)
