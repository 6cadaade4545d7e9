"""Step time of a layout: one decode step or one prefill step, summed over layers, with a breakdown.

Per layer, on the slowest device (a step of an expert-parallel group waits for it):
  attention (projections, MLA core, TP all-reduce) -> router -> dispatch (all-to-all, fp8)
  -> grouped expert GEMMs (gate/up, SwiGLU, down) + shared expert -> combine (all-to-all, bf16).
The MoE term takes per-layer device loads (`ExpertLoad`, from a placement and routing data); without
routing data it assumes uniform load and says so in `StepCost.load_source`. Each MoE layer is priced at its
busiest device: its routed GEMMs at that device's share of the pairs, and its dispatch and combine as one hot
device at that share over evenly loaded others, or, where the load carries its placement (`ExpertLoad.routing`),
from the bytes each link class carries given where each expert's replicas sit and the model's node-limited
routing (hwmodels.alltoall_placement, which states its assumptions). Layers whose busiest device (and placed
copies per token) agree to `StepContext.imbalance_decimals` share one evaluation.

A `StepContext` is everything a step's time depends on besides its batch: the model and its precision, the
instance's cluster and layout, the expert load, and where operator times come from
(hwmodels.calibrate.OperatorCosts). An expert-parallel group steps in lockstep: `lockstep_time_s` prices a
step whose ranks carry different batches.

Two-batch overlap (DeepSeek's schedule, deepseek-ai/profile-data) splits the step into two
micro-batches and pairs each compute stage of one with a communication stage of the other:
attention with dispatch, MoE experts with combine. A layer then costs
2 x (max(attention, dispatch) + max(experts, combine)) of a half batch instead of the sum of all four
(less the share of each overlap that real kernels do not achieve, `OperatorCosts.overlap_efficiency`),
and the halves run their GEMMs at half the batch, which costs efficiency at small batches. DeepEP's
normal (prefill) kernels occupy SMs while they run (`Buffer.num_sms`, 20 by default), so compute
overlapped with them runs on the remaining SMs; its low-latency (decode) kernels occupy none while
they wait (DeepEP README, hook-based overlap).

Speculative decoding with the model's multi-token-prediction (MTP) module (`draft_tokens` > 0, decode
only): each step verifies 1 + draft_tokens tokens of every sequence in one pass (every GEMM, the
dispatch and the combine carry that many rows per sequence; the attention reads each sequence's cache
once for all of them, as FlashMLA folds them into its head dimension), then the MTP module drafts the
next ones: one decoder layer (the model's MoE layer) plus its [D, 2D] projection and the shared LM head,
run once per draft token on one row per sequence.

Pipeline stages (layout.pp > 1; hwmodels.pipeline, which states each rule and its source): the layers are priced
once as above, summed over each stage's layers (the embedding and a vision encoder on the first stage, the LM head
and MTP module on the last), the point-to-point transfers between stages added, and the step is their cycle.

Attention-FFN disaggregation (layout.ffn_devices > 0, decode only; hwmodels.afd, which states the pipeline and its
source): the attention side (attention, router, shared experts) priced on an attention device, the routed experts on
the busiest FFN device at every attention device's tokens, the dispatch and combine between the two sets per link
class, and the step their ping-pong pipeline over the fastest of 1, 2 and 3 micro-batches.

Shape legend: B = sequences (decode) or tokens (prefill) of one attention group, D = hidden,
H = heads on this device, E = routed experts, K = top-k, I = expert intermediate width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from hwmodels.alltoall_placement import copies_by_mode
from hwmodels.calibrate.operator_costs import OperatorCosts, fitted_costs
from hwmodels.collectives import DEEPEP_NORMAL_SMS, ep_group_domains
from hwmodels.efficiency import HOPPER_NUM_SMS
from hwmodels.expert_load import ExpertLoad
from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels import afd, step_attention
from hwmodels.model_arch import ModelArch
from hwmodels.pipeline import TOKEN_ID_BYTES, PipelineTimes, stage_layers
from hwmodels.precision import SCHEMES, PrecisionPlan
from hwmodels.roles import Phase
from hwmodels.step_moe import afd_moe, moe_terms
from hwmodels.step_ops import COMPONENTS, _gemm, _Layer, _memory_op
from hwmodels.vision import ImageInputs


@dataclass(frozen=True)
class StepCost:
    phase: Phase
    time_s: float
    tokens_per_device: float  # tokens one device completes per step (decode: sequences; prefill: prompt tokens)
    breakdown_s: dict[str, float]  # per component, summed over layers, before overlap
    overlap_hidden_s: float  # time two-batch overlap hides (breakdown sum - time)
    by_layer_type_s: dict[str, float]  # dense layers, MoE layers, embedding + LM head
    load_source: str
    sources: tuple[str, ...] = field(default=())  # efficiency sources of the operators used
    # per operator: (name, the source that priced it, how far outside measured coverage it lay; 1.0 inside)
    operator_sources: tuple[tuple[str, str, float], ...] = field(default=())
    pipeline: PipelineTimes | None = None  # pp > 1: each stage's time and the transfers (time_s is their cycle)
    micro_batches: int = 1  # the batch split in turns: 2 with two-batch overlap, attention-FFN disaggregation's count

    @property
    def tokens_per_s_per_device(self) -> float:
        return self.tokens_per_device / self.time_s

    @property
    def overlap_ratio(self) -> float:
        """Fraction of the summed components the step takes after two-batch overlap (1 without it)."""
        total = sum(self.breakdown_s.values())
        return self.time_s / total if total > 0 else 1.0


def lockstep_time_s(step_s: float, expert_gemm_s: float, overlap_ratio: float, mean_expert_gemm_s: float) -> float:
    """The step of an expert-parallel group whose ranks carry different batches. The group steps in lockstep:
    attention, dispatch and combine run at its busiest rank's batch (the all-to-all waits for it), while the
    routed experts process every rank's tokens, so they run at the group's mean batch. From the busiest rank's
    step (`step_s`, its routed-expert GEMMs `expert_gemm_s`, its `overlap_ratio`) and the routed-expert GEMMs at
    the mean batch, the saving scaled by the fraction of the step two-batch overlap leaves."""
    return step_s - overlap_ratio * (expert_gemm_s - mean_expert_gemm_s)


@dataclass(frozen=True, eq=False)
class StepContext:
    """What sets a step's time besides its batch (everything is per instance: one expert-parallel group).

    load: the per-device expert load of each MoE layer (None: uniform, labelled so); unused for a dense model.
    costs: where operator times come from (default: the stored fits).
    imbalance_decimals: each MoE layer's busiest-device load is read to this many decimals, so layers that agree
      share one evaluation (the simulator reads 2 to evaluate fewer distinct layers).
    """

    arch: ModelArch
    precision: PrecisionPlan
    cluster: Cluster
    layout: Layout
    load: ExpertLoad | None = None
    costs: OperatorCosts = field(default_factory=fitted_costs)
    imbalance_decimals: int = 3
    images: ImageInputs | None = None  # each prompt's images: a prefill step also runs the vision encoder on them
    # the serving engine's host time per forward step that no kernel table holds (scheduling, sampling, output
    # handling, launch gaps): Serving.step_overhead_s, fitted per engine to measured closed loops; 0 without an engine
    step_overhead_s: float = 0.0
    # the share of the shorter of a decode step's shared experts and routed experts that runs hidden beside the other:
    # an engine may launch the shared experts on a second CUDA stream (TensorRT-LLM's DeepSeek-V3 MoE, in CUDA-graph
    # decode), and how much that hides depends on the SMs the routed kernel leaves (Serving.shared_expert_overlap,
    # fitted per engine and GPU generation to measured closed loops; 0: one after the other)
    shared_expert_overlap: float = 0.0
    # the share of a full layer's KV per token the engine's pool reserves for each sliding-window layer
    # (Serving.sliding_kv_share; 0: its window): what a batch's memory holds, not what a step reads
    sliding_kv_share: float = 0.0

    @cached_property
    def expert_load(self) -> ExpertLoad | None:
        """The load the MoE layers are priced at: `load`, or uniform where none was given; None for a dense model."""
        if not self.arch.is_moe:
            return None
        n_moe, ep = len(self.arch.moe_layers), self.layout.ep
        load = self.load if self.load is not None else _uniform_load(ep, n_moe)
        if load.shares.shape != (n_moe, ep):
            raise ValueError(f"load shares must be [{n_moe}, {ep}], got {load.shares.shape}")
        return load

    @cached_property
    def layer_factors(self) -> tuple[float, ...]:
        """Per MoE layer: the busiest device's load over the mean (1.0 is perfect balance), to imbalance_decimals."""
        load = self.expert_load
        if load is None:
            return ()
        if self.load is None:  # the uniform load, shared by the contexts of a search: rounded once
            return _uniform_factors(self.layout.ep, len(self.arch.moe_layers), self.imbalance_decimals)
        return tuple(np.round(load.imbalance, self.imbalance_decimals).tolist())

    @cached_property
    def placed_copies(self) -> dict[str, tuple[tuple, ...]] | None:
        """Per all-to-all mode, per MoE layer: the token copies per token on the busiest rank of each path class,
        from the load's placement (None without one, or for a group of one device), rounded to imbalance_decimals."""
        load = self.expert_load
        if load is None or load.routing is None or self.layout.ep == 1:
            return None
        moe, r = self.arch.moe, self.cluster.device.ranks_per_device
        if load.routing.expert_share.shape != (len(self.arch.moe_layers), moe.num_experts) or \
                load.routing.num_devices != self.layout.ep:
            raise ValueError(f"the load's placement is [{load.routing.expert_share.shape}] on {load.routing.num_devices} "
                             f"devices, the model has {len(self.arch.moe_layers)} MoE layers x {moe.num_experts} on EP{self.layout.ep}")
        domains = tuple(np.repeat(ep_group_domains(self.cluster, self.layout.ep), r).tolist())
        return copies_by_mode(load.routing, domains, moe.top_k, moe.num_experts, moe.num_groups, moe.groups_per_token,
                              r, self.imbalance_decimals)

    def step(self, phase: Phase | str, tokens_per_device: float, context_tokens: float, draft_tokens: int = 0) -> StepCost:
        """One forward step of the whole model, on its slowest device; with pipeline stages (layout.pp > 1) the
        cycle of pp micro-batches of `tokens_per_device` rows per stage device (hwmodels.pipeline).

        decode: `tokens_per_device` sequences per device, each with `context_tokens` in its KV cache, each
        verifying 1 + `draft_tokens` tokens (speculative decoding with the model's MTP module).
        prefill: `tokens_per_device` prompt tokens per device per step, prompts of `context_tokens` tokens.
        """
        return _step(self, Phase(phase), tokens_per_device, context_tokens, draft_tokens)

    def lockstep_s(self, phase: Phase | str, busiest_tokens: float, mean_tokens: float, context_tokens: float,
                   draft_tokens: int = 0) -> float:
        """`lockstep_time_s` of a group whose busiest rank's devices carry `busiest_tokens` each and whose ranks
        carry `mean_tokens` on average (per device), evaluated exactly."""
        busiest = self.step(phase, busiest_tokens, context_tokens, draft_tokens)
        if not self.arch.is_moe or mean_tokens >= busiest_tokens:
            return busiest.time_s
        mean = self.step(phase, mean_tokens, context_tokens, draft_tokens)
        return lockstep_time_s(busiest.time_s, busiest.breakdown_s["expert_gemm"], busiest.overlap_ratio,
                               mean.breakdown_s["expert_gemm"])


