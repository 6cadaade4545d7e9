"""plan.json: the one serialisation of a Plan. `plan_to_json` writes it, `plan_from_json` reads it back (to the
same Plan: tests/test_plan_json.py round-trips it), `read_plan` reads a file.

A plan is written for a Deployment (the spec) and read back against one: the model, precision and cluster it
names must be the spec's. Every field is checked as it is read; a malformed or mismatched document is one
InputError naming the field and the fix, never a traceback. Schema version 2 added, per candidate, its steps
(`steps`), its `prefill_share` and its whole memory, and for the recommendation's pools their per-device expert
loads (`expert_load_shares`): everything the Plan holds, so a plan read back is the plan that was written. A
recommendation states its pools' utilisation at the offered traffic, the traffic at which it is full and its cost
per million tokens there (`utilization`, `capacity_requests_per_s`, `usd_per_million_*_tokens_at_capacity`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hwmodels import catalog
from hwmodels.deployment import Deployment
from hwmodels.errors import InputError
from hwmodels.expert_load import ExpertLoad
from hwmodels.layout import Layout
from hwmodels.layout_text import layout_text
from hwmodels.memory import DeviceMemory
from hwmodels.model_arch import ModelArch
from hwmodels.pipeline import PipelineTimes
from hwmodels.roles import Phase, Role
from hwmodels.serving import Performance
from hwmodels.speculation import MAX_DRAFT_TOKENS, Speculation
from hwmodels.step import COMPONENTS, StepCost
from planner.device_map import attention_map, kv_map
from planner.estimate import Estimate
from planner.placement import Placement, build_placement
from planner.plan import Candidate, Mode, PlacementSummary, Plan, Recommendation, ReplayCheck

PLAN_SCHEMA_VERSION = 3  # 3: placement = {experts, attention, kv}
# a plan with both pools' placement maps (61 layers x 320 slots, twice) is about 1 MB; far past that is not a plan
MAX_PLAN_BYTES = 64 * 2**20
_REPLAN = "plan the spec again (moeplan plan SPEC -o DIR) and pass that plan.json"


# ------------------------------------------------------------------------------------------------- writing

def plan_to_json(plan: Plan) -> dict[str, Any]:
    d = plan.deployment
    is_moe = d.model.is_moe
    device = d.cluster.device
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "name": d.name,
        "feasible": plan.recommendation is not None,
        "infeasible_reason": plan.infeasible or None,
        "infeasible_field": plan.infeasible_field or None,
        "model": {"name": d.model.name, "display_name": d.model_display_name, "precision": d.precision.label(),
                  "precision_source": d.precision.source},
        "cluster": {"unit": d.cluster.unit.name, "device": device.name, "devices": d.cluster.num_devices,
                    "scaleup_domain_devices": d.cluster.scaleup_domain_devices,
                    "prefill": None if d.prefill_cluster is None else {
                        "unit": d.prefill_cluster.unit.name, "device": d.prefill_cluster.device.name,
                        "devices": d.prefill_cluster.num_devices}},
        "workload": {"input_tokens": d.workload.input_tokens, "output_tokens": d.workload.output_tokens,
                     "requests_per_s": d.workload.requests_per_s, "source": d.workload.source,
                     "trace": d.workload.trace, "input_cv": d.workload.input_cv, "output_cv": d.workload.output_cv,
                     "arrivals": {"rate_levels": [{"share": share, "rate_multiplier": m} for share, m in d.workload.arrivals.levels],
                                  "burstiness": d.workload.arrivals.scv, "source": d.workload.arrivals.source}},
        "slo": {"ttft_s": d.slo.ttft_s, "tpot_s": d.slo.tpot_s, "percentile": d.slo.percentile},
        # the engine whose measured tables priced the operators (null: the fitted models) and why, where not named
        "serving": {"engine": d.serving.engine, "engine_version": d.serving.engine_version,
                    "engine_chosen": d.serving.engine_note or None,
                    "request_overhead_s": d.serving.request_overhead_s, "step_overhead_s": d.serving.step_overhead_s,
                    "shared_expert_overlap": d.serving.shared_expert_overlap,
                    "sliding_kv_share": d.serving.sliding_kv_share},
        "routing": None if d.routing is None else {
            "placement": d.routing.placement, "time_limit_s": d.routing.time_limit_s,
            "phases": {r.phase: {"fit_on": list(r.fit_on), "evaluated_on": r.evaluated_on, "in_sample": r.in_sample,
                                 "mapping": r.mapping} for r in d.routing.phases}},
        "recommendation": None if plan.recommendation is None else _recommendation(plan.recommendation, d.model) | {
            "replay": next((_replay(c) for c in plan.replays if c.holds), None)},
        "replays": [_replay(c) for c in plan.replays],
        "alternatives": [_recommendation(a, d.model) for a in plan.alternatives],
        "frontier": [_candidate(c, d.model) for c in plan.frontier],
        "candidates_scored": plan.candidates_scored,
        "search_seconds": plan.seconds,
        "assumptions": list(plan.assumptions),
        "provenance": {
            "device_figures": {k: f.source + (" (unverified)" if f.unverified else "") for k, f in device.provenance.items()},
            "price": None if d.price is None else {"usd_per_device_hour": d.price.usd_per_device_hour, "source": d.price.source,
                                                   "basis": d.price.basis, "date": d.price.date},
            "model_config": catalog.model_entry(d.model.name)["source"] if d.model.name in catalog.model_names() else d.model.name,
        },
    }


def _recommendation(r: Recommendation, arch: ModelArch) -> dict[str, Any]:
    return {
        "mode": r.mode,
        "devices": r.devices,
        "decode": _candidate(r.decode, arch) | {"instances": r.decode_instances},
        "prefill": None if r.prefill is None else _candidate(r.prefill, arch) | {"instances": r.prefill_instances},
        "ttft_s": r.ttft_s,
        "tpot_s": r.tpot_s,
        "usd_per_hour": r.usd_per_hour,
        "usd_per_million_input_tokens": r.usd_per_million_input,
        "usd_per_million_output_tokens": r.usd_per_million_output,
        "requests_per_s": r.requests_per_s,
        "utilization": r.utilization,
        "decode_utilization": r.decode_utilization,
        "prefill_utilization": r.prefill_utilization,
        "capacity_requests_per_s": r.capacity_requests_per_s,
        "usd_per_million_input_tokens_at_capacity": r.usd_per_million_input_at_capacity,
        "usd_per_million_output_tokens_at_capacity": r.usd_per_million_output_at_capacity,
    }


def estimate_to_json(e: Estimate) -> dict[str, Any]:
    """`moeplan estimate --json`: the pinned layouts, whether they meet the spec, and the headline figures (the
    pools in `recommendation`, as plan.json writes a recommendation; null where the layout cannot serve at all)."""
    r, d = e.plan.recommendation if e.plan else None, e.deployment
    is_moe = d.model.is_moe
    layouts = {str(role): layout_text(x, is_moe) for role in Role if (x := e.pinned.layout(role)) is not None}
    w = d.workload
    return {
        "model": d.model_display_name, "device": d.cluster.device.name, "cluster_devices": d.cluster.num_devices,
        "layouts": layouts, "batch_per_device": None if r is None else r.decode.work_per_device,
        "meets_slo": e.meets_slo, "missed": list(e.missed), "beyond_cluster": e.beyond_cluster,
        "why": e.why, "field": e.field,
        "slo": {"ttft_s": d.slo.ttft_s, "tpot_s": d.slo.tpot_s, "percentile": d.slo.percentile},
        "mode": None if r is None else r.mode, "devices": None if r is None else r.devices,
        "ttft_s": None if r is None else r.ttft_s, "tpot_s": None if r is None else r.tpot_s,
        "unqueued_ttft_s": e.unqueued_ttft_s,
        "requests_per_s": None if r is None else r.requests_per_s,
        "output_tokens_per_s_per_device": None if r is None else r.decode.tokens_per_s_per_device,
        "output_tokens_per_s_per_device_at_offered_load": None if r is None else r.requests_per_s * w.output_tokens / r.devices,
        "usd_per_million_output_tokens": None if r is None else r.usd_per_million_output,
        "usd_per_million_input_tokens": None if r is None else r.usd_per_million_input,
        "recommendation": None if r is None else _recommendation(r, d.model),
    }


def _replay(c: ReplayCheck) -> dict[str, Any]:
    return {"mode": c.mode, "devices": c.devices, "usd_per_hour": c.usd_per_hour, "planned_ttft_s": c.planned_ttft_s,
            "planned_tpot_s": c.planned_tpot_s, "replayed_ttft_s": c.replayed_ttft_s,
            "replayed_tpot_s": None if math.isnan(c.replayed_tpot_s) else c.replayed_tpot_s, "requests": c.requests,
            "completed": c.completed, "holds": c.holds, "traffic": c.traffic, "wall_s": c.wall_s}


def _candidate(c: Candidate, arch: ModelArch) -> dict[str, Any]:
    """A candidate; its per-device expert load, where its attention and KV sit (planner.device_map), and its expert
    placement with the maps where it keeps them (the recommendation's)."""
    lay, step, mem, is_moe = c.layout, c.perf.steps[0], c.perf.memory, arch.is_moe
    work = "tokens_per_step_per_device" if c.role == Role.PREFILL else "batch_per_device"
    return {
        "role": c.role,
        "instance_devices": c.instance_devices,
        "layout": {"attention_tp": lay.tp, "attention_dp": lay.dp, "expert_parallel": lay.ep, "pipeline_stages": lay.pp,
                   "redundant_experts": lay.redundant_experts, "two_batch_overlap": lay.two_batch_overlap,
                   "context_parallel": lay.cp, "ffn_devices": lay.ffn_devices, "name": lay.name(is_moe)},
        work: c.work_per_device,
        "step_s": step.time_s,
        "tokens_per_s_per_device": c.tokens_per_s_per_device,
        "tokens_per_s_per_user": c.tokens_per_s_per_user,
        "prefill_share": c.perf.prefill_share,
        "breakdown_s": step.breakdown_s,
        "overlap_hidden_s": step.overlap_hidden_s,
        "by_layer_type_s": step.by_layer_type_s,
        "expert_load": step.load_source,
        "steps": [_step(s) for s in c.perf.steps],
        "memory_per_device": {
            "weights_by_part_bytes": mem.weights_by_part,
            "weight_bytes": mem.weight_bytes,
            "workspace_bytes": mem.workspace_bytes,
            "usable_bytes": mem.usable_bytes,
            "kv_capacity_bytes": mem.kv_capacity_bytes,
            "kv_bytes_per_sequence": mem.kv_bytes_per_sequence,
            "linear_state_bytes_per_sequence": mem.linear_state_bytes_per_sequence,
            "ffn_device_bytes": mem.ffn_device_bytes,
            "context_tokens": mem.context_tokens,
            "concurrent_sequences": mem.concurrent_sequences,
        },
        "efficiency_sources": list(step.sources),
        "expert_load_shares": None if c.load is None else {"source": c.load.source, "shares": c.load.shares.tolist()},
        "placement": {"experts": None if c.placement_summary is None else _placement(c.placement_summary, c.placement),
                      "attention": attention_map(c, arch), "kv": kv_map(c)},
        "speculation": None if c.speculation is None else {
            "draft_tokens": c.speculation.draft_tokens, "acceptance": c.speculation.acceptance,
            "tokens_per_step": c.speculation.tokens_per_step, "source": c.speculation.source},
        "tpot_s": c.tpot_s,
    }


def _step(s: StepCost) -> dict[str, Any]:
    return {"phase": s.phase, "time_s": s.time_s, "tokens_per_device": s.tokens_per_device, "breakdown_s": s.breakdown_s,
            "overlap_hidden_s": s.overlap_hidden_s, "by_layer_type_s": s.by_layer_type_s, "load_source": s.load_source,
            "sources": list(s.sources),
            # which source priced each operator (a measured table: GPU, engine, version, table; the fitted model;
            # the roofline) and how far outside measured coverage its shape lay (1.0: inside)
            "operator_sources": [{"operator": name, "source": source, "beyond_coverage": beyond}
                                 for name, source, beyond in s.operator_sources],
            # pipeline stages (hwmodels.pipeline): each stage's time for one micro-batch, the transfers after them;
            # time_s is their cycle
            "pipeline": None if s.pipeline is None else {"stage_s": list(s.pipeline.stage_s),
                                                         "transfer_s": list(s.pipeline.transfer_s),
                                                         "latency_s": s.pipeline.latency_s,
                                                         "cycle_s": s.pipeline.cycle_s},
            # the batch split in turns: 2 with two-batch overlap; attention-FFN disaggregated, its ping-pong count
            "micro_batches": s.micro_batches}


def _placement(summary: PlacementSummary, placement: Placement | None) -> dict[str, Any]:
    """How the placement was made; with its maps where the candidate keeps them, deployable as is: phy2log is
    SGLang's `--init-expert-location` physical_to_logical_map (one row per model layer; slot p on device
    p // slots_per_device), log2phy deepseek-ai/EPLB's (-1 padded)."""
    s = summary
    return {"method": s.method, "slots_per_device": s.slots_per_device, "devices": s.devices, "fit_on": list(s.fit_on),
            "evaluated_on": s.evaluated_on, "mapping": s.mapping, "expert_load": s.expert_load,
            "step_cost": s.mean_imbalance, "mean_imbalance": s.mean_imbalance, "worst_layer_imbalance": s.worst_layer_imbalance,
            "objective": s.objective, "lp_bound": s.lp_bound, "gap": s.gap, "solver": s.solver, "seconds": s.seconds} | (
        {} if placement is None else {"phy2log": placement.phy2log.tolist(), "log2phy": placement.log2phy.tolist()})


# ------------------------------------------------------------------------------------------------- reading

def read_plan(path: str | Path, deployment: Deployment) -> Plan:
    """Read a plan.json file and check it was planned for `deployment`'s model and cluster."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise InputError("--plan", f"no file '{path}'", "give the plan.json that moeplan plan SPEC -o DIR wrote") from None
    except (OSError, ValueError) as e:  # a folder, no permission, not UTF-8, a path with a NUL character
        raise InputError("--plan", f"cannot read '{path}': {e}", "give a readable plan.json") from None
    if len(data) > MAX_PLAN_BYTES:
        raise InputError("--plan", f"'{path}' is larger than {MAX_PLAN_BYTES:,} bytes", _REPLAN)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}", _REPLAN) from None
    except RecursionError:
        raise InputError(str(path), "nests deeper than JSON can be read", _REPLAN) from None
    return plan_from_json(doc, deployment, str(path))


def plan_from_json(doc: Any, deployment: Deployment, source: str = "plan.json") -> Plan:
    """The Plan of a plan.json document for `deployment`; raises InputError naming the field when the document is
    malformed or was planned for another model or cluster."""
    d = deployment
    if not isinstance(doc, Mapping):
        raise InputError(source, f"holds a JSON {type(doc).__name__}, not a plan object", _REPLAN)
    r = _Reader(doc, source)
    version = doc.get("schema_version")
    if version != PLAN_SCHEMA_VERSION:
        raise InputError(f"{source}: schema_version", f"is {version!r}, this moeplan reads {PLAN_SCHEMA_VERSION}", _REPLAN)
    expected = {"model.name": d.model.name, "model.precision": d.precision.label(), "cluster.unit": d.cluster.unit.name,
                "cluster.device": d.cluster.device.name, "cluster.devices": d.cluster.num_devices}
    if r.at("serving", required=False) is not None:  # plans before the engine was written down have none
        expected |= {"serving.engine": d.serving.engine}
    if d.prefill_cluster is not None:
        expected |= {"cluster.prefill.unit": d.prefill_cluster.unit.name, "cluster.prefill.devices": d.prefill_cluster.num_devices}
    elif r.at("cluster.prefill", required=False) is not None:
        raise InputError(f"{source}: cluster.prefill", "the plan runs prefill on other hardware, the spec does not",
                         f"use the spec this plan was made for, or {_REPLAN}")
    for key, want in expected.items():
        got = r.at(key)
        if got != want:
            fix = f"pass --backend {got or 'fitted'}, the engine that priced it" if key == "serving.engine" else \
                "use the spec this plan was made for"
            raise InputError(f"{source}: {key}", f"is {got!r} but the spec has {want!r}", f"{fix}, or {_REPLAN}")
    rec = None if r.at("recommendation", required=False) is None else _read_recommendation(r, "recommendation", d, True)
    if rec is not None and not d.holds(rec.decode_devices, rec.prefill_devices):
        raise InputError(f"{source}: recommendation", f"uses {rec.devices} devices, more than the spec's cluster has "
                         f"({d.cluster.num_devices}" + (f" and {d.prefill_cluster.num_devices} for prefill)" if d.mixed else ")"),
                         _REPLAN)
    alternatives = tuple(_read_recommendation(r, f"alternatives.{i}", d, False) for i in range(r.count("alternatives")))
    frontier = tuple(_read_candidate(r, f"frontier.{i}", d, False) for i in range(r.count("frontier")))
    replays = () if r.at("replays", required=False) is None else tuple(
        _read_replay(r, f"replays.{i}") for i in range(r.count("replays")))
    return Plan(d, rec, frontier, r.int("candidates_scored", minimum=0), r.text("infeasible_reason", nullable=True),
                r.strings("assumptions"), r.number("search_seconds"), alternatives,
                r.text("infeasible_field", nullable=True), source, replays)


def _read_replay(r: _Reader, key: str) -> ReplayCheck:
    tpot = r.number(f"{key}.replayed_tpot_s", nullable=True)
    return ReplayCheck(r.choice(f"{key}.mode", Mode), r.int(f"{key}.devices"), r.number(f"{key}.usd_per_hour", nullable=True),
                       r.number(f"{key}.planned_ttft_s"), r.number(f"{key}.planned_tpot_s"),
                       r.number(f"{key}.replayed_ttft_s"), math.nan if tpot is None else tpot, r.int(f"{key}.requests"),
                       r.int(f"{key}.completed", minimum=0), r.flag(f"{key}.holds"), r.text(f"{key}.traffic"),
                       r.number(f"{key}.wall_s"))


def _read_recommendation(r: _Reader, key: str, d: Deployment, full: bool) -> Recommendation:
    mode = r.choice(f"{key}.mode", Mode)
    decode = _read_candidate(r, f"{key}.decode", d, full, Role.AGGREGATED if mode == Mode.AGGREGATED else Role.DECODE)
    prefill = None
    if mode == Mode.DISAGGREGATED:
        prefill = _read_candidate(r, f"{key}.prefill", d, full, Role.PREFILL)
    elif r.at(f"{key}.prefill", required=False) is not None:
        raise InputError(f"{r.source}: {key}.prefill", "is set in an aggregated plan", "expected null")
    rec = Recommendation(mode, decode, r.int(f"{key}.decode.instances"), prefill,
                         r.int(f"{key}.prefill.instances") if prefill else 0, r.number(f"{key}.ttft_s"),
                         r.number(f"{key}.tpot_s"), r.number(f"{key}.usd_per_hour", nullable=True),
                         r.number(f"{key}.usd_per_million_input_tokens", nullable=True),
                         r.number(f"{key}.usd_per_million_output_tokens", nullable=True), r.number(f"{key}.requests_per_s"),
                         r.fraction(f"{key}.decode_utilization"),
                         r.fraction(f"{key}.prefill_utilization") if prefill else None)
    if r.int(f"{key}.devices") != rec.devices:
        raise InputError(f"{r.source}: {key}.devices", f"is not the pools' {rec.devices} devices", _REPLAN)
    return rec


def _read_candidate(r: _Reader, key: str, d: Deployment, full: bool, role: Role | None = None) -> Candidate:
    """full: the recommendation's candidate, which carries its per-device loads and its placement's maps."""
    got = r.choice(f"{key}.role", Role)
    if role is not None and got != role:
        raise InputError(f"{r.source}: {key}.role", f"is {got!r}, expected {role.value!r}", _REPLAN)
    lay = f"{key}.layout"
    dp = r.int(f"{lay}.attention_dp")
    # plan.json files written before context parallelism have no context_parallel: theirs is 1
    cp = 1 if r.at(f"{lay}.context_parallel", required=False) is None else r.int(f"{lay}.context_parallel")
    if dp % cp or (cp > 1 and got != Role.PREFILL):
        raise InputError(f"{r.source}: {lay}.context_parallel", f"is {cp}: context parallelism splits a prefill "
                         f"pool's prompts over attention groups that divide its attention_dp ({dp})", _REPLAN)
    # nor ffn_devices, written since attention-FFN disaggregation: theirs is 0
    ffn = 0 if r.at(f"{lay}.ffn_devices", required=False) is None else r.int(f"{lay}.ffn_devices", minimum=0)
    if ffn and (got != Role.DECODE or cp > 1 or r.int(f"{lay}.pipeline_stages") > 1 or r.flag(f"{lay}.two_batch_overlap")):
        raise InputError(f"{r.source}: {lay}.ffn_devices", f"is {ffn}: attention-FFN disaggregation serves decode pools "
                         "of one pipeline stage, without two-batch overlap or context parallelism", _REPLAN)
    layout = Layout(tp=r.int(f"{lay}.attention_tp"), dp=dp, pp=r.int(f"{lay}.pipeline_stages"),
                    redundant_experts=r.int(f"{lay}.redundant_experts", minimum=0),
                    two_batch_overlap=r.flag(f"{lay}.two_batch_overlap"), cp=cp, ffn_devices=ffn)
    if layout.pp > d.model.num_layers:
        raise InputError(f"{r.source}: {lay}.pipeline_stages", f"is {layout.pp}, more than the model's "
                         f"{d.model.num_layers} layers", _REPLAN)
    if r.int(f"{lay}.expert_parallel") != layout.ep:
        raise InputError(f"{r.source}: {lay}.expert_parallel", f"is not {layout.ep} (attention_tp x attention_dp, or "
                         "ffn_devices where attention-FFN disaggregated)", _REPLAN)
    devices = r.int(f"{key}.instance_devices")
    if devices != layout.devices:
        raise InputError(f"{r.source}: {key}.instance_devices", f"is not the layout's {layout.devices} devices", _REPLAN)
    work = r.int(f"{key}.tokens_per_step_per_device" if got == Role.PREFILL else f"{key}.batch_per_device")
    r.number(f"{key}.step_s", positive=True)  # restated from steps[0]; read so a broken file says where
    steps = tuple(_read_step(r, f"{key}.steps.{i}") for i in range(r.count(f"{key}.steps", minimum=1)))
    perf = Performance(got, layout, r.number(f"{key}.tokens_per_s_per_device", positive=True),
                       r.number(f"{key}.tokens_per_s_per_user", positive=True), steps, _read_memory(r, key, layout, d),
                       r.number(f"{key}.prefill_share"))
    load = _read_load(r, f"{key}.expert_load_shares", layout, d) if full else None
    summary, placement = _read_placement(r, f"{key}.placement.experts", layout, d, full)
    speculation = None
    if r.at(f"{key}.speculation", required=False) is not None:
        draft, acceptance = r.int(f"{key}.speculation.draft_tokens"), r.fraction(f"{key}.speculation.acceptance")
        if got != Role.DECODE or draft > MAX_DRAFT_TOKENS:
            raise InputError(f"{r.source}: {key}.speculation", "only a decode pool drafts, at most "
                             f"{MAX_DRAFT_TOKENS} tokens", _REPLAN)
        speculation = Speculation(draft, acceptance, r.text(f"{key}.speculation.source"))
    return Candidate(got, devices, layout, work, perf, load, placement, summary, speculation)


def _read_step(r: _Reader, key: str) -> StepCost:
    breakdown = r.numbers(f"{key}.breakdown_s")
    if set(breakdown) != set(COMPONENTS):
        raise InputError(f"{r.source}: {key}.breakdown_s", f"has components {sorted(breakdown)}, not {list(COMPONENTS)}", _REPLAN)
    return StepCost(r.choice(f"{key}.phase", Phase), r.number(f"{key}.time_s", positive=True),
                    r.number(f"{key}.tokens_per_device"), breakdown, r.number(f"{key}.overlap_hidden_s", signed=True),
                    r.numbers(f"{key}.by_layer_type_s"), r.text(f"{key}.load_source"), r.strings(f"{key}.sources"),
                    _read_operator_sources(r, f"{key}.operator_sources"), _read_pipeline(r, f"{key}.pipeline"),
                    # plans written before it have none: read as 1 (it describes the step; nothing is recomputed from it)
                    r.int(f"{key}.micro_batches") if r.at(f"{key}.micro_batches", required=False) is not None else 1)


def _read_pipeline(r: _Reader, key: str) -> PipelineTimes | None:
    """Absent (a plan.json written before pipeline stages) or null without stages: None."""
    if r.at(key, required=False) is None:
        return None
    stages = r.count(f"{key}.stage_s", minimum=1)
    return PipelineTimes(tuple(r.number(f"{key}.stage_s.{i}") for i in range(stages)),
                         tuple(r.number(f"{key}.transfer_s.{i}") for i in range(r.count(f"{key}.transfer_s", minimum=0))))


def _read_operator_sources(r: _Reader, key: str) -> tuple[tuple[str, str, float], ...]:
    """Absent in a plan.json written before operators were labelled one by one: none."""
    if r.at(key, required=False) is None:
        return ()
    return tuple((r.text(f"{key}.{i}.operator"), r.text(f"{key}.{i}.source"),
                  r.number(f"{key}.{i}.beyond_coverage", positive=True)) for i in range(r.count(key, minimum=0)))


def _read_memory(r: _Reader, key: str, layout: Layout, d: Deployment) -> DeviceMemory:
    m = f"{key}.memory_per_device"
    return DeviceMemory(layout, layout.name(d.model.is_moe), r.numbers(f"{m}.weights_by_part_bytes"),
                        r.number(f"{m}.weight_bytes"), r.number(f"{m}.workspace_bytes"), r.number(f"{m}.usable_bytes"),
                        r.number(f"{m}.kv_capacity_bytes", signed=True), r.number(f"{m}.kv_bytes_per_sequence"),
                        r.int(f"{m}.context_tokens"), r.int(f"{m}.concurrent_sequences", minimum=0),
                        _optional_number(r, f"{m}.linear_state_bytes_per_sequence"),
                        _optional_number(r, f"{m}.ffn_device_bytes"))


def _optional_number(r: _Reader, key: str) -> float:
    """A key later plans added (plans written before it read as 0)."""
    return r.number(key) if r.at(key, required=False) is not None else 0.0


def _read_load(r: _Reader, key: str, layout: Layout, d: Deployment) -> ExpertLoad | None:
    if r.at(key, required=False) is None:
        return None
    shares = r.array(f"{key}.shares", float)
    if shares.shape != (len(d.model.moe_layers), layout.ep) or (shares < 0).any():
        raise InputError(f"{r.source}: {key}.shares", f"has shape {list(shares.shape)}; the layout needs "
                         f"[{len(d.model.moe_layers)}, {layout.ep}] non-negative shares", _REPLAN)
    return ExpertLoad(shares, r.text(f"{key}.source"))


def _read_placement(r: _Reader, key: str, layout: Layout, d: Deployment,
                    full: bool) -> tuple[PlacementSummary | None, Placement | None]:
    if r.at(key, required=False) is None or not d.model.is_moe:
        return None, None
    arch = d.model
    slots = arch.moe.num_experts + layout.redundant_experts
    slots_per_device = r.int(f"{key}.slots_per_device")
    if slots_per_device * layout.ep != slots:
        raise InputError(f"{r.source}: {key}.slots_per_device", f"is {slots_per_device}; the layout holds {slots} slots over "
                         f"{layout.ep} devices", _REPLAN)
    phy2log = _read_phy2log(r, key, layout, d, slots_per_device) if full else None
    summary = PlacementSummary(r.text(f"{key}.method"), slots_per_device, r.int(f"{key}.devices"), r.strings(f"{key}.fit_on"),
                               r.text(f"{key}.evaluated_on"), r.text(f"{key}.mapping"), r.text(f"{key}.expert_load"),
                               r.number(f"{key}.mean_imbalance"), r.number(f"{key}.worst_layer_imbalance"),
                               r.number(f"{key}.objective", nullable=True), r.number(f"{key}.lp_bound", nullable=True),
                               r.number(f"{key}.gap", nullable=True, signed=True), r.text(f"{key}.solver"),
                               r.number(f"{key}.seconds"))
    if phy2log is None:
        return summary, None
    return summary, build_placement(phy2log, arch.moe.num_experts, slots_per_device, summary.method, summary.seconds,
                                    summary.objective, summary.lp_bound, summary.solver)


def _read_phy2log(r: _Reader, key: str, layout: Layout, d: Deployment, slots_per_device: int) -> np.ndarray:
    """The placement's phy2log [layers, slots], checked against the model and layout (dense layers route nothing:
    a row of theirs that does not hold every expert is replaced by one that does)."""
    arch = d.model
    slots = arch.moe.num_experts + layout.redundant_experts
    phy2log = r.array(f"{key}.phy2log", np.int64)
    if phy2log.shape != (arch.num_layers, slots):
        raise InputError(f"{r.source}: {key}.phy2log", f"has shape {list(phy2log.shape)} with {slots_per_device} slots per "
                         f"device; the layout needs [{arch.num_layers}, {slots}] over {layout.ep} devices", _REPLAN)
    if phy2log.min() < 0 or phy2log.max() >= arch.moe.num_experts:
        raise InputError(f"{r.source}: {key}.phy2log", f"names experts outside 0..{arch.moe.num_experts - 1}", _REPLAN)
    every = np.arange(slots) % arch.moe.num_experts
    rows = []
    for layer in range(arch.num_layers):
        holds_all = len(np.unique(phy2log[layer])) == arch.moe.num_experts
        if layer in arch.moe_layers and not holds_all:
            raise InputError(f"{r.source}: {key}.phy2log[{layer}]", "leaves an expert without a slot", _REPLAN)
        rows.append(phy2log[layer] if holds_all else every)
    return np.stack(rows)


class _Reader:
    """Typed, checked reads of a plan.json document by dotted path (list items by index: `frontier.3.step_s`)."""

    def __init__(self, doc: Mapping, source: str):
        self.doc, self.source = doc, source

    def _fail(self, key: str, problem: str):
        raise InputError(f"{self.source}: {key}", problem, _REPLAN)

    def at(self, key: str, required: bool = True) -> Any:
        node: Any = self.doc
        for part in key.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            elif required:
                self._fail(key, "missing")
            else:
                return None
        return node

    def int(self, key: str, minimum: int = 1) -> int:
        value = self.at(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self._fail(key, f"is {value!r}, not an integer >= {minimum}")
        return value

    def number(self, key: str, positive: bool = False, nullable: bool = False, signed: bool = False) -> float | None:
        value = self.at(key, required=not nullable)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (positive and not value > 0) or (not signed and not positive and value < 0):
            self._fail(key, f"is {value!r}, not a {'positive' if positive else 'finite'} number")
        return float(value)

    def fraction(self, key: str) -> float:
        value = self.number(key, positive=True)
        if value > 1.0:
            self._fail(key, f"is {value!r}, above 1 (a pool is never planned past its capacity)")
        return value

    def numbers(self, key: str) -> dict[str, float]:
        value = self.at(key)
        if not isinstance(value, Mapping):
            self._fail(key, f"is {value!r}, not an object of numbers")
        return {k: self.number(f"{key}.{k}", signed=True) for k in value}

    def text(self, key: str, nullable: bool = False) -> str:
        value = self.at(key, required=not nullable)
        if value is None and nullable:
            return ""
        if not isinstance(value, str):
            self._fail(key, f"is {value!r}, not a string")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        return tuple(self.text(f"{key}.{i}") for i in range(self.count(key, minimum=0)))

    def flag(self, key: str) -> bool:
        value = self.at(key)
        if not isinstance(value, bool):
            self._fail(key, f"is {value!r}, not true or false")
        return value

    def choice(self, key: str, enum_type):
        value = self.at(key)
        if value not in {m.value for m in enum_type}:
            self._fail(key, f"is {value!r}, expected one of {', '.join(m.value for m in enum_type)}")
        return enum_type(value)

    def count(self, key: str, minimum: int = 0) -> int:
        value = self.at(key)
        if not isinstance(value, list) or len(value) < minimum:
            self._fail(key, f"is {str(value)[:40]!r}, not a list of at least {minimum}")
        return len(value)

    def array(self, key: str, dtype) -> np.ndarray:
        try:
            array = np.asarray(self.at(key), dtype=dtype)
        except (TypeError, ValueError):
            self._fail(key, "is not a [rows][columns] list of numbers")
        if array.ndim != 2:
            self._fail(key, "is not a [rows][columns] list of numbers")
        return array
