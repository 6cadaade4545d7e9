"""The simulator on real data: Moonshot's Kimi conversation trace (Mooncake FAST'25, 12,031 requests over
3,537 s) through the disaggregated Kimi K2 plan on H200 that `moeplan plan` recommends at TPOT 20 ms, with
SGLang's DeepSeek-V3 routing statistics mapped to Kimi K2's shape and replayed in time order.

Prints: the wall time of the full replay (target under 30 s on 2 cores), how wall time grows with the
number of requests (the trace 1x, 2x and 4x, copies back to back), the TTFT / TPOT percentiles with
uniform, EPLB-balanced and unbalanced (contiguous) expert load side by side, and the step-time grid's
error against the exact step over the steps of a replay. Needs ../shared/data beside the checkout. Writes its
figures to benchmarks/results/bench_sim.json (the README quotes them from there).

Run: python benchmarks/bench_sim.py
"""

import glob
import time
from pathlib import Path

import numpy as np

from hwmodels.ingest.requests import RequestTrace, load_trace
from hwmodels.ingest.routing import load_routing
from moeplan import api, parse_spec
from sim import PlacementFallback, SimConfig, concat_routing, simulate
from sim import engine
from sim.steps import StepTimes
from record import run_context, write_results

TARGET_S = 30.0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACE = DATA / "requests" / "mooncake" / "conversation_trace.jsonl"
# the README's replay: the 128-H200 example at a 20 ms TPOT SLO, sized for the trace it replays
SPEC = {"schema_version": 1, "name": "kimi-k2-h200-disaggregated", "model": "kimi-k2",
        "cluster": {"unit": "hgx-h200", "units": 16}, "workload": {"trace": str(TRACE)},
        "slo": {"ttft_s": 10.0, "tpot_s": 0.02, "percentile": 99}}


def repeated(trace: RequestTrace, copies: int) -> RequestTrace:
    """`copies` replays of the trace one after the other (the same arrival rate, `copies` times the requests)."""
    period = trace.duration_s + trace.duration_s / max(len(trace) - 1, 1)
    arrival = np.concatenate([trace.arrival_s + i * period for i in range(copies)])
    blocks = None if trace.prefix_blocks is None else trace.prefix_blocks * copies
    return RequestTrace(arrival, np.tile(trace.input_tokens, copies), np.tile(trace.output_tokens, copies), blocks,
                        f"{trace.source}, {copies} copies back to back")


class _Recording(StepTimes):
    """StepTimes that keeps every query, to measure the grid's error on the steps a replay really takes."""

    queries: list = []

    def time_s(self, phase, work, context, window, mean_work=None):
        _Recording.queries.append((self, phase, work, context, window, mean_work))
        return super().time_s(phase, work, context, window, mean_work)


def grid_error(plan, trace, decode, prefill, samples: int = 300) -> dict[str, tuple[float, float]]:
    engine.StepTimes = _Recording
    try:
        simulate(plan, trace, SimConfig(), decode, prefill)
    finally:
        engine.StepTimes = StepTimes
    rng = np.random.default_rng(0)
    out = {}
    for phase in ("decode", "prefill"):
        queries = [q for q in _Recording.queries if q[1] == phase]
        picked = [queries[i] for i in rng.choice(len(queries), min(samples, len(queries)), replace=False)]
        errors = [abs(q[0].time_s(*q[1:]) / q[0].exact_s(*q[1:]) - 1) for q in picked]
        out[phase] = (float(np.mean(errors)), float(np.max(errors)))
    return out


def run_figures(r) -> dict:
    """One replay's headline numbers: percentiles (s), goodput, throughput, cost and each pool's mean imbalance."""
    return {**{f"{m}_p{q}_s": r.percentile(m, q) for m in ("ttft", "tpot") for q in (50, 90, 99)},
            "goodput_requests_per_s": r.goodput_requests_per_s, "output_tokens_per_s": r.output_tokens_per_s,
            "usd_per_million_output_tokens": r.usd_per_million_output_tokens,
            "prefill_imbalance": r.roles[0].mean_imbalance, "decode_imbalance": r.roles[1].mean_imbalance}