@lru_cache(maxsize=256)
def _uniform_load(ep: int, moe_layers: int) -> ExpertLoad:
    """ExpertLoad.uniform, one per shape: the contexts of a search share it (read only)."""
    load = ExpertLoad.uniform(ep, moe_layers)
    load.shares.setflags(write=False)
    return load


@lru_cache(maxsize=256)
def _uniform_factors(ep: int, moe_layers: int, decimals: int) -> tuple[float, ...]:
    return tuple(np.round(_uniform_load(ep, moe_layers).imbalance, decimals).tolist())


# ---------------------------------------------------------------------------------------------------- layers

def _dense_mlp(layer: _Layer, b: float) -> None:
    ctx = layer.ctx
    d, width, w = ctx.arch.hidden_size, ctx.arch.dense_intermediate_size // ctx.layout.tp, ctx.precision.of("dense_mlp")
    act = ctx.precision.combine.bytes_per_element
    layer.quantize_input("dense_mlp", b, d, w)
    layer.gemm("dense_mlp", b, 2 * width, d, w, "dense_gate_up")
    layer.memory("dense_mlp", b * 3 * width * act, "swiglu")
    layer.quantize_input("dense_mlp", b, width, w)
    layer.gemm("dense_mlp", b, d, width, w, "dense_down")
    if ctx.layout.tp > 1:
        layer.allreduce("dense_mlp", ctx.layout.tp, b * d * act)


