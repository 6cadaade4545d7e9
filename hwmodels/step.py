"""Step time of a layout: one decode step or one prefill step, summed over layers, with a breakdown.

Per layer, on the slowest device (a step of an expert-parallel group waits for it):
  attention (projections, MLA core, TP all-reduce) -> router -> dispatch (all-to-all, fp8)
  -> grouped expert GEMMs (gate/up, SwiGLU, down) + shared expert -> combine (all-to-all, bf16).
The MoE term takes per-layer device loads (`ExpertLoad`, from a placement and routing data); without
routing data it assumes uniform load and says so in `StepCost.load_source`.

Two-batch overlap (DeepSeek's schedule, deepseek-ai/profile-data) splits the step into two
micro-batches and pairs each compute stage of one with a communication stage of the other:
attention with dispatch, MoE experts with combine. A layer then costs
2 x (max(attention, dispatch) + max(experts, combine)) of a half batch instead of the sum of all four
(less the share of each overlap that real kernels do not achieve, `TBO_OVERLAP_EFFICIENCY`),
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

Shape legend: B = sequences (decode) or tokens (prefill) of one attention group, D = hidden,
H = heads on this device, E = routed experts, K = top-k, I = expert intermediate width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

import numpy as np

from hwmodels import collectives, efficiency
from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.model_arch import MLAAttention, ModelArch
from hwmodels.precision import DTYPES, PrecisionPlan, QuantScheme
from hwmodels.roofline import OpCost

COMPONENTS = ("attention", "dense_mlp", "expert_gemm", "shared_expert", "dispatch", "combine", "other")
DEEPEP_NORMAL_SMS = 20  # deepseek-ai/DeepEP deep_ep/buffer.py: Buffer.num_sms, SMs its normal kernels occupy
# Two-batch overlap hides only this fraction of the shorter of each overlapped (compute, communication)
# pair: LMSYS measured kernels running slower under overlap than alone (SM sharing, noisy neighbours,
# CPU-blocking launches). Fitted to its published prefill ablation (catalogs/published/overlap.yaml,
# hwmodels.overlap_fit); its decode ablation is the held-out check.
TBO_OVERLAP_EFFICIENCY = 0.71


@dataclass(frozen=True)
class ExpertLoad:
    """Share of routed (token, expert) pairs each device of the EP group receives, per MoE layer.

    shares: [moe_layers, ep] rows summing to 1. `source` says where it came from (a placement of
    which routing statistics). `uniform(ep, layers)` is the no-data assumption.
    """

    shares: np.ndarray
    source: str

    @staticmethod
    def uniform(ep: int, moe_layers: int) -> "ExpertLoad":
        return ExpertLoad(np.full((moe_layers, ep), 1.0 / ep), "uniform load (no routing data)")

    @staticmethod
    def from_imbalance(factor: float, ep: int, moe_layers: int, source: str) -> "ExpertLoad":
        """Every layer's busiest device receives `factor` times the mean; the others share the rest evenly."""
        factor = min(max(factor, 1.0), float(ep))
        busiest = factor / ep
        rest = (1.0 - busiest) / (ep - 1) if ep > 1 else 0.0
        shares = np.full((moe_layers, ep), rest)
        shares[:, 0] = busiest
        return ExpertLoad(shares, source)

    @staticmethod
    def measured_contiguous(skew: Mapping, phase: str, ep: int, moe_layers: int) -> "ExpertLoad":
        """Contiguous placement (no EPLB) at the imbalance measured on real routing statistics (a
        catalogs/routing_skew.yaml entry), interpolated log-log in the EP size."""
        table = sorted((int(k), float(v)) for k, v in skew["contiguous_imbalance"][phase].items())
        sizes, factors = np.log([t[0] for t in table]), np.log([t[1] for t in table])
        factor = float(np.exp(np.interp(np.log(ep), sizes, factors)))
        return ExpertLoad.from_imbalance(factor, ep, moe_layers,
                                         f"contiguous placement at the measured {phase} imbalance {factor:.2f} ({skew['source']})")

    @staticmethod
    def measured_eplb(skew: Mapping, phase: str, ep: int, moe_layers: int) -> "ExpertLoad":
        """EPLB placement serving traffic it was not fitted on, at the measured held-out imbalance; the
        excess over perfect balance follows a power law in the EP size through the measured points
        (more devices, fewer experts each, less room to even out)."""
        held_out = skew["eplb_held_out_imbalance"]
        points = sorted((int(k), float(v)) for k, v in held_out[phase].items())
        (e0, f0), (e1, f1) = points[0], points[-1]
        slope = np.log((f1 - 1) / (f0 - 1)) / np.log(e1 / e0)
        factor = 1 + (f0 - 1) * (ep / e0) ** slope
        return ExpertLoad.from_imbalance(factor, ep, moe_layers,
                                         f"EPLB on earlier statistics at the measured held-out {phase} imbalance {factor:.2f} ({held_out['source']})")

    @property
    def imbalance(self) -> np.ndarray:
        """Per layer: the busiest device's load over the mean (1.0 is perfect balance)."""
        return self.shares.max(axis=1) * self.shares.shape[1]


