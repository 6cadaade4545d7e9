"""The Plan the simulator replays: plain typed data built from a plan.json document and the Deployment
(spec) it was planned for. The simulator reads plans, never the planner's search (DESIGN.md section 2).

plan.json (planner/plan_json.py) holds `recommendation.mode` ("disaggregated": a prefill pool and a
decode pool; "aggregated": instances that prefill and decode, `prefill` null) and per role the layout,
the instance size and count, the batch (decode) or tokens per step (prefill) the planner chose, its
predicted step time and the expert placement it was scored with (`placement`: phy2log per model layer,
slot p on device p // slots_per_device; null when the plan had no routing statistics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hwmodels.deployment import Deployment
from hwmodels.errors import InputError
from hwmodels.layout import Layout
from planner.placement import Placement, build_placement

PLAN_SCHEMA_VERSION = 1
_REPLAN = "plan the spec again (moeplan plan SPEC -o DIR) and pass that plan.json"


@dataclass(frozen=True)
class RolePlan:
    """One pool of identical instances; each instance is one expert-parallel group stepping in lockstep.

    role: "prefill", "decode" or "aggregated" (prefill and decode on the same devices).
    batch_per_device: the running sequences per device the planner chose (decode, aggregated): the
      engine's max-running-requests; None for a prefill pool.
    chunk_tokens_per_device: prompt tokens per device in one step (chunked prefill); for a decode pool,
      the chunk it recomputes a preempted sequence's KV with.
    predicted_step_s: the planner's step time at its operating point, for the report.
    placement: the plan's expert placement for this role, None where the plan has none.
    """

    role: str
    instances: int
    layout: Layout
    batch_per_device: int | None
    chunk_tokens_per_device: int
    predicted_step_s: float
    placement: Placement | None
    placement_label: str

    @property
    def instance_devices(self) -> int:
        return self.layout.devices

    @property
    def devices(self) -> int:
        return self.instances * self.layout.devices


@dataclass(frozen=True, eq=False)
class Plan:
    """A deployment (model, precision, cluster, workload, SLOs, price) and the pools that serve it.
    decode: the decode pool, or the aggregated instances in aggregated mode; prefill: None when aggregated."""

    deployment: Deployment
    mode: str
    decode: RolePlan
    prefill: RolePlan | None
    source: str

    @property
    def roles(self) -> tuple[RolePlan, ...]:
        return (self.decode,) if self.prefill is None else (self.prefill, self.decode)

    @property
    def devices(self) -> int:
        return sum(r.devices for r in self.roles)

    def describe(self) -> str:
        is_moe = self.deployment.model.is_moe
        parts = [f"{r.instances} x {r.role} [{r.instance_devices} devices, {r.layout.name(is_moe)}"
                 + (f", batch {r.batch_per_device}/device" if r.batch_per_device else "")
                 + (f", {r.chunk_tokens_per_device} prompt tokens/device/step" if r.role != "decode" else "") + "]"
                 for r in self.roles]
        return f"{self.mode}, {self.devices} x {self.deployment.cluster.device.name}: " + " + ".join(parts)


def read_plan(path: str | Path, deployment: Deployment) -> Plan:
    """Read a plan.json file and check it was planned for `deployment`'s model and cluster."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("--plan", f"no file '{path}'", "give the plan.json that moeplan plan SPEC -o DIR wrote") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError("--plan", f"cannot read '{path}': {e}", "give a readable plan.json") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}", _REPLAN) from None
    return plan_from_json(doc, deployment, str(path))


def plan_from_json(doc: Any, deployment: Deployment, source: str = "plan.json") -> Plan:
    """The Plan of a plan.json document (as plan_json writes it) for `deployment`; raises InputError naming
    the field when the document is malformed or was planned for another model or cluster."""
    d = deployment
    if not isinstance(doc, Mapping):
        raise InputError(source, f"holds a JSON {type(doc).__name__}, not a plan object", _REPLAN)
    version = doc.get("schema_version")
    if version != PLAN_SCHEMA_VERSION:
        raise InputError(f"{source}: schema_version", f"is {version!r}, this moeplan reads {PLAN_SCHEMA_VERSION}", _REPLAN)
    expected = {"model.name": d.model.name, "model.precision": d.precision.label(), "cluster.unit": d.cluster.unit.name,
                "cluster.device": d.cluster.device.name, "cluster.devices": d.cluster.num_devices}
    for key, want in expected.items():
        got = _field(doc, key, source)
        if got != want:
            raise InputError(f"{source}: {key}", f"is {got!r} but the spec has {want!r}",
                             f"simulate with the spec this plan was made for, or {_REPLAN}")
    rec = _field(doc, "recommendation", source, required=False)
    if rec is None:
        reason = doc.get("infeasible_reason") or "no deployment met the SLOs"
        raise InputError(f"{source}: recommendation", f"is null ({reason})", "relax the SLOs or grow the cluster, then plan again")
    mode = _field(doc, "recommendation.mode", source)
    if mode not in ("disaggregated", "aggregated"):
        raise InputError(f"{source}: recommendation.mode", f"is {mode!r}", "expected disaggregated or aggregated")
    decode = _role(doc, "recommendation.decode", "aggregated" if mode == "aggregated" else "decode", d, source)
    prefill = None
    if mode == "disaggregated":
        prefill = _role(doc, "recommendation.prefill", "prefill", d, source)
    elif _field(doc, "recommendation.prefill", source, required=False) is not None:
        raise InputError(f"{source}: recommendation.prefill", "is set in an aggregated plan", "expected null")
    used = decode.devices + (prefill.devices if prefill else 0)
    if used > d.cluster.num_devices:
        raise InputError(f"{source}: recommendation", f"uses {used} devices, the spec's cluster has {d.cluster.num_devices}",
                         _REPLAN)
    return Plan(d, mode, decode, prefill, source)


