"""Why the search recommends nothing: the spec field to change and a sentence a user can act on, in figures."""

from __future__ import annotations

import math

import numpy as np

from hwmodels.deployment import Deployment
from hwmodels.fit import fit
from hwmodels.layouts import layout_space
from planner import queueing
from planner.plan import Candidate, Mode, Plan, Recommendation
from planner.prompt_times import admits_longest, prefill_s, prompt_lengths, rank_prefill_s, sub_cluster

MOST_DEVICES = 1024  # the largest cluster planner.search.devices_needed grows a question's to


def tpot_refusal(d: Deployment, tpot_s: float, r: Recommendation) -> tuple[str, str]:
    """(field, why) when every option meets its TPOT at a full batch but none at the SLO percentile of its load."""
    cause = ("a rank prefilling a long prompt stalls its sequences' decode and lengthens its group's steps"
             if r.mode == Mode.AGGREGATED else "long prompts' KV slows the busiest rank, which its group steps with")
    return "slo.tpot_s", (
        f"no option meets TPOT {d.slo.tpot_s * 1e3:g} ms at p{d.slo.percentile:g} at the offered load on "
        f"{d.cluster.num_devices} x {d.cluster.device.name}: the nearest ({r.mode}, {r.decode.layout.name(d.model.is_moe)}) "
        f"reaches {tpot_s * 1e3:,.0f} ms ({cause}); more devices (disaggregated prefill), a looser slo.tpot_s or a lower "
        "slo.percentile would help")


