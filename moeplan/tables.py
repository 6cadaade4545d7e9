"""A plan's tables as pandas DataFrames: what report.html charts, the CSVs hold and the dashboard shows.

One function per table, each a pure function of a Plan; column names carry their units.
"""

from __future__ import annotations

import pandas as pd

from planner.device_map import attention_map, kv_map
from planner.plan import Candidate, Plan, Recommendation


def _roles(r: Recommendation | None) -> list[tuple[str, Candidate]]:
    if r is None:
        return []
    return [(r.decode.role, r.decode)] + ([(r.prefill.role, r.prefill)] if r.prefill is not None else [])


def recommendation_frame(result: Plan) -> pd.DataFrame:
    """One row per option considered best (the recommendation first, then the alternatives)."""
    d, rows = result.deployment, []
    for rank, r in enumerate(([result.recommendation] if result.recommendation else []) + list(result.alternatives)):
        rows.append({
            "rank": rank, "mode": r.mode, "devices": r.devices,
            "decode_layout": r.decode.layout.name(d.model.is_moe), "decode_instances": r.decode_instances,
            "batch_per_device": r.decode.work_per_device,
            "prefill_layout": r.prefill.layout.name(d.model.is_moe) if r.prefill else None,
            "prefill_instances": r.prefill_instances,
            "ttft_s": r.ttft_s, "tpot_s": r.tpot_s,
            "output_tokens_per_s_per_device": r.decode.tokens_per_s_per_device,
            "usd_per_hour": r.usd_per_hour, "usd_per_million_input_tokens": r.usd_per_million_input,
            "usd_per_million_output_tokens": r.usd_per_million_output,
            "requests_per_s": r.requests_per_s, "utilization": r.utilization,
            "usd_per_million_output_tokens_at_capacity": r.usd_per_million_output_at_capacity,
        })
    return pd.DataFrame(rows)


def frontier_frame(result: Plan) -> pd.DataFrame:
    """The Pareto frontier of decode layouts; `chosen` marks the recommendation's decode point."""
    d, r = result.deployment, result.recommendation
    def key(c):
        return c.instance_devices, c.layout, c.work_per_device, c.speculation
    chosen = key(r.decode) if r else None
    return pd.DataFrame([{
        "devices": c.instance_devices, "layout": c.layout.name(d.model.is_moe), "batch_per_device": c.work_per_device,
        "mtp_draft_tokens": c.speculation.draft_tokens if c.speculation else 0,
        "tpot_s": c.tpot_s, "output_tokens_per_s_per_device": c.tokens_per_s_per_device,
        "tokens_per_s_per_user": c.tokens_per_s_per_user,
        "chosen": key(c) == chosen,
    } for c in result.frontier])


def breakdown_frame(result: Plan) -> pd.DataFrame:
    """Step time per component of each role's step, before and after two-batch overlap."""
    rows = []
    for role, c in _roles(result.recommendation):
        for step in c.perf.steps:
            for component, seconds in step.breakdown_s.items():
                rows.append({"role": role, "step": step.phase, "component": component, "seconds": seconds})
            rows.append({"role": role, "step": step.phase, "component": "hidden by overlap", "seconds": -step.overlap_hidden_s})
    return pd.DataFrame(rows, columns=["role", "step", "component", "seconds"])


def memory_frame(result: Plan) -> pd.DataFrame:
    """HBM of the busiest device of each role: weights by part, workspace, KV capacity."""
    rows = []
    for role, c in _roles(result.recommendation):
        m = c.perf.memory
        for part, size in m.weights_by_part.items():
            rows.append({"role": role, "part": f"weights: {part}", "bytes": size})
        rows.append({"role": role, "part": "workspace", "bytes": m.workspace_bytes})
        rows.append({"role": role, "part": "KV cache capacity", "bytes": max(m.kv_capacity_bytes, 0.0)})
    return pd.DataFrame(rows, columns=["role", "part", "bytes"])


def placement_frame(result: Plan) -> pd.DataFrame:
    """Expert load per (role, MoE layer, device) relative to the mean device (1.0 = perfect balance), as
    scored: the placement's measured loads, the catalog skew, or uniform (see `source`)."""
    d, rows = result.deployment, []
    for role, c in _roles(result.recommendation):
        if c.load is None:
            continue
        ep = c.load.shares.shape[1]
        for i, layer in enumerate(d.model.moe_layers):
            for device in range(ep):
                rows.append({"role": role, "layer": layer, "device": device,
                             "relative_load": float(c.load.shares[i, device] * ep), "source": c.load.source})
    return pd.DataFrame(rows, columns=["role", "layer", "device", "relative_load", "source"])


