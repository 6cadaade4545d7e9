"""A full plan for Kimi K2 on 128 H200 with the default example's workload: target under 60 s on 2 cores. Then,
where ../shared/data is beside the checkout, the same example sized for the Mooncake conversation trace and checked
in the simulator (its cheapest options replayed on the trace until one holds): target under 30 s on 2 cores.

Then, where ../shared/data is beside the checkout, the default example (Kimi K2 on 16 H200) planned on SGLang's
DeepSeek-V3 decode statistics mapped to Kimi K2: the robust ILP placed on two files and scored on the third, timed,
with the recommended placement's in-sample objective and held-out imbalance. Writes its figures to
benchmarks/results/bench_plan.json (the README quotes them from there).

Run: python benchmarks/bench_plan.py
"""

import time
from pathlib import Path

import yaml

from moeplan import api, example_path
from record import run_context, write_results

TARGET_S = 60.0
CHECKED_TARGET_S = 30.0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STATS = DATA / "routing" / "deepseek-v3-sglang-eplb"
MOONCAKE = DATA / "requests" / "mooncake" / "conversation_trace.jsonl"
FIT, EVALUATE = ("decode_in1800out100.json", "decode_in2000out100.json"), "decode_in1000out1000.json"


def routed_plan() -> dict:
    raw = yaml.safe_load(example_path().read_text())
    raw["routing"] = {"decode": {"evaluate": str(STATS / EVALUATE), "fit": [str(STATS / f) for f in FIT]}}
    start = time.perf_counter()
    result = api.plan(raw)
    elapsed = time.perf_counter() - start
    c = result.recommendation.decode
    s = c.placement_summary
    figures = {"wall_s": elapsed, "fit": list(FIT), "evaluate": EVALUATE, "layout": c.perf.memory.layout_name,
               "ep": c.layout.ep, "redundant_experts": c.layout.redundant_experts, "method": s.method,
               "in_sample_objective": s.objective, "lp_bound": s.lp_bound, "gap": s.gap,
               "held_out_mean_imbalance": s.mean_imbalance, "held_out_worst_layer_imbalance": s.worst_layer_imbalance}
    print(f"plan of Kimi K2 on 16 x H200 with routing statistics ({s.method} fitted on {', '.join(FIT)}, scored on "
          f"{EVALUATE}) in {elapsed:.1f} s: {figures['layout']}, in-sample objective {s.objective:.4f} (bound "
          f"{s.lp_bound:.4f}), held-out imbalance mean {s.mean_imbalance:.3f}, worst layer {s.worst_layer_imbalance:.3f}")
    return figures


def checked_plan() -> dict:
    start = time.perf_counter()
    result = api.plan(example_path("kimi-k2-h200-128.yaml"), trace=MOONCAKE)
    elapsed = time.perf_counter() - start
    r, checks = result.recommendation, result.replays
    print(f"plan of Kimi K2 on 128 x H200 for the Mooncake trace, checked in the simulator: {elapsed:.1f} s (target "
          f"{CHECKED_TARGET_S:.0f} s; {elapsed / CHECKED_TARGET_S:.2f} x the budget); {len(checks)} option(s) replayed: "
          + "; ".join(c.describe() for c in checks))
    return {"wall_s": elapsed, "target_s": CHECKED_TARGET_S, "recommended_devices": r.devices if r else 0,
            "replays": [{k: getattr(c, k) for k in ("mode", "devices", "planned_ttft_s", "replayed_ttft_s", "planned_tpot_s",
                                                     "replayed_tpot_s", "requests", "completed", "holds", "wall_s")}
                        for c in checks]}


def main() -> int:
    started = run_context()
    start = time.perf_counter()
    result = api.plan(example_path("kimi-k2-h200-128.yaml"))
    elapsed = time.perf_counter() - start
    r = result.recommendation
    print(f"plan of Kimi K2 on 128 x H200: {result.candidates_scored:,} configurations scored in {elapsed:.1f} s "
          f"(target {TARGET_S:.0f} s; {elapsed / TARGET_S:.2f} x the budget); "
          f"recommended: {r.mode if r else 'nothing'}, {r.devices if r else 0} devices")
    figures = {"plan_128_h200": {"wall_s": elapsed, "target_s": TARGET_S, "candidates_scored": result.candidates_scored,
                                 "recommended_devices": r.devices if r else 0}}
    ok = elapsed < TARGET_S
    if MOONCAKE.is_file():
        figures["checked_plan_128_h200_mooncake"] = checked = checked_plan()
        ok = ok and checked["wall_s"] < CHECKED_TARGET_S
    else:
        print(f"the Mooncake trace not found at {MOONCAKE}: the checked plan is left out")
    if STATS.is_dir():
        figures["routed_plan_16_h200"] = routed_plan()
    else:
        print(f"routing statistics not found at {STATS}: the routed plan is left out")
    write_results("bench_plan", figures, started)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