@dataclass(frozen=True)
class StepCost:
    phase: str  # "decode" or "prefill"
    time_s: float
    tokens_per_device: float  # tokens one device completes per step (decode: sequences; prefill: prompt tokens)
    breakdown_s: dict[str, float]  # per component, summed over layers, before overlap
    overlap_hidden_s: float  # time two-batch overlap hides (breakdown sum - time)
    by_layer_type_s: dict[str, float]  # dense layers, MoE layers, embedding + LM head
    load_source: str
    sources: tuple[str, ...] = field(default=())  # efficiency sources of the operators used

    @property
    def tokens_per_s_per_device(self) -> float:
        return self.tokens_per_device / self.time_s


def _weight_bytes_per_element(scheme: QuantScheme, rows: int, cols: int) -> float:
    return scheme.matrix_bytes(rows, cols) / (rows * cols)


def _compute_dtype(scheme: QuantScheme) -> str:
    """int4 checkpoints run weight-only (dequantised to bf16 in the kernel); the rest compute in their own dtype."""
    return "bf16" if scheme.dtype.name == "int4" else scheme.dtype.name


def _quantize_input(layer: "_Layer", component: str, device, rows: float, cols: int, scheme: QuantScheme,
                    act_bytes: float) -> None:
    """A GEMM computing in a narrower dtype than the activations first quantises its input (a kernel of its own)."""
    narrow = DTYPES[_compute_dtype(scheme)].bytes_per_element
    if narrow < act_bytes:
        layer.op(component, _quantize_op(device, rows, cols, act_bytes, narrow))


def _gemm(device, m, n, k, scheme: QuantScheme, name, groups=1, layout="dense") -> OpCost:
    return _gemm_cached(device, max(int(math.ceil(m)), 1), n, k, scheme, name, groups, layout)


@lru_cache(maxsize=1 << 16)
def _gemm_cached(device, m: int, n: int, k: int, scheme: QuantScheme, name: str, groups: int, layout: str) -> OpCost:
    # a layout search evaluates the same GEMM shapes across many layouts and batch sizes
    return efficiency.gemm_cost(device, m, n, k, dtype=_compute_dtype(scheme), groups=groups, layout=layout,
                                weight_bytes_per_element=_weight_bytes_per_element(scheme, n, k), name=name)


# memory-bound kernels recur with the same sizes across the layouts a search scores, like the GEMM shapes
_memory_op = lru_cache(maxsize=1 << 16)(efficiency.elementwise_cost)
_quantize_op = lru_cache(maxsize=1 << 16)(efficiency.quantize_activations_cost)


@dataclass
class _Layer:
    """Accumulates one layer's operators into compute and communication time per component."""

    compute: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in COMPONENTS})
    comm: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in COMPONENTS})
    sources: set[str] = field(default_factory=set)

    def op(self, component: str, cost: OpCost) -> None:
        self.compute[component] += cost.total_s
        self.sources.add(cost.source)

    def communicate(self, component: str, time_s: float, source: str) -> None:
        self.comm[component] += time_s
        self.sources.add(source)

    @property
    def compute_s(self) -> float:
        return sum(self.compute.values())

    @property
    def comm_s(self) -> float:
        return sum(self.comm.values())