def _field(doc: Mapping, dotted: str, source: str, required: bool = True) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if required:
                raise InputError(f"{source}: {dotted}", "missing", _REPLAN)
            return None
        node = node[part]
    return node


def _int(doc: Mapping, dotted: str, source: str, minimum: int = 1) -> int:
    value = _field(doc, dotted, source)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{source}: {dotted}", f"is {value!r}, not an integer >= {minimum}", _REPLAN)
    return value


def _role(doc: Mapping, key: str, role: str, d: Deployment, source: str) -> RolePlan:
    got = _field(doc, f"{key}.role", source)
    if got != role:
        raise InputError(f"{source}: {key}.role", f"is {got!r}, expected {role!r}", _REPLAN)
    lay = f"{key}.layout"
    two_batch = _field(doc, f"{lay}.two_batch_overlap", source)
    if not isinstance(two_batch, bool):
        raise InputError(f"{source}: {lay}.two_batch_overlap", f"is {two_batch!r}, not true or false", _REPLAN)
    layout = Layout(tp=_int(doc, f"{lay}.attention_tp", source), dp=_int(doc, f"{lay}.attention_dp", source),
                    pp=_int(doc, f"{lay}.pipeline_stages", source),
                    redundant_experts=_int(doc, f"{lay}.redundant_experts", source, minimum=0), two_batch_overlap=two_batch)
    if layout.pp != 1:
        raise InputError(f"{source}: {lay}.pipeline_stages", f"is {layout.pp}; the step model simulates pp = 1 layouts only",
                         "plan a layout without pipeline stages")
    if _int(doc, f"{lay}.expert_parallel", source) != layout.ep:
        raise InputError(f"{source}: {lay}.expert_parallel", f"is not attention_tp x attention_dp = {layout.ep}", _REPLAN)
    if _int(doc, f"{key}.instance_devices", source) != layout.devices:
        raise InputError(f"{source}: {key}.instance_devices", f"is not the layout's {layout.devices} devices", _REPLAN)
    instances = _int(doc, f"{key}.instances", source)
    step_s = _field(doc, f"{key}.step_s", source)
    if isinstance(step_s, bool) or not isinstance(step_s, (int, float)) or not step_s > 0:
        raise InputError(f"{source}: {key}.step_s", f"is {step_s!r}, not a positive number", _REPLAN)
    if role == "prefill":
        batch, chunk = None, _int(doc, f"{key}.tokens_per_step_per_device", source)
    else:  # decode pools recompute preempted sequences, aggregated instances prefill, in the spec's chunks
        batch, chunk = _int(doc, f"{key}.batch_per_device", source), d.serving.tokens_per_step
    placement, label = _placement(_field(doc, f"{key}.placement", source, required=False), f"{key}.placement", layout, d,
                                  source)
    return RolePlan(role, instances, layout, batch, chunk, float(step_s), placement, label)


def _placement(doc: Any, key: str, layout: Layout, d: Deployment, source: str) -> tuple[Placement | None, str]:
    if doc is None or not d.model.is_moe:
        return None, ""
    if not isinstance(doc, Mapping):
        raise InputError(f"{source}: {key}", f"is a JSON {type(doc).__name__}, not a placement object", _REPLAN)
    arch = d.model
    slots = arch.moe.num_experts + layout.redundant_experts
    slots_per_device = _int(doc, "slots_per_device", f"{source}: {key}")
    try:
        phy2log = np.asarray(_field(doc, "phy2log", f"{source}: {key}"), dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: {key}.phy2log", "is not a [layers][slots] integer list", _REPLAN) from None
    if phy2log.shape != (arch.num_layers, slots) or slots_per_device * layout.ep != slots:
        raise InputError(f"{source}: {key}.phy2log", f"has shape {list(phy2log.shape)} with {slots_per_device} slots per device; "
                         f"the layout needs [{arch.num_layers}, {slots}] over {layout.ep} devices", _REPLAN)
    if phy2log.min() < 0 or phy2log.max() >= arch.moe.num_experts:
        raise InputError(f"{source}: {key}.phy2log", f"names experts outside 0..{arch.moe.num_experts - 1}", _REPLAN)
    for layer in arch.moe_layers:
        if len(np.unique(phy2log[layer])) != arch.moe.num_experts:
            raise InputError(f"{source}: {key}.phy2log[{layer}]", "leaves an expert without a slot", _REPLAN)
    method = str(doc.get("method", "unnamed"))
    fit_on = doc.get("fit_on") or []
    label = f"{method} placement from the plan" + (f" (fitted on {', '.join(map(str, fit_on))})" if fit_on else "")
    # dense layers carry placeholder rows; build_placement needs every expert in every row
    rows = np.where(np.isin(np.arange(arch.num_layers), arch.moe_layers)[:, None], phy2log,
                    np.arange(slots)[None, :] % arch.moe.num_experts)
    return build_placement(rows, arch.moe.num_experts, slots_per_device, method, 0.0), label