def device_map_frame(result: Plan) -> pd.DataFrame:
    """Per (role, device, layer): the device's role (attention, experts or both), pipeline stage, attention DP and TP
    rank, whether its stage runs the layer, its expert load there relative to the mean device (MoE layers), and the KV its rank holds
    (planner.device_map)."""
    d, rows = result.deployment, []
    moe_index = {layer: i for i, layer in enumerate(d.model.moe_layers)} if d.model.is_moe else {}
    for role, c in _roles(result.recommendation):
        att, kv = attention_map(c, d.model), kv_map(c)
        ep = c.load.shares.shape[1] if c.load is not None else 1
        first_expert_device = c.layout.attention_devices if c.layout.ffn_devices else 0
        for device in range(c.instance_devices):
            stage, holds_kv = att["stage_of_device"][device], att["role_of_device"][device] != "experts"
            for layer, layer_stage in enumerate(att["stage_of_layer"]):
                i = moe_index.get(layer)
                load = None
                if c.load is not None and i is not None and device >= first_expert_device:
                    load = float(c.load.shares[i, (device - first_expert_device) % ep] * ep)
                rows.append({"role": role, "device": device, "device_role": att["role_of_device"][device],
                             "layer": layer, "stage": stage,
                             "dp_rank": att["dp_rank_of_device"][device], "tp_rank": att["tp_rank_of_device"][device],
                             "runs_layer": layer_stage == stage, "relative_expert_load": load,
                             "kv_sequences": kv["sequences_per_device"] if holds_kv else 0.0,
                             "kv_bytes": kv["bytes_per_device"] if holds_kv else 0.0,
                             "kv_capacity_bytes": kv["capacity_bytes_per_device"] if holds_kv else 0.0})
    return pd.DataFrame(rows, columns=["role", "device", "device_role", "layer", "stage", "dp_rank", "tp_rank",
                                       "runs_layer", "relative_expert_load", "kv_sequences", "kv_bytes",
                                       "kv_capacity_bytes"])


def cost_frame(result: Plan) -> pd.DataFrame:
    """Cost per million tokens with every input it follows from."""
    d, r = result.deployment, result.recommendation
    if r is None:
        return pd.DataFrame(columns=["quantity", "value", "source"])
    w = d.workload
    rows = [
        ("device", d.cluster.device.name, "spec"),
        ("usd_per_device_hour", d.price.usd_per_device_hour if d.price else None,
         d.price.describe() if d.price else "no price: set prices.<device> in the spec"),
        *([("prefill_device", d.prefill_cluster.device.name, "spec: cluster.prefill"),
           ("prefill_usd_per_device_hour", d.prefill_price.usd_per_device_hour if d.prefill_price else None,
            d.prefill_price.describe() if d.prefill_price else "no price: set prices.<device> in the spec")]
          if d.mixed else []),
        ("devices", r.devices, "planner"),
        ("usd_per_hour", r.usd_per_hour, "devices x price"),
        ("requests_per_s", w.requests_per_s, w.source or "spec"),
        ("input_tokens_per_request", w.input_tokens, w.source or "spec"),
        ("output_tokens_per_request", w.output_tokens, w.source or "spec"),
        ("output_tokens_per_s_per_device", r.decode.tokens_per_s_per_device, "step model"),
        ("usd_per_million_input_tokens", r.usd_per_million_input, "prefill devices' share of the bill / input tokens"),
        ("usd_per_million_output_tokens", r.usd_per_million_output, "decode devices' share of the bill / output tokens"),
        ("utilization", r.utilization, "offered traffic / the traffic that fills the busiest pool at its operating point"),
        ("capacity_requests_per_s", r.capacity_requests_per_s, "requests_per_s / utilization"),
        ("usd_per_million_input_tokens_at_capacity", r.usd_per_million_input_at_capacity, "the same bill, full"),
        ("usd_per_million_output_tokens_at_capacity", r.usd_per_million_output_at_capacity, "the same bill, full"),
    ]
    return pd.DataFrame([{"quantity": q, "value": v, "source": s} for q, v, s in rows])


def replays_frame(result: Plan) -> pd.DataFrame:
    """The options the search replayed in the simulator, in the order tried: planned against replayed at the SLO
    percentile, and whether each held (the recommendation is the one that did)."""
    columns = ["mode", "devices", "usd_per_hour", "planned_ttft_s", "replayed_ttft_s", "planned_tpot_s", "replayed_tpot_s",
               "requests", "completed", "holds", "traffic", "wall_s"]
    return pd.DataFrame([{k: getattr(c, k) for k in columns} for c in result.replays], columns=columns)


TABLES = {
    "recommendation": recommendation_frame,
    "replays": replays_frame,
    "frontier": frontier_frame,
    "breakdown": breakdown_frame,
    "memory": memory_frame,
    "placement": placement_frame,
    "device_map": device_map_frame,
    "cost": cost_frame,
}
