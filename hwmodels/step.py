"""Step time of a layout: one decode step or one prefill step, summed over layers, with a breakdown.

Per layer, on the slowest device (a step of an expert-parallel group waits for it):
  attention (projections, MLA core, TP all-reduce) -> router -> dispatch (all-to-all, fp8)
  -> grouped expert GEMMs (gate/up, SwiGLU, down) + shared expert -> combine (all-to-all, bf16).
The MoE term takes per-layer device loads (`ExpertLoad`, from a placement and routing data); without
routing data it assumes uniform load and says so in `StepCost.load_source`.

Two-batch overlap (DeepSeek's schedule, deepseek-ai/profile-data) splits the step into two
micro-batches and pairs each compute stage of one with a communication stage of the other:
attention with dispatch, MoE experts with combine. A layer then costs
2 x (max(attention, dispatch) + max(experts, combine)) of a half batch instead of the sum of all four,
and the halves run their GEMMs at half the batch, which costs efficiency at small batches. DeepEP's
normal (prefill) kernels occupy SMs while they run (`Buffer.num_sms`, 20 by default), so compute
overlapped with them runs on the remaining SMs; its low-latency (decode) kernels occupy none while
they wait (DeepEP README, hook-based overlap).

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
from hwmodels.precision import PrecisionPlan, QuantScheme
from hwmodels.roofline import OpCost

COMPONENTS = ("attention", "dense_mlp", "expert_gemm", "shared_expert", "dispatch", "combine", "other")
DEEPEP_NORMAL_SMS = 20  # deepseek-ai/DeepEP deep_ep/buffer.py: Buffer.num_sms, SMs its normal kernels occupy


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


def _gemm(device, m, n, k, scheme: QuantScheme, name, groups=1, layout="dense") -> OpCost:
    return _gemm_cached(device, max(int(math.ceil(m)), 1), n, k, scheme, name, groups, layout)


@lru_cache(maxsize=1 << 16)
def _gemm_cached(device, m: int, n: int, k: int, scheme: QuantScheme, name: str, groups: int, layout: str) -> OpCost:
    # a layout search evaluates the same GEMM shapes across many layouts and batch sizes
    return efficiency.gemm_cost(device, m, n, k, dtype=_compute_dtype(scheme), groups=groups, layout=layout,
                                weight_bytes_per_element=_weight_bytes_per_element(scheme, n, k), name=name)


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
               b: float, context: float, phase: str) -> None:
    """Attention of one TP group for `b` query tokens (decode: b sequences of `context`; prefill: b tokens,
    causal average context given)."""
    dev, att, d, t = cluster.device, arch.attention, arch.hidden_size, layout.tp
    w = plan.of("attention")
    if isinstance(att, MLAAttention):
        h = att.num_heads // t
        qk = att.qk_nope_head_dim + att.qk_rope_head_dim
        if att.q_lora_rank:  # q_a and kv_a are replicated across TP ranks; the rest is column/row parallel
            layer.op("attention", _gemm(dev, b, att.q_lora_rank, d, w, "q_a_proj"))
            layer.op("attention", _gemm(dev, b, h * qk, att.q_lora_rank, w, "q_b_proj"))
        else:
            layer.op("attention", _gemm(dev, b, h * qk, d, w, "q_proj"))
        layer.op("attention", _gemm(dev, b, att.kv_lora_rank + att.qk_rope_head_dim, d, w, "kv_a_proj"))
        if phase == "decode":  # absorbed: W_UK into q, attention over the latent, W_UV out of it
            layer.op("attention", _gemm(dev, b, att.kv_lora_rank, att.qk_nope_head_dim, w, "w_uk", groups=h, layout="masked"))
            layer.op("attention", efficiency.mla_decode_cost(
                dev, int(b), context, h, att.kv_lora_rank, att.qk_rope_head_dim, plan.kv_cache.bytes_per_element))
            layer.op("attention", _gemm(dev, b, att.v_head_dim, att.kv_lora_rank, w, "w_uv", groups=h, layout="masked"))
        else:  # non-absorbed: expand the latent to per-head keys and values
            layer.op("attention", _gemm(dev, b, h * (att.qk_nope_head_dim + att.v_head_dim), att.kv_lora_rank, w, "kv_b_proj"))
            layer.op("attention", efficiency.attention_prefill_cost(dev, int(b), context, h, qk, att.v_head_dim))
        layer.op("attention", _gemm(dev, b, d, h * att.v_head_dim, w, "o_proj"))
    else:
        h, kv = att.num_heads // t, max(att.num_kv_heads // t, 1)
        layer.op("attention", _gemm(dev, b, (h + 2 * kv) * att.head_dim, d, w, "qkv_proj"))
        if phase == "decode":
            kv_bytes = b * context * 2 * kv * att.head_dim * plan.kv_cache.bytes_per_element
            layer.op("attention", efficiency.elementwise_cost(dev, kv_bytes, "gqa_decode_kv_read"))
        else:
            layer.op("attention", efficiency.attention_prefill_cost(dev, int(b), context, h, att.head_dim, att.head_dim))
        layer.op("attention", _gemm(dev, b, d, h * att.head_dim, w, "o_proj"))
    act = plan.combine.bytes_per_element
    # RMSNorms, residual adds and rope: a few reads and writes of the hidden state per token
    layer.op("other", efficiency.elementwise_cost(dev, 6 * b * d * act, "norms_residual"))
    if t > 1:
        ar = collectives.allreduce_cost(cluster, t, b * d * act)
        layer.communicate("attention", ar.time_s, ar.source)


def _dense_mlp(layer: _Layer, arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, b: float) -> None:
    dev, d, width, w = cluster.device, arch.hidden_size, arch.dense_intermediate_size // layout.tp, plan.of("dense_mlp")
    layer.op("dense_mlp", _gemm(dev, b, 2 * width, d, w, "dense_gate_up"))
    layer.op("dense_mlp", _gemm(dev, b, d, width, w, "dense_down"))
    if layout.tp > 1:
        ar = collectives.allreduce_cost(cluster, layout.tp, b * d * plan.combine.bytes_per_element)
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
        ws = plan.of("shared_experts")
        fixed.op("shared_expert", _gemm(dev, tokens_per_device, 2 * moe.shared_intermediate_size, d, ws, "shared_gate_up"))
        fixed.op("shared_expert", _gemm(dev, tokens_per_device, d, moe.shared_intermediate_size, ws, "shared_down"))
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
        swiglu = efficiency.elementwise_cost(dev, pairs * f * 3 * width * act, "swiglu")
        expert_s.append((f, gate_up.total_s + down.total_s + swiglu.total_s))
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
              tokens_per_device: float, context_tokens: float, load: ExpertLoad | None = None) -> StepCost:
    """One forward step of the whole model on a pp = 1 layout, on its slowest device.

    decode: `tokens_per_device` sequences per device, each with `context_tokens` in its KV cache.
    prefill: `tokens_per_device` prompt tokens per device per step, prompts of `context_tokens` tokens.
    """
    if phase not in ("decode", "prefill"):
        raise ValueError(f"phase must be decode or prefill, got {phase!r}")
    if layout.pp != 1:
        raise ValueError("step_cost models pp = 1 layouts; pipeline stages are not modelled yet")
    n_moe = len(arch.moe_layers)
    if arch.is_moe and load is None:
        load = ExpertLoad.uniform(layout.ep, n_moe)
    if load is not None and load.shares.shape != (n_moe, layout.ep):
        raise ValueError(f"load shares must be [{n_moe}, {layout.ep}], got {load.shares.shape}")

    overlap = layout.two_batch_overlap
    halves = 2 if overlap else 1
    b_group = tokens_per_device * layout.tp / halves  # per micro-batch, per attention group
    b_dev = tokens_per_device / halves
    attn_context = context_tokens if phase == "decode" else (context_tokens + 1) / 2
    # compute overlapped with DeepEP's normal kernels runs on the SMs they leave free
    num_sms = efficiency.NUM_SMS.get(cluster.device.name, efficiency.HOPPER_NUM_SMS)
    slowdown = num_sms / (num_sms - DEEPEP_NORMAL_SMS) if overlap and phase == "prefill" and arch.is_moe else 1.0

    attention = _Layer()
    _attention(attention, arch, plan, cluster, layout, b_group, attn_context, phase)
    dense = _Layer()
    _dense_mlp(dense, arch, plan, cluster, layout, b_group)
    sources = set(attention.sources | dense.sources)

    breakdown = {c: 0.0 for c in COMPONENTS}
    by_type = {"dense_layers": 0.0, "moe_layers": 0.0, "embedding_lm_head": 0.0}
    n_dense = arch.num_layers - n_moe
    if n_dense:  # no all-to-all to hide: the halves run one after the other
        by_type["dense_layers"] = n_dense * halves * (attention.compute_s + attention.comm_s + dense.compute_s + dense.comm_s)
        for c in COMPONENTS:
            breakdown[c] += n_dense * halves * (attention.compute[c] + attention.comm[c] + dense.compute[c] + dense.comm[c])

    if n_moe:
        m = _moe(arch, plan, cluster, layout, b_dev, phase, load)
        sources |= m.sources
        attention_stage = (attention.compute_s + m.router_s) * slowdown + attention.comm_s
        expert_stage = (m.shared_expert_s + m.expert_gemm_s) * slowdown
        if overlap:
            layer_s = halves * (np.maximum(attention_stage, m.dispatch_s) + np.maximum(expert_stage, m.combine_s))
        else:
            layer_s = attention_stage + m.dispatch_s + expert_stage + m.combine_s
        by_type["moe_layers"] = float(np.sum(layer_s))
        for c in COMPONENTS:
            breakdown[c] += n_moe * halves * (attention.compute[c] * slowdown + attention.comm[c])
        breakdown["expert_gemm"] += halves * float(m.expert_gemm_s.sum()) * slowdown
        breakdown["dispatch"] += halves * float(m.dispatch_s.sum())
        breakdown["combine"] += halves * float(m.combine_s.sum())
        breakdown["shared_expert"] += m.shared_expert_s * n_moe * halves * slowdown
        breakdown["other"] += m.router_s * n_moe * halves * slowdown

    # Embedding lookup, final norm and the LM head: decode samples every sequence, prefill the last token of each prompt
    head_rows = b_group * halves if phase == "decode" else max(b_group * halves / context_tokens, 1.0)
    head = _gemm(cluster.device, head_rows, arch.vocab_size // layout.tp, arch.hidden_size, plan.of("lm_head"), "lm_head")
    embed = efficiency.elementwise_cost(cluster.device, 2 * b_group * halves * arch.hidden_size * plan.combine.bytes_per_element, "embedding")
    by_type["embedding_lm_head"] = head.total_s + embed.total_s
    breakdown["other"] += head.total_s + embed.total_s
    sources |= {head.source, embed.source}

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
