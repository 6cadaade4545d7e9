"""Reproduce published deployments from moeplan's own catalogs and models: predicted vs published.

Each scenario of a deployments YAML (schema of catalogs/published/deployments.yaml) is rebuilt from
the catalog model, device and cluster unit it names. Inputs the source does not state are completed
the way a serving engine would run them, and every such completion is listed in `assumptions`.
A scenario this model cannot express is reported with the reason, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Mapping

import yaml

from catalogs import CATALOG_DIR
from hwmodels import catalog
from hwmodels.errors import InputError
from hwmodels.hardware import Cluster, make_cluster
from hwmodels.layout import Layout
from hwmodels.model_arch import ModelArch
from hwmodels.precision import PrecisionPlan, default_plan
from hwmodels.step import ExpertLoad
from hwmodels.serving import (Performance, Speculation, aggregated_performance, decode_performance,
                              largest_batch_that_fits, lockstep_aggregated_performance, prefill_performance)

DEFAULT_DEPLOYMENTS = CATALOG_DIR / "published" / "deployments.yaml"
# SGLang's default --max-prefill-tokens: the most prompt tokens one prefill step takes per device.
SGLANG_MAX_PREFILL_TOKENS = 16384
HBM_UTILIZATION = 0.90  # vLLM's default gpu_memory_utilization (the spec default too)


@dataclass(frozen=True)
class ValidationRow:
    id: str
    metric: str
    published: float
    predicted: float | None  # None: not modelled (see reason)
    assumptions: tuple[str, ...] = field(default=())
    reason: str = ""
    source: str = ""

    @property
    def error(self) -> float | None:
        """Relative, signed: (predicted - published) / published."""
        return None if self.predicted is None else (self.predicted - self.published) / self.published

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "metric": self.metric, "predicted": self.predicted, "published": self.published,
                "error": self.error, "assumptions": list(self.assumptions), "not_modelled": self.reason or None,
                "source": self.source}


def load_deployments(path: str | Path | None = None) -> list[Mapping[str, Any]]:
    path = Path(path) if path else DEFAULT_DEPLOYMENTS
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("--deployments", f"no file '{path}'", f"give a deployments YAML like {DEFAULT_DEPLOYMENTS}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(str(path), f"malformed YAML{f' at line {mark.line + 1}' if mark else ''}", "fix the YAML syntax") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("deployments"), list):
        raise InputError(f"{path}: deployments", "missing or not a list", "follow the schema of catalogs/published/deployments.yaml")
    return raw["deployments"]


def validate(path: str | Path | None = None) -> list[ValidationRow]:
    return [validate_one(d) for d in load_deployments(path)]


def summary(rows: list[ValidationRow]) -> dict[str, Any]:
    errors = [abs(r.error) for r in rows if r.error is not None]
    return {
        "scenarios": len(rows),
        "modelled": len(errors),
        "median_abs_error": median(errors) if errors else None,
        "max_abs_error": max(errors) if errors else None,
        "not_modelled": [r.id for r in rows if r.predicted is None],
    }


def _cluster(hardware: str, devices: int | None, where: str) -> Cluster:
    units = catalog.unit_names()
    if hardware in units:
        unit = catalog.load_unit(hardware)
    elif hardware in catalog.device_names():
        unit = catalog.load_unit(catalog.units_for_device(hardware)[0])
    else:
        unit = next((catalog.load_unit(u) for u in units if hardware.endswith(u)), None)
        if unit is None:
            raise InputError(f"{where}.hardware", f"unknown hardware '{hardware}'", "name a catalog device or cluster unit")
    return make_cluster(unit, devices=devices or unit.devices)


def _parallel(spec: str | None, prefix: str) -> int | None:
    if spec is None:
        return None
    m = re.fullmatch(rf"{prefix}(\d+)", str(spec))
    if not m:
        raise InputError(f"layout.{prefix}", f"cannot read '{spec}'", f"write it as {prefix}N")
    return int(m.group(1))


@dataclass(frozen=True)
class Scenario:
    """A published scenario rebuilt from the catalogs: what the step model needs, and what was assumed."""

    arch: ModelArch
    plan: PrecisionPlan
    cluster: Cluster
    layout: Layout
    load: ExpertLoad | None
    assumptions: tuple[str, ...]


def build_scenario(d: Mapping[str, Any]) -> Scenario:
    """Model, precision, cluster, layout and expert load of a deployments-schema entry."""
    did = str(d.get("id", "?"))
    layout_raw = d.get("layout", {})
    assumptions: list[str] = []
    arch = catalog.load_model(d["model"], f"{did}.model")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    if d.get("precision"):  # optional: formats that differ from the checkpoint's, e.g. a W8A8 deployment
        plan = plan.with_overrides(d["precision"], f"{did}.precision")
    ep = _parallel(layout_raw.get("experts"), "ep")
    dp = _parallel(layout_raw.get("attention", f"dp{ep}" if ep else None), "dp") or 1
    devices = d.get("devices") or ep or dp
    if not d.get("devices"):
        assumptions.append(f"devices not stated: {devices} (the EP group)")
    cluster = _cluster(d["hardware"], devices, did)
    redundant = int(layout_raw.get("redundant_experts", 0))
    layout = Layout(tp=devices // dp, dp=dp, redundant_experts=redundant, two_batch_overlap=bool(layout_raw.get("two_batch_overlap", False)))
    load = None
    skew = catalog.routing_skew(d["model"])
    load_phase = "prefill" if d["phase"] == "prefill" else "decode"  # an aggregated deployment mostly decodes
    eplb = layout_raw.get("eplb")
    routing = d.get("routing")
    if routing not in (None, "balanced"):
        raise InputError(f"{did}.routing", f"unknown routing '{routing}'", "write 'balanced' or leave it out")
    if eplb is None and routing is None:
        assumptions.append("EPLB not stated: assumed off (contiguous expert placement)")
    if routing == "balanced":
        assumptions.append("every expert equally loaded, as the source measured")
    elif skew is None:
        assumptions.append("no published routing skew for this model: uniform expert load (optimistic)")
    else:
        load = (ExpertLoad.measured_eplb if eplb else ExpertLoad.measured_contiguous)(skew, load_phase, layout.ep, len(arch.moe_layers))
        assumptions.append(load.source)
    return Scenario(arch, plan, cluster, layout, load, tuple(assumptions))


def validate_one(d: Mapping[str, Any]) -> ValidationRow:
    did = str(d.get("id", "?"))
    metric = d["metric"]["name"]
    published = float(d["metric"]["value"])
    workload = d.get("workload", {})
    base = dict(id=did, metric=metric, published=published, source=d.get("source", ""))
    sc = build_scenario(d)
    arch, plan, cluster, layout, load = sc.arch, sc.plan, sc.cluster, sc.layout, sc.load
    assumptions = list(sc.assumptions)
    phase, devices = d["phase"], layout.devices
    per = cluster.unit.devices_per_node if metric.endswith("_per_node") else 1

    if phase == "prefill":
        prompt = int(workload["input_tokens"])
        tokens = workload.get("tokens_per_device_per_step")
        if tokens is None:
            tokens = SGLANG_MAX_PREFILL_TOKENS
            assumptions.append(f"tokens per device per step not stated: {tokens} (SGLang's default --max-prefill-tokens)")
        perf = prefill_performance(arch, plan, cluster, layout, int(tokens), prompt, HBM_UTILIZATION, load)
    elif phase == "decode":
        context = workload.get("kv_tokens_per_sequence")
        if context is None:
            context = int(workload.get("input_tokens", 0)) + int(workload.get("output_tokens", 0))
            if not context:
                return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions),
                                     reason="neither the KV length nor the input length is stated")
            assumptions.append(f"KV tokens per sequence not stated: {context} (input + output tokens)")
        batch = workload.get("batch_per_device")
        slo = d.get("slo", {})
        speculation = _speculation(workload.get("speculative"), did)
        if speculation:
            assumptions.append(f"MTP speculative decoding: {speculation.draft_tokens} draft token(s) per step, "
                               f"{speculation.tokens_per_step:.2f} tokens accepted per step")
        if batch is None and "tpot_s" in slo:
            perf = _largest_batch_meeting_tpot(arch, plan, cluster, layout, int(context), float(slo["tpot_s"]), load,
                                               speculation)
            if perf is None:
                return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions),
                                     reason=f"no batch meets TPOT {slo['tpot_s']} s")
            assumptions.append(f"batch not stated: {perf.steps[0].tokens_per_device:.0f} per device, the largest meeting TPOT {slo['tpot_s']} s")
        else:
            if batch is None:
                batch = largest_batch_that_fits(arch, plan, cluster, layout, int(context), HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS,
                                                mtp_module=speculation is not None)
                assumptions.append(f"batch not stated: {batch} per device, the largest that fits in KV memory")
            perf = decode_performance(arch, plan, cluster, layout, int(batch), float(context), HBM_UTILIZATION,
                                      SGLANG_MAX_PREFILL_TOKENS, load, speculation)
    elif phase == "aggregated":
        batch = workload.get("max_batch_per_device") or workload.get("batch_per_device")
        concurrency = workload.get("concurrency")
        if concurrency:
            batch = min(int(batch or 1 << 30), int(concurrency) // devices)
        tokens = workload.get("tokens_per_device_per_step", 8192)
        if "tokens_per_device_per_step" not in workload:
            assumptions.append(f"tokens per step not stated: {tokens} (TensorRT-LLM's default max_num_tokens)")
        lengths = int(workload["input_tokens"]), int(workload["output_tokens"])
        if concurrency and int(concurrency) >= batch * layout.dp:
            assumptions.append(f"closed loop of {concurrency} equal-length requests keeps every rank's {batch} slots full: "
                               "all ranks admit and prefill in the same steps")
            perf = lockstep_aggregated_performance(arch, plan, cluster, layout, int(batch), *lengths, HBM_UTILIZATION,
                                                   int(tokens), load)
        else:
            perf = aggregated_performance(arch, plan, cluster, layout, int(batch), *lengths, HBM_UTILIZATION, int(tokens), load)
    else:
        return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions), reason=f"phase '{phase}' is not modelled")
    if not perf.memory.fits:
        assumptions.append("the stated batch does not fit moeplan's memory model")
    return ValidationRow(**base, predicted=perf.tokens_per_s_per_device * per, assumptions=tuple(assumptions))


def _speculation(raw: Any, did: str) -> Speculation | None:
    if raw is None:
        return None
    where = f"{did}.workload.speculative"
    try:
        return Speculation(int(raw["draft_tokens"]), float(raw["acceptance"]))
    except (TypeError, KeyError, ValueError):
        raise InputError(where, f"cannot read {raw!r}", "write {draft_tokens: N >= 1, acceptance: 0..1}") from None


def _largest_batch_meeting_tpot(arch, plan, cluster, layout, context: int, tpot_s: float, load,
                                speculation: Speculation | None) -> Performance | None:
    """Binary search on the decode batch: step time grows with the batch."""
    limit = largest_batch_that_fits(arch, plan, cluster, layout, context, HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS,
                                    mtp_module=speculation is not None)
    lo, hi, best = 1, max(limit, 1), None
    while lo <= hi:
        mid = (lo + hi) // 2
        perf = decode_performance(arch, plan, cluster, layout, mid, float(context), HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS,
                                  load, speculation)
        if 1.0 / perf.tokens_per_s_per_user <= tpot_s:
            best, lo = perf, mid + 1
        else:
            hi = mid - 1
    return best