def _attention(layer: _Layer, arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout,
               b: float, context: float, phase: str, queries_per_sequence: int = 1) -> None:
    """Attention of one TP group for `b` query tokens (decode: b / queries_per_sequence sequences of
    `context`; prefill: b tokens, causal average context given)."""
    dev, att, d, t = cluster.device, arch.attention, arch.hidden_size, layout.tp
    w = plan.of("attention")
    act = plan.combine.bytes_per_element
    _quantize_input(layer, "attention", dev, b, d, w, act)  # the normed hidden state, shared by the input projections
    if isinstance(att, MLAAttention):
        h = att.num_heads // t
        qk = att.qk_nope_head_dim + att.qk_rope_head_dim
        if att.q_lora_rank:  # q_a and kv_a are replicated across TP ranks; the rest is column/row parallel
            layer.op("attention", _gemm(dev, b, att.q_lora_rank, d, w, "q_a_proj"))
            _quantize_input(layer, "attention", dev, b, att.q_lora_rank, w, act)
            layer.op("attention", _gemm(dev, b, h * qk, att.q_lora_rank, w, "q_b_proj"))
        else:
            layer.op("attention", _gemm(dev, b, h * qk, d, w, "q_proj"))
        layer.op("attention", _gemm(dev, b, att.kv_lora_rank + att.qk_rope_head_dim, d, w, "kv_a_proj"))
        if phase == "decode":  # absorbed: W_UK into q, attention over the latent, W_UV out of it
            layer.op("attention", _gemm(dev, b, att.kv_lora_rank, att.qk_nope_head_dim, w, "w_uk", groups=h, layout="masked"))
            layer.op("attention", efficiency.mla_decode_cost(
                dev, int(b / queries_per_sequence), context, h * queries_per_sequence, att.kv_lora_rank,
                att.qk_rope_head_dim, plan.kv_cache.bytes_per_element))
            layer.op("attention", _gemm(dev, b, att.v_head_dim, att.kv_lora_rank, w, "w_uv", groups=h, layout="masked"))
        else:  # non-absorbed: expand the latent to per-head keys and values
            _quantize_input(layer, "attention", dev, b, att.kv_lora_rank, w, act)
            layer.op("attention", _gemm(dev, b, h * (att.qk_nope_head_dim + att.v_head_dim), att.kv_lora_rank, w, "kv_b_proj"))
            # per-head keys = [k_nope, the shared k_rope]: written out whole for the attention kernel
            # (SGLang's MLA prefill path; sgl-project/sglang issue #11989 names this concatenation)
            layer.op("attention", _memory_op(
                dev, b * h * (att.qk_nope_head_dim + qk) * act + b * att.qk_rope_head_dim * act, "mla_key_concat"))
            layer.op("attention", efficiency.attention_prefill_cost(dev, int(b), context, h, qk, att.v_head_dim))
        _quantize_input(layer, "attention", dev, b, h * att.v_head_dim, w, act)
        layer.op("attention", _gemm(dev, b, d, h * att.v_head_dim, w, "o_proj"))
    else:
        h, kv = att.num_heads // t, max(att.num_kv_heads // t, 1)
        layer.op("attention", _gemm(dev, b, (h + 2 * kv) * att.head_dim, d, w, "qkv_proj"))
        if phase == "decode":
            kv_bytes = b / queries_per_sequence * context * 2 * kv * att.head_dim * plan.kv_cache.bytes_per_element
            layer.op("attention", _memory_op(dev, kv_bytes, "gqa_decode_kv_read"))
        else:
            layer.op("attention", efficiency.attention_prefill_cost(dev, int(b), context, h, att.head_dim, att.head_dim))
        _quantize_input(layer, "attention", dev, b, h * att.head_dim, w, act)
        layer.op("attention", _gemm(dev, b, d, h * att.head_dim, w, "o_proj"))
    # RMSNorms, residual adds and rope: a few reads and writes of the hidden state per token
    layer.op("other", _memory_op(dev, 6 * b * d * act, "norms_residual"))
    if t > 1:
        ar = collectives.allreduce_cost(cluster, t, b * d * act)
        layer.communicate("attention", ar.time_s, ar.source)


def _dense_mlp(layer: _Layer, arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, b: float) -> None:
    dev, d, width, w = cluster.device, arch.hidden_size, arch.dense_intermediate_size // layout.tp, plan.of("dense_mlp")
    act = plan.combine.bytes_per_element
    _quantize_input(layer, "dense_mlp", dev, b, d, w, act)
    layer.op("dense_mlp", _gemm(dev, b, 2 * width, d, w, "dense_gate_up"))
    layer.op("dense_mlp", _memory_op(dev, b * 3 * width * act, "swiglu"))
    _quantize_input(layer, "dense_mlp", dev, b, width, w, act)
    layer.op("dense_mlp", _gemm(dev, b, d, width, w, "dense_down"))
    if layout.tp > 1:
        ar = collectives.allreduce_cost(cluster, layout.tp, b * d * act)
        layer.communicate("dense_mlp", ar.time_s, ar.source)


