"""A PlanResult as the plain JSON of plan.json: layout, predictions, memory, assumptions, provenance."""

from __future__ import annotations

from typing import Any

from hwmodels import catalog
from hwmodels.deployment import PhaseRouting, Routing
from planner.search import Candidate, PlanResult, Recommendation

PLAN_SCHEMA_VERSION = 1


def _layout(c: Candidate) -> dict[str, Any]:
    lay = c.layout
    return {"attention_tp": lay.tp, "attention_dp": lay.dp, "expert_parallel": lay.ep, "pipeline_stages": lay.pp,
            "redundant_experts": lay.redundant_experts, "two_batch_overlap": lay.two_batch_overlap}


def candidate_json(c: Candidate, is_moe: bool, routing: Routing | None = None, maps: bool = False) -> dict[str, Any]:
    """maps: include the placement's phy2log / log2phy (the recommendation's; the frontier's would be megabytes)."""
    step = c.perf.steps[0]
    mem = c.perf.memory
    work = "tokens_per_step_per_device" if c.role == "prefill" else "batch_per_device"
    return {
        "role": c.role,
        "instance_devices": c.instance_devices,
        "layout": _layout(c) | {"name": c.layout.name(is_moe)},
        work: c.work_per_device,
        "step_s": step.time_s,
        "tokens_per_s_per_device": c.tokens_per_s_per_device,
        "tokens_per_s_per_user": c.tokens_per_s_per_user,
        "breakdown_s": step.breakdown_s,
        "overlap_hidden_s": step.overlap_hidden_s,
        "by_layer_type_s": step.by_layer_type_s,
        "expert_load": step.load_source,
        "memory_per_device": {
            "weights_by_part_bytes": mem.weights_by_part,
            "weight_bytes": mem.weight_bytes,
            "workspace_bytes": mem.workspace_bytes,
            "kv_capacity_bytes": mem.kv_capacity_bytes,
            "kv_bytes_per_sequence": mem.kv_bytes_per_sequence,
        },
        "efficiency_sources": list(step.sources),
        "placement": None if c.placement is None else placement_json(c, routing.for_phase(step.phase), maps),
    }


def placement_json(c: Candidate, routing: PhaseRouting, maps: bool) -> dict[str, Any]:
    """The expert placement a candidate was scored with, deployable as is: phy2log is SGLang's
    `--init-expert-location` physical_to_logical_map (one row per model layer; slot p on device
    p // slots_per_device), log2phy deepseek-ai/EPLB's (-1 padded)."""
    p, imbalance = c.placement, c.load.imbalance
    return {"method": p.method, "slots_per_device": p.slots_per_device, "devices": p.num_devices,
            "fit_on": list(routing.fit_on), "evaluated_on": routing.evaluated_on, "mapping": routing.mapping,
            "expert_load": c.load.source, "step_cost": float(imbalance.mean()), "mean_imbalance": float(imbalance.mean()),
            "worst_layer_imbalance": float(imbalance.max()),
            "objective": p.objective, "lp_bound": p.lp_bound, "gap": p.gap, "solver": p.solver, "seconds": p.seconds} | (
        {"phy2log": p.phy2log.tolist(), "log2phy": p.log2phy.tolist()} if maps else {})


def recommendation_json(r: Recommendation, is_moe: bool, routing: Routing | None = None, maps: bool = False) -> dict[str, Any]:
    return {
        "mode": r.mode,
        "devices": r.devices,
        "decode": candidate_json(r.decode, is_moe, routing, maps) | {"instances": r.decode_instances},
        "prefill": None if r.prefill is None else
        candidate_json(r.prefill, is_moe, routing, maps) | {"instances": r.prefill_instances},
        "ttft_s": r.ttft_s,
        "tpot_s": r.tpot_s,
        "usd_per_hour": r.usd_per_hour,
        "usd_per_million_input_tokens": r.usd_per_million_input,
        "usd_per_million_output_tokens": r.usd_per_million_output,
    }


def plan_json(result: PlanResult) -> dict[str, Any]:
    d = result.deployment
    is_moe = d.model.is_moe
    device = d.cluster.device
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "name": d.name,
        "feasible": result.recommendation is not None,
        "infeasible_reason": result.infeasible or None,
        "infeasible_field": result.infeasible_field or None,
        "model": {"name": d.model.name, "display_name": d.model_display_name, "precision": d.precision.label(),
                  "precision_source": d.precision.source},
        "cluster": {"unit": d.cluster.unit.name, "device": device.name, "devices": d.cluster.num_devices,
                    "scaleup_domain_devices": d.cluster.scaleup_domain_devices},
        "workload": {"input_tokens": d.workload.input_tokens, "output_tokens": d.workload.output_tokens,
                     "requests_per_s": d.workload.requests_per_s, "source": d.workload.source},
        "slo": {"ttft_s": d.slo.ttft_s, "tpot_s": d.slo.tpot_s, "percentile": d.slo.percentile},
        "routing": None if d.routing is None else {
            "placement": d.routing.placement, "time_limit_s": d.routing.time_limit_s,
            "phases": {r.phase: {"fit_on": list(r.fit_on), "evaluated_on": r.evaluated_on, "in_sample": r.in_sample,
                                 "mapping": r.mapping} for r in d.routing.phases}},
        "recommendation": None if result.recommendation is None else
        recommendation_json(result.recommendation, is_moe, d.routing, maps=True),
        "alternatives": [recommendation_json(a, is_moe, d.routing) for a in result.alternatives],
        "frontier": [candidate_json(c, is_moe, d.routing) for c in result.frontier],
        "candidates_scored": result.candidates_scored,
        "search_seconds": result.seconds,
        "assumptions": list(result.assumptions),
        "provenance": {
            "device_figures": {k: f.source + (" (unverified)" if f.unverified else "") for k, f in device.provenance.items()},
            "price": None if d.price is None else {"usd_per_device_hour": d.price.usd_per_device_hour, "source": d.price.source},
            "model_config": catalog.model_entry(d.model.name)["source"] if d.model.name in catalog.model_names() else d.model.name,
        },
    }
