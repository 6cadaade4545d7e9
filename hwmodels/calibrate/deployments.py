"""Reproduce published deployments from moeplan's own catalogs and models: predicted vs published.

Each scenario of a deployments YAML (schema: `DeploymentEntry`; catalogs/published/deployments.yaml) is
validated at load (a malformed entry is one error naming its field) and rebuilt from the catalog model,
device and cluster unit it names. Inputs the source does not state are completed the way a serving engine
would run them, and every such completion is listed in `assumptions`. A scenario this model cannot express
is reported with the reason, never dropped. These are end-to-end measurements: validation, never fitting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catalogs import CATALOG_DIR
from hwmodels import catalog, safe_yaml
from hwmodels.attention_kinds import Kind
from hwmodels.errors import InputError, validation_error
from hwmodels.expert_load import ExpertLoad
from hwmodels.hardware import Cluster, instance_cluster
from hwmodels.layout import Layout
from hwmodels.memory import sliding_kv_note
from hwmodels.precision import default_plan
from hwmodels.serving import (Performance, Speculation, aggregated_performance, decode_performance,
                              largest_batch_that_fits, lockstep_aggregated_performance, offline_performance,
                              prefill_performance)
from hwmodels.roles import Phase, Role
from hwmodels.step import StepContext
from hwmodels.calibrate import trtllm_bench
from hwmodels.calibrate.engine_choice import FITTED
from hwmodels.calibrate.operator_costs import costs_for, fitted_costs

DEFAULT_DEPLOYMENTS = CATALOG_DIR / "published" / "deployments.yaml"
# every published set the catalog restates: the validation set, and TensorRT-LLM's perf-overview runs that
# ../shared/data/published/deployments-trtllm-perf-overview.yaml leaves out
PUBLISHED_SETS = (DEFAULT_DEPLOYMENTS, CATALOG_DIR / "published" / "deployments-trtllm-perf-overview-rest.yaml")
# SGLang's default --max-prefill-tokens: the most prompt tokens one prefill step takes per device.
SGLANG_MAX_PREFILL_TOKENS = 16384
HBM_UTILIZATION = 0.90  # vLLM's default gpu_memory_utilization (the spec default too)
TRTLLM_MAX_NUM_TOKENS = 8192  # TensorRT-LLM's default max_num_tokens
MAX_DEVICES = 100_000  # the largest GPU clusters built (training) are about this size; a spec has the same bound


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayoutEntry(_Strict):
    attention: str | None = Field(None, description="dpN (N data-parallel attention groups); default: the EP size")
    experts: str | None = Field(None, description="epN: experts over N devices")
    redundant_experts: int = Field(0, ge=0, description="EPLB's redundant expert slots over the EP group")
    two_batch_overlap: bool = False
    eplb: bool | None = Field(None, description="whether the deployment balanced experts with EPLB (absent: not stated)")


class SpeculativeEntry(_Strict):
    draft_tokens: int = Field(ge=1, description="MTP draft tokens per sequence per step")
    acceptance: float = Field(ge=0, le=1, description="probability a draft token is accepted")


class ScenarioEntry(_Strict):
    """What rebuilds a scenario from the catalogs (shared by deployments and published ablations)."""

    id: str
    model: str = Field(description="catalog model name")
    precision: dict[str, str] = Field(default_factory=dict, description="formats that differ from the checkpoint's")
    hardware: str = Field(description="catalog device or cluster unit")
    phase: str = Field(description="prefill, decode or aggregated (anything else is reported as not modelled)")
    devices: int | None = Field(None, gt=0, le=MAX_DEVICES)
    layout: LayoutEntry = Field(default_factory=LayoutEntry)
    routing: Literal["balanced"] | None = Field(None, description="balanced: the source measured with every expert equally loaded")


class WorkloadEntry(_Strict):
    input_tokens: int | None = Field(None, gt=0)
    output_tokens: int | None = Field(None, gt=0)
    batch_per_device: int | None = Field(None, gt=0)
    max_batch_per_device: int | None = Field(None, gt=0)
    kv_tokens_per_sequence: int | None = Field(None, gt=0)
    tokens_per_device_per_step: int | None = Field(None, gt=0)
    concurrency: int | None = Field(None, gt=0)
    requests: int | None = Field(None, gt=0, le=1_000_000, description="an offline benchmark (trtllm-bench throughput): this many "
                                 "equal-length requests queued at the start, throughput over the whole run")
    speculative: SpeculativeEntry | None = None
    cuda_graph_batch_sizes: list[Annotated[int, Field(gt=0, le=1 << 20)]] | None = Field(
        None, max_length=256, description="the engine's CUDA-graph batch sizes per attention rank, padding on "
                                          "(TensorRT-LLM cuda_graph_config batch_sizes with enable_padding)")


class MetricEntry(_Strict):
    name: str = Field(description="input_tokens_per_s_per_node, output_tokens_per_s_per_device, ...")
    value: float = Field(gt=0)


class EngineEntry(_Strict):
    name: str
    version: str | None = None


class SLOEntry(_Strict):
    tpot_s: float | None = Field(None, gt=0)
    ttft_s: float | None = Field(None, gt=0)


class DeploymentEntry(ScenarioEntry):
    workload: WorkloadEntry = Field(default_factory=WorkloadEntry)
    slo: SLOEntry = Field(default_factory=SLOEntry)
    metric: MetricEntry
    engine: EngineEntry | None = None
    source: str = ""


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


def load_entries(path: str | Path | None, entry: type[ScenarioEntry] = DeploymentEntry,
                 key: str = "deployments") -> list[ScenarioEntry]:
    """The `key` list of a YAML file, each item validated as `entry`; a malformed one is one InputError naming it."""
    path = Path(path) if path else DEFAULT_DEPLOYMENTS
    text = safe_yaml.read_text(path, "--deployments", f"give a deployments YAML like {DEFAULT_DEPLOYMENTS}")
    raw = safe_yaml.load(text, str(path))
    if not isinstance(raw, dict) or not isinstance(raw.get(key), list):
        raise InputError(f"{path}: {key}", "missing or not a list", "follow the schema of catalogs/published/deployments.yaml")
    out = []
    for i, item in enumerate(raw[key]):
        name = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else f"{key}[{i}]"
        try:
            out.append(entry.model_validate(item))
        except ValidationError as e:
            raise validation_error(e, f"{path}: {name}", entry, "add it (see catalogs/published/deployments.yaml)") from None
    return out


def validate(path: str | Path | None = None, backend: EngineEntry | None = None) -> list[ValidationRow]:
    """Every published deployment of the file, each priced by `backend` where given, else by its own engine. An entry
    that cannot be built (a layout the step model does not price) is a row with the reason, never an aborted run."""
    rows = []
    for d in load_entries(path):
        d, noted = _amended(d)
        try:
            row = validate_one(d, backend)
            rows.append(replace(row, assumptions=noted + row.assumptions))
        except InputError as e:
            rows.append(ValidationRow(d.id, d.metric.name, d.metric.value, None, noted, reason=str(e), source=d.source))
    return rows


def _amended(d: DeploymentEntry) -> tuple[DeploymentEntry, tuple[str, ...]]:
    """The entry with what it leaves out and its source states (catalogs/published/amendments.yaml), and a note
    saying so; an entry keeps what it states (each part of its precision map, each of its workload fields)."""
    amendment = catalog.published_amendments().get(d.id)
    if amendment is None:
        return d, ()
    sources = amendment["source"] if isinstance(amendment["source"], list) else [amendment["source"]]
    cited = f"as its source states ({'; '.join(sources)})"
    update, filled = {}, []
    precision = {part: name for part, name in amendment.get("precision", {}).items() if part not in (d.precision or {})}
    if precision:
        update["precision"] = dict(d.precision or {}) | precision
        filled.append("precision " + ", ".join(f"{part} {name}" for part, name in precision.items()))
    stated = d.workload.model_dump(exclude_none=True)
    workload = {k: v for k, v in amendment.get("workload", {}).items() if k not in stated}
    if workload:  # validated as the entry's own fields are
        update["workload"] = WorkloadEntry.model_validate(stated | workload)
        filled += [f"{k} {v}" for k, v in workload.items()]
    if not filled:
        return d, ()
    return d.model_copy(update=update), (f"not stated in the entry: {'; '.join(filled)}, {cited}",)


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
    return instance_cluster(unit, devices or unit.devices)  # 1, 2 or 4 GPUs of a node, or whole nodes


def _check_layout(d: ScenarioEntry, devices: int, ep: int | None, dp: int) -> None:
    """The layouts the step model prices: experts over every device of the scenario, attention groups that divide it."""
    where = f"{d.id}.layout"
    if ep is not None and ep != devices:
        raise InputError(f"{where}.experts", f"ep{ep} on {devices} devices", f"every device holds experts: write ep{devices}")
    if devices % dp:
        raise InputError(f"{where}.attention", f"dp{dp} does not divide {devices} devices", "give a divisor of devices")


def _parallel(spec: str | None, prefix: str) -> int | None:
    if spec is None:
        return None
    m = re.fullmatch(rf"{prefix}(\d+)", str(spec))
    if not m:
        raise InputError(f"layout.{prefix}", f"cannot read '{spec}'", f"write it as {prefix}N")
    return int(m.group(1))


@dataclass(frozen=True)
class Scenario:
    """A published scenario rebuilt from the catalogs: the step model's context, and what was assumed."""

    context: StepContext
    assumptions: tuple[str, ...]