# ---------------------------------------------------------------------------------------------------- the step

def _step(ctx: StepContext, phase: Phase, tokens_per_device: float, context_tokens: float, draft_tokens: int) -> StepCost:
    arch, layout = ctx.arch, ctx.layout
    if draft_tokens and (phase != Phase.DECODE or not arch.num_mtp_layers):
        raise ValueError("draft tokens need the decode phase and a model with an MTP module (num_nextn_predict_layers)")
    load = ctx.expert_load
    n_moe = len(arch.moe_layers)

    queries = 1 + draft_tokens
    layers = _layers(ctx, phase, tokens_per_device * queries, context_tokens, queries)
    breakdown, by_type, sources = dict(layers.breakdown_s), dict(layers.by_type_s), set(layers.sources)
    operators = dict(layers.operators)

    # Embedding lookup, final norm and the LM head: decode samples every row, prefill the last token of each prompt
    rows = tokens_per_device * queries * layout.tp
    head_s, embed_s, head_sources = _head(ctx, rows if phase == Phase.DECODE else max(rows / context_tokens, 1.0), rows,
                                          operators)
    by_type["embedding_lm_head"] = head_s + embed_s
    first_s = embed_s  # pp > 1: what the first stage runs besides its layers, and the last
    breakdown["other"] += head_s + embed_s
    sources |= head_sources
    if phase == Phase.PREFILL and ctx.images is not None and arch.vision is not None:
        # the images of the prompts this step prefills, each encoded once, their work split over the TP group
        images = tokens_per_device * layout.tp / context_tokens * ctx.images.per_request
        encoder_s = _vision_encoder_s(ctx, images / layout.tp, operators)
        by_type["vision_encoder"] = encoder_s
        breakdown["other"] += encoder_s
        first_s += encoder_s

    if draft_tokens:  # the MTP module drafts one token per sequence per draft: one MoE layer, its projection, the LM head
        draft = _layers(ctx, phase, tokens_per_device, context_tokens, 1)
        rows = tokens_per_device * layout.tp
        d = arch.hidden_size
        eh_proj = _gemm(ctx, rows, d, 2 * d, ctx.precision.of("attention"), "mtp_eh_proj")
        draft_head_s = sum(_head(ctx, rows, rows)[:2])
        per_draft = draft.moe_layer_s + eh_proj.total_s + draft_head_s
        by_type["mtp_draft"] = draft_tokens * per_draft
        for c in COMPONENTS:
            breakdown[c] += draft_tokens * draft.moe_breakdown_s[c] / n_moe
        breakdown["other"] += draft_tokens * (eh_proj.total_s + draft_head_s)
        sources |= draft.sources | {eh_proj.source}
        operators.setdefault(eh_proj.name, (eh_proj.source, eh_proj.beyond_coverage))

    pipeline = None
    if layout.pp > 1:
        last_s = head_s + by_type.get("mtp_draft", 0.0)  # the MTP module shares the LM head, on the last stage
        pipeline = _pipeline(ctx, phase, layers.layer_s, first_s, last_s, tokens_per_device * queries, operators)
        breakdown["other"] += sum(pipeline.transfer_s)
        by_type["pipeline_transfers"] = sum(pipeline.transfer_s)
        by_type["pipeline_bubble"] = pipeline.cycle_s - pipeline.latency_s  # the slowest stage's wait, if any
    if ctx.step_overhead_s:
        by_type["engine_step_overhead"] = ctx.step_overhead_s
        breakdown["other"] += ctx.step_overhead_s
    time_s = sum(by_type.values())
    return StepCost(
        phase=phase,
        time_s=time_s,
        # attention-FFN disaggregated, the FFN devices complete no sequence of their own: the mean over every device
        tokens_per_device=tokens_per_device * layout.attention_devices / layout.devices,
        breakdown_s=breakdown,
        overlap_hidden_s=max(0.0, sum(breakdown.values()) - time_s),
        by_layer_type_s=by_type,
        load_source=load.source if load is not None else "dense model",
        sources=tuple(sorted(sources)),
        operator_sources=tuple([(name, source, beyond) for name, (source, beyond) in sorted(operators.items())]),
        pipeline=pipeline,
        micro_batches=layers.micro_batches,
    )