@dataclass(frozen=True)
class _MoETerms:
    router_s: float  # on this device's own tokens
    shared_expert_s: float
    expert_gemm_s: np.ndarray  # per MoE layer, on the busiest device
    dispatch_s: np.ndarray
    combine_s: np.ndarray
    sources: frozenset


def _moe(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, tokens_per_device: float,
         phase: str, load: ExpertLoad) -> _MoETerms:
    """MoE of one layer on every device; the routed part scaled per layer by the busiest device's load."""
    dev, moe, d = cluster.device, arch.moe, arch.hidden_size
    ep = layout.ep
    slots = math.ceil((moe.num_experts + layout.redundant_experts) / ep)
    pairs = tokens_per_device * moe.top_k  # (token, expert) pairs each device receives on average
    imbalance = load.imbalance
    fixed = _Layer()
    fixed.op("other", _gemm(dev, tokens_per_device, moe.num_experts, d, plan.of("router"), "router"))
    router_s = fixed.compute_s
    if moe.shared_intermediate_size:
        ws, width, act = plan.of("shared_experts"), moe.shared_intermediate_size, plan.combine.bytes_per_element
        _quantize_input(fixed, "shared_expert", dev, tokens_per_device, d, ws, act)
        fixed.op("shared_expert", _gemm(dev, tokens_per_device, 2 * width, d, ws, "shared_gate_up"))
        fixed.op("shared_expert", _memory_op(dev, tokens_per_device * 3 * width * act, "shared_swiglu"))
        _quantize_input(fixed, "shared_expert", dev, tokens_per_device, width, ws, act)
        fixed.op("shared_expert", _gemm(dev, tokens_per_device, d, width, ws, "shared_down"))
    # routed experts on the busiest device: `slots` experts sharing its pairs
    we, width = plan.of("routed_experts"), moe.expert_intermediate_size
    grouped = "masked" if phase == "decode" else "contiguous"
    act = plan.combine.bytes_per_element
    rounded = np.round(imbalance, 3).tolist()  # layers of equal imbalance share one evaluation
    factors = sorted(set(rounded))
    expert_s = []
    for f in factors:
        m = pairs * f / slots
        gate_up = _gemm(dev, m, 2 * width, d, we, "experts_gate_up", groups=slots, layout=grouped)
        down = _gemm(dev, m, d, width, we, "experts_down", groups=slots, layout=grouped)
        swiglu = _memory_op(dev, pairs * f * 3 * width * act, "swiglu")
        permutes_s = 0.0
        if grouped == "contiguous":
            # DeepEP's normal dispatch delivers tokens in arrival order: a permute into expert-major rows
            # for the contiguous grouped GEMM, then a gather that sums each token's expert outputs before
            # the combine (the LMSYS 2025-05-05 blog's Triton permutation kernel; DeepEP README)
            permute = _memory_op(dev, 2 * pairs * f * (d * plan.dispatch.bytes_per_element + d / efficiency.SCALE_BLOCK * 4), "expert_permute")
            gather = _memory_op(dev, 2 * pairs * f * d * act, "expert_gather")
            permutes_s = permute.total_s + gather.total_s
        expert_s.append((f, gate_up.total_s + down.total_s + swiglu.total_s + permutes_s))
        fixed.sources.update((gate_up.source, down.source))
    lookup = dict(expert_s)
    expert_gemm = np.array([lookup[f] for f in rounded])

    mode = "low_latency" if phase == "decode" else "normal"
    scale_bytes = d / 128 * 4 if plan.dispatch.name == "fp8" else 0.0  # fp32 scale per 128 channels
    kw = dict(cluster=cluster, ep_devices=ep, tokens_per_device=tokens_per_device, hidden=d, top_k=moe.top_k,
              num_experts=moe.num_experts, mode=mode)
    dispatch, combine, comm_sources = {}, {}, set()
    for f in factors:
        # the busiest device draws f / ep of the routed pairs; DeepEP dedups a token per destination device
        dest = None if f == 1.0 else ExpertLoad.from_imbalance(float(f), ep, 1, "").shares[0]
        disp = collectives.dispatch_cost(bytes_per_element=plan.dispatch.bytes_per_element, scale_bytes_per_token=scale_bytes,
                                         dest_probability=dest, **kw)
        comb = collectives.combine_cost(bytes_per_element=plan.combine.bytes_per_element, dest_probability=dest, **kw)
        dispatch[f], combine[f] = disp.time_s, comb.time_s
        comm_sources |= {disp.source, comb.source}
    dispatch_s = np.array([dispatch[f] for f in rounded])
    combine_s = np.array([combine[f] for f in rounded])
    return _MoETerms(router_s, fixed.compute_s - router_s, expert_gemm, dispatch_s, combine_s,
                     frozenset(fixed.sources | comm_sources))