def build_scenario(d: ScenarioEntry, engine: EngineEntry | None = None) -> Scenario:
    """Model, precision, cluster, layout and expert load of a scenario entry; with an engine, its operators priced by
    that engine's measured kernel tables where they cover the device (else the fits, as without one)."""
    assumptions: list[str] = []
    arch = catalog.load_model(d.model, f"{d.id}.model")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    if d.precision:  # formats that differ from the checkpoint's, e.g. a W8A8 deployment
        plan = plan.with_overrides(d.precision, f"{d.id}.precision")
    lay = d.layout
    ep = _parallel(lay.experts, "ep")
    dp = _parallel(lay.attention or (f"dp{ep}" if ep else None), "dp") or 1
    devices = d.devices or ep or dp
    if not d.devices:
        assumptions.append(f"devices not stated: {devices} (the EP group)")
    _check_layout(d, devices, ep, dp)
    cluster = _cluster(d.hardware, devices, d.id)
    layout = Layout(tp=devices // dp, dp=dp, redundant_experts=lay.redundant_experts, two_batch_overlap=lay.two_batch_overlap)
    load = None
    skew = catalog.routing_skew(d.model)
    load_phase = Phase.PREFILL if d.phase == Role.PREFILL else Phase.DECODE  # an aggregated deployment mostly decodes
    if lay.eplb is None and d.routing is None:
        assumptions.append("EPLB not stated: assumed off (contiguous expert placement)")
    if d.routing == "balanced":
        assumptions.append("every expert equally loaded, as the source measured")
    elif skew is None:
        assumptions.append("no published routing skew for this model: uniform expert load (optimistic)")
    else:
        load = (ExpertLoad.measured_eplb if lay.eplb else ExpertLoad.measured_contiguous)(skew, load_phase, layout.ep, len(arch.moe_layers))
        assumptions.append(load.source)
    costs = fitted_costs() if engine is None else costs_for(cluster.device.name, engine.name, engine.version)
    share = overhead_s = overlap = 0.0
    if engine is not None:
        priced = "its measured kernel tables" if costs.measured is not None else "the fits (no measured tables of it here)"
        assumptions.append(f"served by {engine.name}" + (f" {engine.version}" if engine.version else "") + f": {priced}")
        share = catalog.sliding_kv_share(engine.name)  # as moeplan.spec sets Serving's, whatever the model
        if share and arch.layers_of(Kind.SLIDING):
            assumptions.append(sliding_kv_note(engine.name, share))
        # the engine's step constants, as a plan's (moeplan.spec), fitted on the measured closed loops alone
        overhead_s, overlap = catalog.step_constants(engine.name, cluster.device, arch.num_layers)
        assumptions += catalog.step_constant_notes(engine.name, arch, overhead_s, overlap)
    return Scenario(StepContext(arch, plan, cluster, layout, load, costs, sliding_kv_share=share,
                                step_overhead_s=overhead_s, shared_expert_overlap=overlap), tuple(assumptions))


def validate_one(d: DeploymentEntry, backend: EngineEntry | None = None) -> ValidationRow:
    """The entry's published metric against the prediction, priced by `backend`, else the entry's own engine."""
    metric, published, w = d.metric.name, d.metric.value, d.workload
    base = dict(id=d.id, metric=metric, published=published, source=d.source)
    sc = build_scenario(d, None if backend and backend.name == FITTED else backend or d.engine)
    ctx, assumptions = sc.context, list(sc.assumptions)
    per = ctx.cluster.unit.devices_per_node if metric.endswith("_per_node") else 1

    if d.phase == Role.PREFILL:
        tokens = w.tokens_per_device_per_step
        if tokens is None:
            tokens = SGLANG_MAX_PREFILL_TOKENS
            assumptions.append(f"tokens per device per step not stated: {tokens} (SGLang's default --max-prefill-tokens)")
        if w.input_tokens is None:
            return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions), reason="the prompt length is not stated")
        perf = prefill_performance(ctx, tokens, w.input_tokens, HBM_UTILIZATION)
    elif d.phase == Role.DECODE:
        context = w.kv_tokens_per_sequence
        if context is None:
            context = (w.input_tokens or 0) + (w.output_tokens or 0)
            if not context:
                return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions),
                                     reason="neither the KV length nor the input length is stated")
            assumptions.append(f"KV tokens per sequence not stated: {context} (input + output tokens)")
        speculation = None
        if w.speculative is not None:
            speculation = Speculation(w.speculative.draft_tokens, w.speculative.acceptance)
            assumptions.append(f"MTP speculative decoding: {speculation.draft_tokens} draft token(s) per step, "
                               f"{speculation.tokens_per_step:.2f} tokens accepted per step")
        batch = w.batch_per_device
        if batch is None and d.slo.tpot_s is not None:
            perf = _largest_batch_meeting_tpot(ctx, context, d.slo.tpot_s, speculation)
            if perf is None:
                return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions),
                                     reason=f"no batch meets TPOT {d.slo.tpot_s} s")
            assumptions.append(f"batch not stated: {perf.steps[0].tokens_per_device:.0f} per device, the largest meeting TPOT {d.slo.tpot_s} s")
        else:
            if batch is None:
                batch = largest_batch_that_fits(ctx, context, HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS,
                                                mtp_module=speculation is not None)
                assumptions.append(f"batch not stated: {batch} per device, the largest that fits in KV memory")
            perf = decode_performance(ctx, batch, float(context), HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS, speculation)
    elif d.phase == Role.AGGREGATED:
        if w.input_tokens is None or w.output_tokens is None:
            return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions),
                                 reason="the input and output lengths are not both stated")
        perf = (_offline if w.requests else _in_flight)(ctx, d, assumptions)
    else:
        return ValidationRow(**base, predicted=None, assumptions=tuple(assumptions), reason=f"phase '{d.phase}' is not modelled")
    if not perf.memory.fits:
        assumptions.append("the stated batch does not fit moeplan's memory model")
    return ValidationRow(**base, predicted=perf.tokens_per_s_per_device * per, assumptions=tuple(assumptions))


