"""Points per second of a 1,000-point sweep on local processes and on a local Ray instance, side by side.

Kimi K2 on 16 x H200 (the default example) at 10 TPOT SLOs x 10 prompt lengths x 10 H200 prices, each engine
on every CPU this process may use; both must return the same rows. Ray's start-up (a local instance, the
packages shipped to it) is timed apart from the sweep, because it is paid once per session, not per sweep.
About 3 minutes on 2 cores. Needs the ray extra: pip install 'moeplan[ray]'. Writes its figures to
benchmarks/results/bench_sweep.json (the README quotes them from there).

Run: python benchmarks/bench_sweep.py
"""

import math
import os
import time

from moeplan import api, engines, example_path
from record import run_context, write_results

VARY = {
    "slo.tpot_s": [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.10, 0.12, 0.15],
    "workload.input_tokens": [1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536],
    "prices.h200-sxm": [1.5 + 0.5 * i for i in range(10)],
}


def main() -> int:
    spec = example_path()
    points = math.prod(len(v) for v in VARY.values())
    cpus = len(os.sched_getaffinity(0))
    started = run_context()

    start = time.perf_counter()
    local = api.sweep(spec, VARY, engine="local")
    local_s = time.perf_counter() - start

    start = time.perf_counter()
    ray = engines.connect_ray()
    startup_s = time.perf_counter() - start
    start = time.perf_counter()
    on_ray = api.sweep(spec, VARY, engine="ray")
    ray_s = time.perf_counter() - start
    ray.shutdown()

    same = on_ray.rows == local.rows
    feasible = sum(r["feasible"] for r in local.rows)
    print(f"sweep of {spec.name}: {points:,} points ({feasible:,} feasible) on {cpus} CPUs")
    print(f"{'engine':<8} | {'seconds':>8} | {'points/s':>8}")
    print(f"{'local':<8} | {local_s:8.1f} | {points / local_s:8.1f}")
    print(f"{'ray':<8} | {ray_s:8.1f} | {points / ray_s:8.1f}   (+ {startup_s:.1f} s to start the local instance)")
    print(f"ray / local points per second: {local_s / ray_s:.2f} x; same rows: {same}")
    write_results("bench_sweep", {"points": points, "feasible": feasible, "local_s": local_s,
                                  "local_points_per_s": points / local_s, "ray_s": ray_s, "ray_points_per_s": points / ray_s,
                                  "ray_startup_s": startup_s, "same_rows": same}, started)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