def _pipeline(ctx: StepContext, phase: Phase, layer_s: np.ndarray, first_s: float, last_s: float, rows: float,
              operators: dict) -> PipelineTimes:
    """Each stage's layers (`layer_s`: [num_layers], one micro-batch each) with what the first and last stages add,
    and the transfers between them (hwmodels.pipeline)."""
    layout, d = ctx.layout, ctx.arch.hidden_size
    stage_devices = layout.tp * layout.dp
    stages = [float(layer_s[r.start:r.stop].sum()) for r in stage_layers(ctx.arch.num_layers, layout.pp)]
    stages[0] += first_s
    stages[-1] += last_s
    activations = 2 * rows * d * ctx.precision.combine.bytes_per_element  # hidden state and residual
    transfers = []
    for s in range(layout.pp - 1):
        cost = ctx.costs.send_recv(ctx.cluster, s * stage_devices, (s + 1) * stage_devices, activations)
        transfers.append(cost.time_s)
        operators["pp_send_recv"] = (cost.source, cost.beyond)
    if phase == Phase.DECODE:  # the sampled tokens go back to the first stage, which embeds them next step
        transfers.append(ctx.costs.send_recv(ctx.cluster, (layout.pp - 1) * stage_devices, 0, rows * TOKEN_ID_BYTES).time_s)
    return PipelineTimes(tuple(stages), tuple(transfers))