def explain_infeasible(d: Deployment, decode: list[Candidate], prefill: list[Candidate], sizes: list[int]) -> tuple[str, str]:
    """(the spec field to change, why no deployment was recommended)."""
    c = d.cluster
    where = f"on {c.num_devices} x {c.device.name}"
    if not sizes or not decode:
        if sizes and d.model.is_moe and d.serving.redundant_experts is not None and not any(
                layout_space(d.model, sub_cluster(d, n), d.serving.engine, d.serving.redundant_experts) for n in sizes):
            experts, fixed = d.model.moe.num_experts, d.serving.redundant_experts
            nearest = sorted({fixed + (-(experts + fixed) % n) for n in sizes})[:3]
            return "serving.redundant_experts", (
                f"no instance size scored {where} ({', '.join(map(str, sizes))} devices) has an EP group dividing "
                f"{experts} experts + {fixed} redundant slots; use {' or '.join(map(str, nearest))}, or leave "
                "serving.redundant_experts out to search it with the KV cache")
        longest = d.workload.max_input_tokens
        space = (layout_space(d.model, sub_cluster(d, n), d.serving.engine, d.serving.redundant_experts) for n in sizes)
        if sizes and longest and not any(admits_longest(d, sub_cluster(d, n), layout, 0)
                                         for n, layouts in zip(sizes, space) for layout in layouts):
            return "workload.max_input_tokens", (
                f"no layout {where} holds the longest prompt ({longest:,} tokens) in one attention group's KV cache; "
                "lower workload.max_input_tokens, store the KV cache in fewer bytes (precision.kv_cache: fp8) or use "
                "devices with more memory")
        report = fit(d)
        if not report.fits:  # the weights: say by how much and what would fit
            return "cluster.devices", f"{report.headline()}; {report.fix()}"
        w = d.workload
        return "cluster", (f"no layout of {d.model_display_name} {d.precision.label()} {where} leaves KV cache room for a "
                           f"batch of {w.input_tokens:,} + {w.output_tokens:,}-token requests; use more devices or store "
                           "the KV cache in fewer bytes (precision.kv_cache: fp8)")
    fastest = min(decode, key=lambda x: x.tpot_s)
    if fastest.tpot_s > d.slo.tpot_s:
        step = fastest.perf.steps[0]
        bound = max(step.breakdown_s, key=step.breakdown_s.get)
        hint = "a device with more HBM bandwidth or lower-precision experts (precision.routed_experts: nvfp4 or int4) would help" \
            if bound in ("expert_gemm", "attention", "shared_expert", "dense_mlp") else \
            "a larger scale-up domain (NVL72, CloudMatrix384) would help"
        return "slo.tpot_s", (
            f"no layout meets TPOT {d.slo.tpot_s * 1e3:.0f} ms {where}: the best reaches {fastest.tpot_s * 1e3:.0f} ms "
            f"at batch {fastest.work_per_device} ({fastest.layout.name(d.model.is_moe)}, {bound.replace('_', ' ')}-bound); {hint}")
    prompts, w = prompt_lengths(d), d.workload
    # the prompt at the SLO's percentile, prefilled on the fastest prefill rank with no wait at all
    at_percentile = float(np.percentile(prompts, d.slo.percentile, method="higher"))
    unqueued = {id(p): queueing.ttft_percentile_s(prefill_s(d, prompts, rank_prefill_s(d, p, prompts)), (),
                                                  d.slo.percentile) for p in prefill}
    fastest = min(prefill, key=lambda p: unqueued[id(p)], default=None)
    fastest_prompt = math.inf if fastest is None else unqueued[id(fastest)]
    if fastest_prompt > d.slo.ttft_s:
        p = f"p{d.slo.percentile:g}"
        spread = (f"the {p} prompt ({at_percentile:,.0f} tokens; mean {w.input_tokens:,}, cv "
                  f"{w.input_cv:.2f})" if w.input_cv > 0 else f"a {w.input_tokens:,}-token prompt")
        rank = "" if fastest is None else \
            f" on one {fastest.layout.rank_devices}-device attention rank ({fastest.layout.name(d.model.is_moe)})"
        return "slo.ttft_s", (
            f"no layout meets TTFT {d.slo.ttft_s:g} s at {p} {where}: {p} TTFT >= {fastest_prompt:.2f} s, as {spread} "
            f"takes at least {fastest_prompt:.2f} s to prefill{rank} and transfer; a TTFT SLO of at least {fastest_prompt:.2f} s, a lower percentile (slo.percentile), more devices per attention rank, "
              "or shorter prompts would help")
    if d.workload.requests_per_s is None:
        return "cluster.units", (
            f"no instance of {d.model_display_name} fits within the cluster's {c.num_devices} devices at these SLOs; "
            f"grow the cluster (cluster.units or cluster.devices)")
    return "workload.requests_per_s", (
        f"the traffic ({d.workload.requests_per_s:g} requests/s) needs more than the cluster's {c.num_devices} devices "
        f"at these SLOs; grow the cluster (cluster.units or cluster.devices)")


def grown_refusal(d: Deployment, grown: Plan | None) -> str:
    """The traffic refusal with what "grow the cluster" means in figures (planner.search.devices_needed's plan)."""
    c, w = d.cluster, d.workload
    head = f"the traffic ({w.requests_per_s:g} requests/s) needs more than the cluster's {c.num_devices} devices at these SLOs"
    if grown is None:
        return (f"{head}, and the search meets them on no cluster of its unit up to {MOST_DEVICES:,} devices; relax "
                "the SLOs or serve less traffic per cluster")
    r, g = grown.recommendation, grown.deployment.cluster
    units = g.num_devices // c.unit.devices if g.num_devices % c.unit.devices == 0 else None
    field = f"cluster.units: {units}" if units else f"cluster.devices: {g.num_devices}"
    pools = (f"{r.prefill_devices} prefill + {r.decode_devices} decode devices" if r.prefill is not None else
             f"{r.decode_instances} instance{'s' * (r.decode_instances > 1)} of {r.decode.instance_devices} devices")
    return (f"{head}: the search first meets them on {g.num_devices} x {c.device.name} ({g.num_nodes} nodes): "
            f"{r.mode}, {pools} ({r.decode.layout.name(d.model.is_moe)}), p{d.slo.percentile:g} TTFT "
            f"{r.ttft_s:,.2f} s, TPOT {r.tpot_s * 1e3:,.0f} ms, as ranked before any replay; set {field} "
            "(moeplan plan then replays it)")