def step_cost(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, phase: str,
              tokens_per_device: float, context_tokens: float, load: ExpertLoad | None = None,
              draft_tokens: int = 0, *, overlap_efficiency: float = TBO_OVERLAP_EFFICIENCY) -> StepCost:
    """One forward step of the whole model on a pp = 1 layout, on its slowest device.

    decode: `tokens_per_device` sequences per device, each with `context_tokens` in its KV cache, each
    verifying 1 + `draft_tokens` tokens (speculative decoding with the model's MTP module).
    prefill: `tokens_per_device` prompt tokens per device per step, prompts of `context_tokens` tokens.
    """
    if phase not in ("decode", "prefill"):
        raise ValueError(f"phase must be decode or prefill, got {phase!r}")
    if layout.pp != 1:
        raise ValueError("step_cost models pp = 1 layouts; pipeline stages are not modelled yet")
    if draft_tokens and (phase != "decode" or not arch.num_mtp_layers):
        raise ValueError("draft tokens need the decode phase and a model with an MTP module (num_nextn_predict_layers)")
    n_moe = len(arch.moe_layers)
    if arch.is_moe and load is None:
        load = ExpertLoad.uniform(layout.ep, n_moe)
    if load is not None and load.shares.shape != (n_moe, layout.ep):
        raise ValueError(f"load shares must be [{n_moe}, {layout.ep}], got {load.shares.shape}")

    queries = 1 + draft_tokens
    layers = _layers(arch, plan, cluster, layout, phase, tokens_per_device * queries, context_tokens, load, queries,
                     overlap_efficiency)
    breakdown, by_type, sources = dict(layers.breakdown_s), dict(layers.by_type_s), set(layers.sources)

    # Embedding lookup, final norm and the LM head: decode samples every row, prefill the last token of each prompt
    rows = tokens_per_device * queries * layout.tp
    head_s, head_sources = _head(arch, plan, cluster, layout, rows if phase == "decode" else max(rows / context_tokens, 1.0), rows)
    by_type["embedding_lm_head"] = head_s
    breakdown["other"] += head_s
    sources |= head_sources

    if draft_tokens:  # the MTP module drafts one token per sequence per draft: one MoE layer, its projection, the LM head
        draft = _layers(arch, plan, cluster, layout, phase, tokens_per_device, context_tokens, load, 1, overlap_efficiency)
        rows = tokens_per_device * layout.tp
        d = arch.hidden_size
        eh_proj = _gemm(cluster.device, rows, d, 2 * d, plan.of("attention"), "mtp_eh_proj")
        draft_head_s, _ = _head(arch, plan, cluster, layout, rows, rows)
        per_draft = draft.moe_layer_s + eh_proj.total_s + draft_head_s
        by_type["mtp_draft"] = draft_tokens * per_draft
        for c in COMPONENTS:
            breakdown[c] += draft_tokens * draft.moe_breakdown_s[c] / n_moe
        breakdown["other"] += draft_tokens * (eh_proj.total_s + draft_head_s)
        sources |= draft.sources | {eh_proj.source}

    time_s = sum(by_type.values())
    return StepCost(
        phase=phase,
        time_s=time_s,
        tokens_per_device=tokens_per_device,
        breakdown_s=breakdown,
        overlap_hidden_s=max(0.0, sum(breakdown.values()) - time_s),
        by_layer_type_s=by_type,
        load_source=load.source if load is not None else "dense model",
        sources=tuple(sorted(sources)),
    )