@dataclass(frozen=True)
class _Layers:
    """The decoder layers of one step: time by layer type, breakdown per component (before overlap)."""

    by_type_s: dict[str, float]
    breakdown_s: dict[str, float]
    moe_breakdown_s: dict[str, float]  # the MoE layers' share of breakdown_s
    moe_layer_s: float  # one MoE layer on average
    layer_s: np.ndarray  # [num_layers]: each layer's time, in model order
    sources: frozenset
    operators: dict  # operator name -> (source, beyond coverage)
    micro_batches: int


def _layers(ctx: StepContext, phase: Phase, rows_per_device: float, context_tokens: float, queries: int) -> _Layers:
    if not ctx.layout.ffn_devices:
        return _layers_of(ctx, phase, rows_per_device, context_tokens, queries, 2 if ctx.layout.two_batch_overlap else 1)
    # attention-FFN disaggregated: the micro-batches of its ping-pong pipeline (hwmodels.afd) take the halves' place
    return min((_layers_of(ctx, phase, rows_per_device, context_tokens, queries, m) for m in afd.MICRO_BATCHES),
               key=lambda x: sum(x.by_type_s.values()))


def _layers_of(ctx: StepContext, phase: Phase, rows_per_device: float, context_tokens: float, queries: int,
               halves: int) -> _Layers:
    """The layers at `halves` micro-batches (two-batch overlap's 2, or attention-FFN disaggregation's count)."""
    arch, layout = ctx.arch, ctx.layout
    overlap = layout.two_batch_overlap
    b_group = rows_per_device * layout.tp / halves  # per micro-batch, per attention group
    b_dev = rows_per_device / halves
    attn_context = context_tokens if phase == Phase.DECODE else (context_tokens + 1) / 2
    # compute overlapped with DeepEP's normal kernels runs on the SMs they leave free
    num_sms = ctx.cluster.device.num_sms or HOPPER_NUM_SMS
    slowdown = num_sms / (num_sms - DEEPEP_NORMAL_SMS) if overlap and phase == Phase.PREFILL and arch.is_moe else 1.0

    shared = _shared_layers(ctx, b_group, attn_context, phase, queries, halves, slowdown)
    breakdown = dict(shared.breakdown_s)
    moe_breakdown = {c: 0.0 for c in COMPONENTS}
    by_type = {"dense_layers": shared.dense_layers_s, "moe_layers": 0.0}
    sources, operators = set(shared.sources), dict(shared.operators)
    n_moe = len(shared.moe_groups)
    layer_s = shared.dense_layer_s.copy()  # [num_layers] in model order; the MoE layers' filled in below
    moe_layer_s = 0.0
    if n_moe:
        m = (afd_moe if layout.ffn_devices else moe_terms)(ctx, b_dev, phase)
        sources |= m.sources
        operators |= m.operators
        fill_s = 0.0
        if layout.ffn_devices:  # the two sides on their own devices, in the ping-pong pipeline (slowdown is 1)
            attention_stage = np.array([c + x + m.router_s + m.shared_expert_s
                                        for c, x in shared.stage_s])[shared.moe_groups]
            moe_s, fill_s = afd.ping_pong_s(attention_stage, m.dispatch_s, m.expert_gemm_s, m.combine_s, halves)
        else:
            attention_stage = np.array([(c + m.router_s) * slowdown + x for c, x in shared.stage_s])[shared.moe_groups]
            expert_stage = m.shared_expert_s + m.expert_gemm_s
            if phase == Phase.DECODE and ctx.shared_expert_overlap:
                expert_stage = expert_stage - ctx.shared_expert_overlap * np.minimum(m.shared_expert_s, m.expert_gemm_s)
            expert_stage = expert_stage * slowdown
            if overlap:
                efficiency = ctx.costs.overlap_efficiency

                def overlapped(a, b):
                    return np.maximum(a, b) + (1.0 - efficiency) * np.minimum(a, b)
                moe_s = halves * (overlapped(attention_stage, m.dispatch_s) + overlapped(expert_stage, m.combine_s))
            else:
                moe_s = attention_stage + m.dispatch_s + expert_stage + m.combine_s
        by_type["moe_layers"] = float(np.sum(moe_s)) + fill_s
        moe_layer_s = by_type["moe_layers"] / n_moe
        layer_s[list(arch.moe_layers)] = moe_s
        moe_breakdown = dict(shared.moe_attention_s)
        moe_breakdown["expert_gemm"] += halves * float(m.expert_gemm_s.sum()) * slowdown
        moe_breakdown["dispatch"] += halves * float(m.dispatch_s.sum())
        moe_breakdown["combine"] += halves * float(m.combine_s.sum())
        moe_breakdown["shared_expert"] += m.shared_expert_s * n_moe * halves * slowdown
        moe_breakdown["other"] += m.router_s * n_moe * halves * slowdown
        for c in COMPONENTS:
            breakdown[c] += moe_breakdown[c]
    return _Layers(by_type, breakdown, moe_breakdown, moe_layer_s, layer_s, frozenset(sources), operators, halves)


