"""Model arithmetic from config fields alone: parameters, weight bytes, FLOPs per token, KV bytes.

Every count comes from one list of the model's weight matrices (`weight_matrices`), named as in the
checkpoint, so totals, active counts and bytes under any precision plan cannot disagree.
Shapes are [rows, cols] = [out_features, in_features]; vectors (norms, biases) are [1, n].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from hwmodels.model_arch import GQAAttention, MLAAttention, ModelArch
from hwmodels.precision import PrecisionPlan, WEIGHT_PARTS
from hwmodels.roles import Phase


@dataclass(frozen=True)
class WeightMatrix:
    name: str  # checkpoint-style name within its layer, e.g. 'self_attn.q_b_proj'
    part: str  # one of precision.WEIGHT_PARTS
    rows: int
    cols: int
    count: int  # instances in the whole model (layers x experts)
    active_count: float  # instances one token uses (top_k of the experts of each MoE layer)

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count

    @property
    def active_params(self) -> float:
        return self.rows * self.cols * self.active_count


def weight_matrices(arch: ModelArch) -> tuple[WeightMatrix, ...]:
    """Every weight of the main model (the multi-token-prediction modules excluded; see `mtp_params`)."""
    d, n_layers = arch.hidden_size, arch.num_layers
    n_moe = len(arch.moe_layers)
    n_dense = n_layers - n_moe
    out: list[WeightMatrix] = []

    def add(name, part, rows, cols, count, active_count=None):
        if count and rows and cols:
            out.append(WeightMatrix(name, part, rows, cols, count, count if active_count is None else active_count))

    out.extend(_attention_matrices(arch.attention, d, n_layers))
    add("input_layernorm", "norms", 1, d, n_layers)
    add("post_attention_layernorm", "norms", 1, d, n_layers)

    for proj, rows, cols in _mlp("mlp", arch.dense_intermediate_size, d):
        add(proj, "dense_mlp", rows, cols, n_dense)

    if arch.moe is not None:
        moe = arch.moe
        add("mlp.gate", "router", moe.num_experts, d, n_moe)
        for proj, rows, cols in _mlp("mlp.experts.N", moe.expert_intermediate_size, d):
            add(proj, "routed_experts", rows, cols, moe.num_experts * n_moe, moe.top_k * n_moe)
        for proj, rows, cols in _mlp("mlp.shared_experts", moe.shared_intermediate_size, d):
            add(proj, "shared_experts", rows, cols, n_moe)
        if moe.shared_gate:
            add("mlp.shared_expert_gate", "shared_experts", 1, d, n_moe)

    add("model.norm", "norms", 1, d, 1)
    add("model.embed_tokens", "embedding", arch.vocab_size, d, 1)
    if not arch.tie_word_embeddings:
        add("lm_head", "lm_head", arch.vocab_size, d, 1)
    return tuple(out)


def _mlp(prefix: str, width: int, d: int):
    return ((f"{prefix}.gate_proj", width, d), (f"{prefix}.up_proj", width, d), (f"{prefix}.down_proj", d, width))


def _attention_matrices(att: MLAAttention | GQAAttention, d: int, n: int) -> list[WeightMatrix]:
    m = []
    if isinstance(att, MLAAttention):
        h, qk = att.num_heads, att.qk_nope_head_dim + att.qk_rope_head_dim
        if att.q_lora_rank:
            m += [("self_attn.q_a_proj", "attention", att.q_lora_rank, d),
                  ("self_attn.q_a_layernorm", "norms", 1, att.q_lora_rank),
                  ("self_attn.q_b_proj", "attention", h * qk, att.q_lora_rank)]
        else:
            m += [("self_attn.q_proj", "attention", h * qk, d)]
        m += [("self_attn.kv_a_proj_with_mqa", "attention", att.kv_lora_rank + att.qk_rope_head_dim, d),
              ("self_attn.kv_a_layernorm", "norms", 1, att.kv_lora_rank),
              ("self_attn.kv_b_proj", "attention", h * (att.qk_nope_head_dim + att.v_head_dim), att.kv_lora_rank),
              ("self_attn.o_proj", "attention", d, h * att.v_head_dim)]
    else:
        q, kv = att.num_heads * att.head_dim, att.num_kv_heads * att.head_dim
        m += [("self_attn.q_proj", "attention", q, d), ("self_attn.k_proj", "attention", kv, d),
              ("self_attn.v_proj", "attention", kv, d), ("self_attn.o_proj", "attention", d, q)]
        if att.qk_norm:
            m += [("self_attn.q_norm", "norms", 1, att.head_dim), ("self_attn.k_norm", "norms", 1, att.head_dim)]
    return [WeightMatrix(name, part, r, c, n, n) for name, part, r, c in m]


def total_params(arch: ModelArch) -> int:
    return sum(w.params for w in weight_matrices(arch))


def active_params(arch: ModelArch) -> float:
    """Parameters one token touches: everything but the experts it is not routed to (embeddings included)."""
    return sum(w.active_params for w in weight_matrices(arch))


def params_by_part(arch: ModelArch) -> dict[str, int]:
    out = {p: 0 for p in WEIGHT_PARTS}
    for w in weight_matrices(arch):
        out[w.part] += w.params
    return out


def mtp_params(arch: ModelArch) -> int:
    """Parameters of the multi-token-prediction modules (DeepSeek-V3: 1), which share the embedding
    and LM head: per module two norms, the [D, 2D] projection, one MoE decoder layer and a norm."""
    if not arch.num_mtp_layers:
        return 0
    one_layer = [w for w in weight_matrices(arch) if w.part not in ("embedding", "lm_head") and w.name != "model.norm"]
    per_moe_layer = sum(
        w.rows * w.cols * (w.count // arch.num_layers if w.part in ("attention", "norms")
                           else w.count // max(len(arch.moe_layers), 1))
        for w in one_layer
        if w.part != "dense_mlp"
    )
    d = arch.hidden_size
    return arch.num_mtp_layers * (per_moe_layer + 2 * d * d + 3 * d)


def weight_bytes_by_part(arch: ModelArch, plan: PrecisionPlan) -> dict[str, float]:
    """Bytes of each part under a precision plan, block scales included."""
    out = {p: 0.0 for p in WEIGHT_PARTS}
    for w in weight_matrices(arch):
        out[w.part] += plan.of(w.part).matrix_bytes(w.rows, w.cols) * w.count
    return out


def weight_bytes(arch: ModelArch, plan: PrecisionPlan) -> float:
    return sum(weight_bytes_by_part(arch, plan).values())


def kv_bytes_per_token(arch: ModelArch, plan: PrecisionPlan) -> float:
    """KV cache bytes one token occupies across all layers.

    MLA caches the compressed latent plus the shared rope key: (kv_lora_rank + qk_rope_head_dim)
    elements per layer (Kimi K2 in bf16: 576 x 61 x 2 = 70,272 B). GQA caches K and V of each KV head.
    """
    return arch.attention.kv_elements_per_token_per_layer * arch.num_layers * plan.kv_cache.bytes_per_element


@dataclass(frozen=True)
class UnitSizes:
    """Bytes of the units a memory layout places: per layer, per expert, and the vocabulary parts."""

    attention_per_layer: float
    norms_per_layer: float
    dense_mlp_per_dense_layer: float
    router_per_moe_layer: float
    shared_per_moe_layer: float
    expert: float  # one routed expert of one layer
    embedding: float
    lm_head: float


def unit_sizes(arch: ModelArch, plan: PrecisionPlan) -> UnitSizes:
    b = weight_bytes_by_part(arch, plan)
    n_moe = max(len(arch.moe_layers), 1)
    n_experts = arch.moe.num_experts if arch.moe else 1
    return UnitSizes(
        attention_per_layer=b["attention"] / arch.num_layers,
        norms_per_layer=b["norms"] / arch.num_layers,
        dense_mlp_per_dense_layer=b["dense_mlp"] / max(arch.num_dense_layers, 1),
        router_per_moe_layer=b["router"] / n_moe,
        shared_per_moe_layer=b["shared_experts"] / n_moe,
        expert=b["routed_experts"] / (n_experts * n_moe),
        embedding=b["embedding"],
        lm_head=b["lm_head"] if not arch.tie_word_embeddings else b["embedding"],
    )


def attention_core_flops_per_token_per_layer(arch: ModelArch, context_tokens: float, phase: str) -> float:
    """FLOPs of score and value products for one query token attending to `context_tokens` keys.

    MLA prefill runs the non-absorbed form (keys of qk_nope + qk_rope per head, values of v_head_dim);
    MLA decode runs the absorbed form over the compressed cache (scores over kv_lora_rank + rope,
    values over kv_lora_rank); the absorption projections themselves are kv_b_proj's FLOPs, counted
    with the linear layers.
    """
    att = arch.attention
    if isinstance(att, MLAAttention):
        if phase == Phase.PREFILL:
            per_key = att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim
        else:
            per_key = 2 * att.kv_lora_rank + att.qk_rope_head_dim
    else:
        per_key = 2 * att.head_dim
    return 2.0 * att.num_heads * per_key * context_tokens


def flops_per_token(arch: ModelArch, context_tokens: int, phase: str) -> dict[str, float]:
    """FLOPs per token, split into linear layers, attention core and LM head.

    phase 'prefill': a prompt of `context_tokens` tokens processed at once, causal, so a token attends
    to (L + 1) / 2 keys on average; logits only for the last prompt token (L^-1 of the LM head per token).
    phase 'decode': one new token with `context_tokens` tokens already in the KV cache.
    """
    phase = Phase(phase)
    linear = lm_head = 0.0
    for w in weight_matrices(arch):
        if w.part in ("norms", "embedding"):
            continue  # elementwise or a lookup: no matmul FLOPs
        if w.part == "lm_head":
            lm_head += 2.0 * w.rows * w.cols
        else:
            linear += 2.0 * w.active_params
    if arch.tie_word_embeddings:
        lm_head = 2.0 * arch.vocab_size * arch.hidden_size
    keys = (context_tokens + 1) / 2 if phase == Phase.PREFILL else context_tokens
    attention = attention_core_flops_per_token_per_layer(arch, keys, phase) * arch.num_layers
    if phase == Phase.PREFILL:
        lm_head /= context_tokens
    return {"linear": linear, "attention": attention, "lm_head": lm_head, "total": linear + attention + lm_head}


def summary(arch: ModelArch, plan: PrecisionPlan, context_tokens: int = 4096) -> Mapping[str, object]:
    """Everything above as one JSON-ready mapping (what `moeplan model NAME --json` prints)."""
    by_part = weight_bytes_by_part(arch, plan)
    return {
        "model": arch.name,
        "model_type": arch.model_type,
        "moe": arch.is_moe,
        "attention": "mla" if arch.is_mla else "gqa",
        "layers": arch.num_layers,
        "moe_layers": len(arch.moe_layers),
        "experts": arch.moe.num_experts if arch.moe else 0,
        "experts_per_token": arch.moe.top_k if arch.moe else 0,
        "total_params": total_params(arch),
        "active_params": active_params(arch),
        "mtp_params": mtp_params(arch),
        "params_by_part": params_by_part(arch),
        "precision": {p: plan.of(p).name for p in WEIGHT_PARTS}
        | {"kv_cache": plan.kv_cache.name, "dispatch": plan.dispatch.name, "combine": plan.combine.name},
        "precision_source": plan.source,
        "weight_bytes": sum(by_part.values()),
        "weight_bytes_by_part": by_part,
        "kv_bytes_per_token": kv_bytes_per_token(arch, plan),
        "context_tokens": context_tokens,
        "prefill_flops_per_token": flops_per_token(arch, context_tokens, Phase.PREFILL)["total"],
        "decode_flops_per_token": flops_per_token(arch, context_tokens, Phase.DECODE)["total"],
    }