def _in_flight(ctx: StepContext, d: DeploymentEntry, assumptions: list[str]) -> Performance:
    """An aggregated deployment at its steady state: a closed loop that fills every rank (all ranks prefill in the
    same steps), else prefills that arrive at random (each rank's own)."""
    w, layout = d.workload, ctx.layout
    batch = w.max_batch_per_device or w.batch_per_device
    if w.concurrency:
        batch = min(batch or 1 << 30, w.concurrency // layout.devices)
    tokens = w.tokens_per_device_per_step
    if tokens is None:
        tokens = TRTLLM_MAX_NUM_TOKENS
        assumptions.append(f"tokens per step not stated: {tokens} (TensorRT-LLM's default max_num_tokens)")
    lengths = w.input_tokens, w.output_tokens
    if batch is None:
        batch = largest_batch_that_fits(ctx, sum(lengths), HBM_UTILIZATION, tokens)
        assumptions.append(f"batch not stated: {batch} per device, the largest that fits in KV memory")
    if w.concurrency and w.concurrency >= batch * layout.dp:
        assumptions.append(f"closed loop of {w.concurrency} equal-length requests keeps every rank's {batch} slots full: "
                           "all ranks admit and prefill in the same steps")
        graphs = _graph_batches(w, batch * layout.tp, tokens * layout.tp, assumptions)
        return lockstep_aggregated_performance(ctx, batch, *lengths, HBM_UTILIZATION, tokens, graphs)
    return aggregated_performance(ctx, batch, *lengths, HBM_UTILIZATION, tokens)


def _offline(ctx: StepContext, d: DeploymentEntry, assumptions: list[str]) -> Performance:
    """An offline benchmark's whole run (hwmodels.serving.offline_performance). A TensorRT-LLM run that states no
    batch or step budget had trtllm-bench's own (hwmodels/calibrate/trtllm_bench.py), within what KV memory holds."""
    w, layout = d.workload, ctx.layout
    trtllm = d.engine is not None and d.engine.name == "trtllm"
    isl, osl = w.input_tokens, w.output_tokens
    batch = w.max_batch_per_device or w.batch_per_device
    tokens = w.tokens_per_device_per_step
    batch, tokens = batch and batch * layout.tp, tokens and tokens * layout.tp  # per attention rank
    if batch is None or tokens is None:
        if trtllm:
            s = trtllm_bench.engine_settings(ctx.arch, catalog.model_config(d.model), ctx.precision,
                                             ctx.cluster.device.hbm_bytes, layout.devices // layout.pp, layout.pp, isl, osl)
            tokens = tokens or max(s.max_num_tokens, isl + (batch or s.max_batch_size))  # whole prompts beside the batch
            batch = batch or s.max_batch_size
            assumptions.append(f"max batch and tokens per step not stated: {batch} and {tokens} per attention rank ({s.rule})")
        else:
            tokens = tokens or TRTLLM_MAX_NUM_TOKENS * layout.tp
            assumptions.append(f"tokens per step not stated: {tokens} per attention rank")
    fits = largest_batch_that_fits(ctx, isl + osl, HBM_UTILIZATION, max(1, tokens // layout.tp)) * layout.tp
    graphs = _graph_batches(w, batch or fits, tokens, assumptions)  # captured at the engine's batch, not KV's
    if batch is None or fits < batch:
        assumptions.append(f"KV memory holds {fits} requests of {isl + osl} tokens per attention rank: the batch")
        batch = fits
    per_rank = math.ceil(w.requests / layout.dp)
    assumptions.append(f"offline benchmark: {w.requests} requests queued at the start ({per_rank} per attention rank), "
                       "throughput from the first step to the last token" + ("; whole prompts only (trtllm-bench's default)" if trtllm else ""))
    return offline_performance(ctx, per_rank, batch, isl, osl, HBM_UTILIZATION, tokens, chunked=not trtllm,
                               graph_batches=graphs)


def _graph_batches(w: WorkloadEntry, max_batch_per_rank: int, max_tokens_per_rank: int,
                   assumptions: list[str]) -> tuple[int, ...]:
    """The CUDA-graph batch sizes the run's engine captured, per attention rank, where the entry states them."""
    if not w.cuda_graph_batch_sizes:
        return ()
    graphs = trtllm_bench.captured_graph_batches(tuple(w.cuda_graph_batch_sizes), max_batch_per_rank, max_tokens_per_rank)
    assumptions.append(f"a step that only decodes runs as the CUDA graph of the smallest captured batch that holds it "
                       f"({', '.join(map(str, graphs))} per attention rank), padded with one-token dummy requests")
    return graphs


def _largest_batch_meeting_tpot(ctx: StepContext, context: int, tpot_s: float,
                                speculation: Speculation | None) -> Performance | None:
    """Binary search on the decode batch: step time grows with the batch."""
    limit = largest_batch_that_fits(ctx, context, HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS, mtp_module=speculation is not None)
    lo, hi, best = 1, max(limit, 1), None
    while lo <= hi:
        mid = (lo + hi) // 2
        perf = decode_performance(ctx, mid, float(context), HBM_UTILIZATION, SGLANG_MAX_PREFILL_TOKENS, speculation)
        if 1.0 / perf.tokens_per_s_per_user <= tpot_s:
            best, lo = perf, mid + 1
        else:
            hi = mid - 1
    return best