@dataclass(frozen=True)
class _SharedLayers:
    """The attention and dense MLP side of a step's layers (`_shared_layers`); read only."""

    stage_s: tuple[tuple[float, float], ...]  # per attention signature: one layer's (compute, communication)
    moe_groups: np.ndarray  # each MoE layer's signature (an index into stage_s)
    dense_layers_s: float  # the dense layers, both halves
    dense_layer_s: np.ndarray  # [num_layers]: each dense layer's time in model order (0 at the MoE layers)
    breakdown_s: dict[str, float]  # the dense layers per component
    moe_attention_s: dict[str, float]  # the MoE layers' attention per component (halves and slowdown applied)
    sources: frozenset
    operators: dict  # operator name -> (source, beyond coverage)


_SHARED_LAYERS: dict[tuple, tuple] = {}  # _shared_layers' results: key -> ((arch, precision, cluster), result)
_SHARED_LAYERS_SIZE = 1 << 12


def _shared_layers(ctx: StepContext, b_group: float, attn_context: float, phase: Phase, queries: int, halves: int,
                   slowdown: float) -> _SharedLayers:
    """Each attention signature's layer (kind, and DeepSeek-V4's compression ratio; layers share them) and the dense
    MLP at `b_group` rows, and their sums over the model's layers. They see the layout only through its attention TP
    (and two-batch overlap's halves and slowdown), so the layouts of a search that differ in their experts (EP, MoE
    TP, redundant slots, load) share one evaluation: cached on the exact inputs, the model, precision and cluster by
    identity (held, so their ids are not reused)."""
    arch, held = ctx.arch, (ctx.arch, ctx.precision, ctx.cluster)
    key = (*map(id, held), ctx.costs, ctx.layout.tp, b_group, attn_context, phase, queries, halves, slowdown)
    hit = _SHARED_LAYERS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], held)):
        return hit[1]
    distinct, group, dense_counts, moe_groups = step_attention.layer_groups(arch)
    attentions: dict[tuple, _Layer] = {}
    for sig in distinct:
        attentions[sig] = _Layer(ctx)
        step_attention.price(attentions[sig], b_group, attn_context, phase, queries, group.index(distinct.index(sig)))
    dense = _Layer(ctx)
    if arch.num_dense_layers:  # Qwen3.5 has no dense layer (and no intermediate_size to price one)
        _dense_mlp(dense, b_group)
    operators = dict(dense.operators)
    for a in attentions.values():
        operators |= a.operators
    breakdown = {c: 0.0 for c in COMPONENTS}
    dense_layer_s = np.zeros(arch.num_layers)
    for i in sorted(set(range(arch.num_layers)) - set(arch.moe_layers)):
        attention = attentions[distinct[group[i]]]
        dense_layer_s[i] = halves * (attention.compute_s + attention.comm_s + dense.compute_s + dense.comm_s)
    dense_layers_s = 0.0
    for sig, count in dense_counts.items():  # no all-to-all to hide: the halves run one after the other
        attention = attentions[sig]
        dense_layers_s += count * halves * (attention.compute_s + attention.comm_s + dense.compute_s + dense.comm_s)
        for c in COMPONENTS:
            breakdown[c] += count * halves * (attention.compute[c] + attention.comm[c] + dense.compute[c] + dense.comm[c])
    moe_attention = {c: 0.0 for c in COMPONENTS}
    for g, sig in enumerate(distinct):
        count = moe_groups.count(g)
        for c in COMPONENTS:
            moe_attention[c] += count * halves * (attentions[sig].compute[c] * slowdown + attentions[sig].comm[c])
    shared = _SharedLayers(tuple((attentions[sig].compute_s, attentions[sig].comm_s) for sig in distinct),
                           np.array(moe_groups, dtype=np.intp), dense_layers_s, dense_layer_s, breakdown, moe_attention,
                           frozenset(dense.sources).union(*(a.sources for a in attentions.values())), operators)
    if len(_SHARED_LAYERS) >= _SHARED_LAYERS_SIZE:
        del _SHARED_LAYERS[next(iter(_SHARED_LAYERS))]  # the oldest first
    _SHARED_LAYERS[key] = (held, shared)
    return shared


