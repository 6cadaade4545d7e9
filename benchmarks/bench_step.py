"""Layouts scored per second: Kimi K2 on 128 H200, both phases (one decode and one prefill step, all 61
layers), over distinct layouts: attention TP x two-batch overlap x redundant slots x batch size.

The planner scores thousands of layouts; the target is at least 2,000 per second on one core. Each
layout is scored once (no repeated loop over the same inputs); shared GEMM shapes are cached, as they
are in a real search. Writes its figures to benchmarks/results/bench_step.json (the README quotes them from there).
Run: python benchmarks/bench_step.py
"""

import itertools
import time

from hwmodels.catalog import load_model, load_unit
from hwmodels.hardware import make_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.step import StepContext
from record import run_context, write_results

TARGET_PER_S = 2000


def main() -> int:
    arch = load_model("kimi-k2")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(load_unit("hgx-h200"), units=16)
    started = run_context()
    grid = list(itertools.product((1, 2, 4, 8), (False, True), (0, 32, 64, 128), range(8, 520, 8)))
    start = time.perf_counter()
    for tp, overlap, redundant, batch in grid:
        layout = Layout(tp=tp, dp=cluster.num_devices // tp, redundant_experts=redundant, two_batch_overlap=overlap)
        ctx = StepContext(arch, plan, cluster, layout)
        ctx.step("decode", batch, 4096)
        ctx.step("prefill", 32 * batch, 4096)
    elapsed = time.perf_counter() - start
    rate = len(grid) / elapsed
    print(f"{len(grid)} distinct layouts of Kimi K2 on 128 x H200 scored (decode + prefill step, 61 layers) in "
          f"{elapsed:.2f} s: {rate:,.0f} per second, {rate / TARGET_PER_S:.2f} x the {TARGET_PER_S:,} target")
    write_results("bench_step", {"layouts": len(grid), "wall_s": elapsed, "layouts_per_s": rate,
                                 "target_layouts_per_s": TARGET_PER_S}, started)
    return 0 if rate >= TARGET_PER_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