@dataclass(frozen=True)
class _Layers:
    """The decoder layers of one step: time by layer type, breakdown per component (before overlap)."""

    by_type_s: dict[str, float]
    breakdown_s: dict[str, float]
    moe_breakdown_s: dict[str, float]  # the MoE layers' share of breakdown_s
    moe_layer_s: float  # one MoE layer on average
    sources: frozenset


def _layers(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, phase: str, rows_per_device: float,
            context_tokens: float, load: ExpertLoad | None, queries: int, overlap_efficiency: float) -> _Layers:
    overlap = layout.two_batch_overlap
    halves = 2 if overlap else 1
    b_group = rows_per_device * layout.tp / halves  # per micro-batch, per attention group
    b_dev = rows_per_device / halves
    attn_context = context_tokens if phase == "decode" else (context_tokens + 1) / 2
    # compute overlapped with DeepEP's normal kernels runs on the SMs they leave free
    num_sms = efficiency.NUM_SMS.get(cluster.device.name, efficiency.HOPPER_NUM_SMS)
    slowdown = num_sms / (num_sms - DEEPEP_NORMAL_SMS) if overlap and phase == "prefill" and arch.is_moe else 1.0

    attention = _Layer()
    _attention(attention, arch, plan, cluster, layout, b_group, attn_context, phase, queries)
    dense = _Layer()
    _dense_mlp(dense, arch, plan, cluster, layout, b_group)
    sources = set(attention.sources | dense.sources)

    breakdown = {c: 0.0 for c in COMPONENTS}
    moe_breakdown = {c: 0.0 for c in COMPONENTS}
    by_type = {"dense_layers": 0.0, "moe_layers": 0.0}
    n_moe = len(arch.moe_layers)
    n_dense = arch.num_layers - n_moe
    if n_dense:  # no all-to-all to hide: the halves run one after the other
        by_type["dense_layers"] = n_dense * halves * (attention.compute_s + attention.comm_s + dense.compute_s + dense.comm_s)
        for c in COMPONENTS:
            breakdown[c] += n_dense * halves * (attention.compute[c] + attention.comm[c] + dense.compute[c] + dense.comm[c])

    moe_layer_s = 0.0
    if n_moe:
        m = _moe(arch, plan, cluster, layout, b_dev, phase, load)
        sources |= m.sources
        attention_stage = (attention.compute_s + m.router_s) * slowdown + attention.comm_s
        expert_stage = (m.shared_expert_s + m.expert_gemm_s) * slowdown
        if overlap:
            def overlapped(a, b):
                return np.maximum(a, b) + (1.0 - overlap_efficiency) * np.minimum(a, b)
            layer_s = halves * (overlapped(attention_stage, m.dispatch_s) + overlapped(expert_stage, m.combine_s))
        else:
            layer_s = attention_stage + m.dispatch_s + expert_stage + m.combine_s
        by_type["moe_layers"] = float(np.sum(layer_s))
        moe_layer_s = by_type["moe_layers"] / n_moe
        for c in COMPONENTS:
            moe_breakdown[c] += n_moe * halves * (attention.compute[c] * slowdown + attention.comm[c])
        moe_breakdown["expert_gemm"] += halves * float(m.expert_gemm_s.sum()) * slowdown
        moe_breakdown["dispatch"] += halves * float(m.dispatch_s.sum())
        moe_breakdown["combine"] += halves * float(m.combine_s.sum())
        moe_breakdown["shared_expert"] += m.shared_expert_s * n_moe * halves * slowdown
        moe_breakdown["other"] += m.router_s * n_moe * halves * slowdown
        for c in COMPONENTS:
            breakdown[c] += moe_breakdown[c]
    return _Layers(by_type, breakdown, moe_breakdown, moe_layer_s, frozenset(sources))


def _head(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, head_rows: float,
          embed_rows: float) -> tuple[float, set[str]]:
    """LM head over `head_rows` rows and the embedding lookup of `embed_rows`, on one device of a TP group."""
    head = _gemm(cluster.device, head_rows, arch.vocab_size // layout.tp, arch.hidden_size, plan.of("lm_head"), "lm_head")
    embed = _memory_op(cluster.device, 2 * embed_rows * arch.hidden_size * plan.combine.bytes_per_element, "embedding")
    return head.total_s + embed.total_s, {head.source, embed.source}