def _vision_encoder_s(ctx: StepContext, images: float, operators: dict) -> float:
    """The vision tower on `images` images (hwmodels.vision): its GEMMs over every patch (the merger over the merged
    tokens) and attention among each image's patches, in bf16 (the towers ship unquantised)."""
    tower, img, dev = ctx.arch.vision, ctx.images, ctx.cluster.device
    patches = tower.patches(img.width_px, img.height_px)
    tokens = tower.tokens_per_image(img.width_px, img.height_px)
    bf16 = SCHEMES["bf16"]
    total = 0.0
    for name, rows, cols, count in tower.matrices():
        m = images * (tokens if name.startswith("merger") else patches)
        cost = _gemm(ctx, m, rows, cols, bf16, f"vision_{name}")
        total += count * cost.total_s
        operators[cost.name] = (cost.source, cost.beyond_coverage)
    head_dim = tower.hidden // tower.heads
    attention = ctx.costs.attention_prefill(dev, max(int(images * patches), 1), patches, tower.heads, head_dim, head_dim)
    operators["vision_attention"] = (attention.source, attention.beyond_coverage)
    return total + tower.layers * attention.total_s


def _head(ctx: StepContext, head_rows: float, embed_rows: float,
          operators: dict | None = None) -> tuple[float, float, set[str]]:
    """(LM head over `head_rows` rows, the embedding lookup of `embed_rows`, sources), on one device of a TP group."""
    arch = ctx.arch
    head = _gemm(ctx, head_rows, arch.vocab_size // ctx.layout.tp, arch.hidden_size, ctx.precision.of("lm_head"), "lm_head")
    embed = _memory_op(ctx.costs, ctx.cluster.device, 2 * embed_rows * arch.hidden_size * ctx.precision.combine.bytes_per_element,
                       "embedding")
    if operators is not None:
        operators.update({c.name: (c.source, c.beyond_coverage) for c in (head, embed)})
    return head.total_s, embed.total_s, {head.source, embed.source}
