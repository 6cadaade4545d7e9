"""Layouts scored per second: Kimi K2 on 128 H200, both phases (one decode and one prefill step, all 61
layers), over distinct layouts: attention TP x two-batch overlap x redundant slots x batch size.

The planner scores thousands of layouts; the target is at least 2,000 per second on one core, with the stored fits
and with NVIDIA's measured kernel tables on (issue 17; SGLang's H200 tables, `pip install 'moeplan[measured]'`).
Each layout is scored once (no repeated loop over the same inputs); shared GEMM shapes, table lookups and the
attention side of layouts that differ only in their experts are cached, as they are in a real search. The tables
are read from disk once per process, before their timing (a step of each phase at each attention TP). The fitted
run goes first, as it always has; the two share no priced operator (the caches key on the costs), only GEMM tiles.
Writes its figures to benchmarks/results/bench_step.json (the README quotes them from there).
Run: python benchmarks/bench_step.py
"""

import itertools
import time

from hwmodels.calibrate.operator_costs import OperatorCosts, costs_for
from hwmodels.catalog import load_model, load_unit
from hwmodels.hardware import make_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.step import StepContext
from record import run_context, write_results

TARGET_PER_S = 2000
GRID = list(itertools.product((1, 2, 4, 8), (False, True), (0, 32, 64, 128), range(8, 520, 8)))


def step_rate(costs: OperatorCosts | None = None) -> tuple[float, float]:
    """(layouts per second, wall seconds) over GRID, priced by `costs` (None: the stored fits)."""
    arch = load_model("kimi-k2")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(load_unit("hgx-h200"), units=16)
    extra = {} if costs is None else {"costs": costs}
    if costs is not None:  # read the tables each attention TP asks from disk once, outside the timing
        for tp in sorted({tp for tp, *_ in GRID}):
            warm = StepContext(arch, plan, cluster, Layout(tp=tp, dp=cluster.num_devices // tp), **extra)
            warm.step("decode", 1, 4096)  # batches outside the grid's
            warm.step("prefill", 100, 4096)
    start = time.perf_counter()
    for tp, overlap, redundant, batch in GRID:
        layout = Layout(tp=tp, dp=cluster.num_devices // tp, redundant_experts=redundant, two_batch_overlap=overlap)
        ctx = StepContext(arch, plan, cluster, layout, **extra)
        ctx.step("decode", batch, 4096)
        ctx.step("prefill", 32 * batch, 4096)
    elapsed = time.perf_counter() - start
    return len(GRID) / elapsed, elapsed


def main() -> int:
    started = run_context()
    rate, elapsed = step_rate()
    figures = {"layouts": len(GRID), "wall_s": elapsed, "layouts_per_s": rate, "target_layouts_per_s": TARGET_PER_S}
    measured = costs_for("h200-sxm", "sglang")
    if measured.measured is not None:
        tables_rate, tables_elapsed = step_rate(measured)
        figures |= {"tables_wall_s": tables_elapsed, "tables_layouts_per_s": tables_rate}
    met = figures["layouts_per_s"] >= TARGET_PER_S
    print(f"{len(GRID)} distinct layouts of Kimi K2 on 128 x H200 scored (decode + prefill step, 61 layers)")
    print(f"  stored fits: {figures['wall_s']:.2f} s, {rate:,.0f} per second, {rate / TARGET_PER_S:.2f} x the "
          f"{TARGET_PER_S:,} target")
    if "tables_layouts_per_s" in figures:
        rate = figures["tables_layouts_per_s"]
        met &= rate >= TARGET_PER_S
        print(f"  SGLang's measured H200 tables on: {figures['tables_wall_s']:.2f} s, {rate:,.0f} per second, "
              f"{rate / TARGET_PER_S:.2f} x the {TARGET_PER_S:,} target")
    else:
        print("  measured tables: aiconfigurator-core is not installed (pip install 'moeplan[measured]'), not timed")
    write_results("bench_step", figures, started)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