def main() -> int:
    started, start_s = run_context(), time.perf_counter()
    d = api.deployment(parse_spec(SPEC))
    plan_start = time.perf_counter()
    plan = api.plan(d).plan
    plan_s = time.perf_counter() - plan_start
    planned = plan.recommendation
    print(f"plan: {plan.describe()} ({plan_s:.1f} s): TTFT p99 {planned.ttft_s:.2f} s, TPOT p99 {planned.tpot_s * 1e3:.1f} ms")
    trace = load_trace(TRACE)
    arch = d.model

    def routing(pattern):
        files = sorted(glob.glob(str(DATA / "routing" / "deepseek-v3-sglang-eplb" / pattern)))
        return concat_routing([load_routing(f, arch.num_layers, arch.moe_layers, arch.moe.num_experts, arch.moe.top_k)
                               for f in files])

    decode, prefill = routing("decode_*.json"), routing("prefill_*.json")
    print(f"trace: {trace.source}: {len(trace):,} requests over {trace.duration_s:,.0f} s")
    print(f"routing: {decode.source} | {prefill.source}; {decode.note}")

    runs = {}
    for name, config, routes in (("uniform", SimConfig(), (None, None)),
                                 ("EPLB skew", SimConfig(), (decode, prefill)),
                                 ("contiguous skew", SimConfig(placement=PlacementFallback.CONTIGUOUS), (decode, prefill))):
        runs[name] = simulate(plan, trace, config, *routes)
    print(f"\nfull replay wall time: uniform {runs['uniform'].wall_seconds:.1f} s, EPLB skew {runs['EPLB skew'].wall_seconds:.1f} s, "
          f"contiguous skew {runs['contiguous skew'].wall_seconds:.1f} s (target {TARGET_S:.0f} s)")

    print("\nlinearity (EPLB skew; the trace repeated back to back):")
    print(f"{'copies':>6} {'requests':>9} {'wall s':>8} {'wall / 1x':>10} {'requests / 1x':>14} {'steps':>9}")
    base, growth = None, {}
    for copies in (1, 2, 4):
        r = simulate(plan, repeated(trace, copies), SimConfig(), decode, prefill)
        base = base or r.wall_seconds
        growth[f"{copies}x"] = r.wall_seconds / base
        steps = sum(role.steps for role in r.roles)
        print(f"{copies:>6} {len(r.arrival_s):>9,} {r.wall_seconds:>8.1f} {r.wall_seconds / base:>10.2f} {copies:>14.2f} {steps:>9,}")

    print("\nlatency percentiles, full trace (TTFT s, TPOT ms):")
    header = f"{'':>16}" + "".join(f"{name:>17}" for name in runs)
    print(header)
    for metric, scale, unit in (("ttft", 1.0, "s"), ("tpot", 1e3, "ms")):
        for q in (50, 90, 99):
            print(f"{metric.upper() + f' p{q} ({unit})':>16}" + "".join(f"{r.percentile(metric, q) * scale:>17.3f}" for r in runs.values()))
    for label, value in (("goodput req/s", lambda r: r.goodput_requests_per_s),
                         ("output tok/s", lambda r: r.output_tokens_per_s),
                         ("$/M output tok", lambda r: r.usd_per_million_output_tokens),
                         ("prefill imbal.", lambda r: r.roles[0].mean_imbalance),
                         ("decode imbal.", lambda r: r.roles[1].mean_imbalance)):
        print(f"{label:>16}" + "".join(f"{value(r):>17.3f}" for r in runs.values()))
    for name, r in runs.items():  # where each run's expert load came from (the files are listed above)
        print(f"  {name}: {r.roles[0].expert_load.split(' through ')[-1].split(';')[0]}")

    print("\nstep-time grid vs the exact step over the steps of a replay (10% of the trace, EPLB skew, 300 steps each):")
    errors = grid_error(plan, trace.subsample(0.1, seed=0), decode, prefill)
    for phase, (mean, worst) in errors.items():
        print(f"  {phase}: mean {mean:.4%}, worst {worst:.3%}")
    write_results("bench_sim", {
        "plan": plan.describe(), "plan_s": plan_s, "planned": {"ttft_p99_s": planned.ttft_s, "tpot_p99_s": planned.tpot_s},
        "requests": len(trace), "trace_duration_s": trace.duration_s, "target_s": TARGET_S,
        "replay_wall_s": {name: r.wall_seconds for name, r in runs.items()}, "wall_growth_by_copies": growth,
        "runs": {name: run_figures(r) for name, r in runs.items()},
        "grid_error": {phase: {"mean": mean, "worst": worst} for phase, (mean, worst) in errors.items()},
        "wall_s": time.perf_counter() - start_s}, started)
    return 0 if runs["EPLB skew"].wall_seconds < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
