"""A full plan for Kimi K2 on 128 H200 with the default example's workload: target under 60 s on 2 cores.

Run: python benchmarks/bench_plan.py
"""

import time

from moeplan import api, example_path

TARGET_S = 60.0


def main() -> int:
    start = time.perf_counter()
    result = api.plan(example_path("kimi-k2-h200-128.yaml"))
    elapsed = time.perf_counter() - start
    r = result.recommendation
    print(f"plan of Kimi K2 on 128 x H200: {result.candidates_scored:,} configurations scored in {elapsed:.1f} s "
          f"(target {TARGET_S:.0f} s; {elapsed / TARGET_S:.2f} x the budget); "
          f"recommended: {r.mode if r else 'nothing'}, {r.devices if r else 0} devices")
    return 0 if elapsed < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
