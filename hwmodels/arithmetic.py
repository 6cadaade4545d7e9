"""Model arithmetic from config fields alone: parameters, weight bytes, FLOPs per token, KV bytes.

Every count comes from one list of the model's weight matrices (`weight_matrices`), named as in the
checkpoint, so totals, active counts and bytes under any precision plan cannot disagree.
Shapes are [rows, cols] = [out_features, in_features]; vectors (norms, biases) are [1, n].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from hwmodels.attention_kinds import LINEAR_STATE_BYTES_PER_ELEMENT, CompressedAttention, Kind
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

    out.extend(_attention_weights(arch))
    add("input_layernorm", "norms", 1, d, n_layers)
    add("post_attention_layernorm", "norms", 1, d, n_layers)

    for proj, rows, cols in _mlp("mlp", arch.dense_intermediate_size, d):
        add(proj, "dense_mlp", rows, cols, n_dense)

    if arch.moe is not None:
        moe = arch.moe
        add("mlp.gate", "router", moe.num_experts, d, n_moe)
        expert_d = moe.latent_size or d
        for proj, rows, cols in _mlp("mlp.experts.N", moe.expert_intermediate_size, expert_d):
            add(proj, "routed_experts", rows, cols, moe.num_experts * n_moe, moe.top_k * n_moe)
        if moe.latent_size:  # latent MoE: every token's projection into and out of the experts' width
            add("mlp.latent_down_proj", "shared_experts", moe.latent_size, d, n_moe)
            add("mlp.latent_up_proj", "shared_experts", d, moe.latent_size, n_moe)
            add("mlp.latent_norm", "norms", 1, moe.latent_size, n_moe)
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


def _attention_weights(arch: ModelArch) -> list[WeightMatrix]:
    """The attention weights of every layer, each matrix counted over the layers of its kind."""
    d, att = arch.hidden_size, arch.attention
    counts: dict[tuple[str, str, int, int], int] = {}

    def add(matrices, n=1):
        for m in matrices:
            counts[m] = counts.get(m, 0) + n

    if isinstance(att, CompressedAttention):
        for layer in range(arch.num_layers):
            add(att.matrices(d, layer))
    else:
        full = len(arch.layers_of(Kind.FULL)) + len(arch.layers_of(Kind.SLIDING))
        add(_attention_matrices(att, d), full)
        if arch.indexer is not None:
            q_rank = att.q_lora_rank if isinstance(att, MLAAttention) and att.q_lora_rank else d
            add(arch.indexer.matrices(d, q_rank), full)
    if arch.linear is not None:
        add(arch.linear.matrices(d), len(arch.layers_of(Kind.LINEAR)))
    return [WeightMatrix(name, part, r, c, n, n) for (name, part, r, c), n in counts.items() if n]


def _attention_matrices(att: MLAAttention | GQAAttention, d: int) -> list[tuple[str, str, int, int]]:
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
        gate_width = h * att.v_head_dim
    else:
        q, kv = att.num_heads * att.head_dim, att.num_kv_heads * att.head_dim
        m += [("self_attn.q_proj", "attention", q, d), ("self_attn.k_proj", "attention", kv, d),
              ("self_attn.v_proj", "attention", att.num_kv_heads * att.value_dim, d),
              ("self_attn.o_proj", "attention", d, att.num_heads * att.value_dim)]
        if att.qk_norm:
            m += [("self_attn.q_norm", "norms", 1, att.head_dim), ("self_attn.k_norm", "norms", 1, att.head_dim)]
        gate_width = q
    if att.output_gate:
        m.append(("self_attn.gate_proj", "attention", gate_width, d))
    return m


def total_params(arch: ModelArch) -> int:
    return sum(w.params for w in weight_matrices(arch))


def active_params(arch: ModelArch) -> float:
    """Parameters one token touches: everything but the experts it is not routed to (embeddings included)."""
    return sum(w.active_params for w in weight_matrices(arch))


def active_params_excluding_embedding(arch: ModelArch) -> float:
    """`active_params` less the input embedding table, of which a token reads one row (OpenAI's gpt-oss model
    card counts active parameters this way: 5.13B of gpt-oss-120b's 116.83B)."""
    return active_params(arch) - sum(w.params for w in weight_matrices(arch) if w.part == "embedding")


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
        w.rows * w.cols * (w.count / arch.num_layers if w.part in ("attention", "norms")
                           else w.count / max(len(arch.moe_layers), 1))
        for w in one_layer
        if w.part != "dense_mlp"
    )  # attention averaged over the layers' kinds (an MTP layer's is one of them)
    d = arch.hidden_size
    return arch.num_mtp_layers * round(per_moe_layer + 2 * d * d + 3 * d)


def weight_bytes_by_part(arch: ModelArch, plan: PrecisionPlan) -> dict[str, float]:
    """Bytes of each part under a precision plan, block scales included."""
    out = {p: 0.0 for p in WEIGHT_PARTS}
    for w in weight_matrices(arch):
        out[w.part] += plan.of(w.part).matrix_bytes(w.rows, w.cols) * w.count
    return out


def weight_bytes(arch: ModelArch, plan: PrecisionPlan) -> float:
    return sum(weight_bytes_by_part(arch, plan).values())


def kv_bytes_per_token(arch: ModelArch, plan: PrecisionPlan, sliding_kv_share: float = 0.0) -> float:
    """Cache bytes that grow with each token of context, summed over the layers that keep them.

    MLA caches the compressed latent plus the shared rope key: (kv_lora_rank + qk_rope_head_dim)
    elements per layer (Kimi K2 in bf16: 576 x 61 x 2 = 70,272 B). GQA caches K and V of each KV head.
    Only FULL layers grow (a DSA indexer adds its fp8 key per token); SLIDING and LINEAR layers keep a bounded
    cache (`window_bytes_per_sequence`, `linear_state_bytes_per_sequence`); DeepSeek-V4 keeps one 512-wide
    entry per `ratio` tokens (and, on ratio-4 layers, the indexer's key per entry).
    `sliding_kv_share` > 0: the serving engine's pool reserves that share of a full layer's cache per token for each
    SLIDING layer instead of its window (catalog.sliding_kv_share: TensorRT-LLM's one pool at the longest window, 1;
    SGLang's swa_full_tokens_ratio, 0.8).
    """
    att, kv = arch.attention, plan.kv_cache.bytes_per_element
    if isinstance(att, CompressedAttention):
        return sum(att.head_dim * kv / r + (att.indexer.key_bytes_per_token / r if r == 4 else 0.0)
                   for r in att.ratios if r)
    per_layer = att.kv_elements_per_token_per_layer * kv
    sliding = sliding_kv_share * per_layer * len(arch.layers_of(Kind.SLIDING))
    if arch.indexer is not None:
        per_layer += arch.indexer.key_bytes_per_token
    return per_layer * len(arch.layers_of(Kind.FULL)) + sliding


def window_bytes_per_sequence(arch: ModelArch, plan: PrecisionPlan, context_tokens: float,
                              sliding_kv_share: float = 0.0) -> float:
    """The sliding windows' cache of one sequence: min(context, window) tokens in each SLIDING layer (gpt-oss: 128)
    or, for DeepSeek-V4, in every layer; none where the engine holds the SLIDING layers per token
    (`kv_bytes_per_token`'s `sliding_kv_share`)."""
    att, kv = arch.attention, plan.kv_cache.bytes_per_element
    if isinstance(att, CompressedAttention):
        return min(context_tokens, att.window_tokens) * att.head_dim * kv * arch.num_layers
    if sliding_kv_share:
        return 0.0
    sliding = len(arch.layers_of(Kind.SLIDING))
    return min(context_tokens, arch.sliding_window) * att.kv_elements_per_token_per_layer * kv * sliding


def linear_state_bytes_per_sequence(arch: ModelArch) -> float:
    """The fixed recurrent state of one sequence over the LINEAR layers, in fp32 (Kimi K3: 69 KDA layers x
    (96 x 128 x 128 + 3 x 3 x 12,288) x 4 B), whatever the context length."""
    if arch.linear is None:
        return 0.0
    return arch.linear.state_elements_per_sequence * LINEAR_STATE_BYTES_PER_ELEMENT * len(arch.layers_of(Kind.LINEAR))


def cache_bytes_per_sequence(arch: ModelArch, plan: PrecisionPlan, context_tokens: float) -> float:
    """Everything one sequence of `context_tokens` keeps between steps: KV, windows and linear state."""
    return (kv_bytes_per_token(arch, plan) * context_tokens + window_bytes_per_sequence(arch, plan, context_tokens)
            + linear_state_bytes_per_sequence(arch))


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


# flash-linear-attention's chunked KDA / gated-delta-rule kernels work in chunks of 64 tokens (chunk_size=64)
LINEAR_CHUNK_TOKENS = 64


def attention_core_flops_per_token_per_layer(arch: ModelArch, context_tokens: float, phase: str,
                                             layer: int | None = None) -> float:
    """FLOPs of score and value products for one query token attending to `context_tokens` keys in `layer`
    (None: a FULL layer).

    MLA prefill runs the non-absorbed form (keys of qk_nope + qk_rope per head, values of v_head_dim);
    MLA decode runs the absorbed form over the compressed cache (scores over kv_lora_rank + rope,
    values over kv_lora_rank); the absorption projections themselves are kv_b_proj's FLOPs, counted
    with the linear layers. A DSA indexer scores all `context_tokens` keys, then the attention reads its top-k;
    a SLIDING layer reads at most its window; a LINEAR layer does two [dk, dv] state products per head
    (decode), plus, chunked in prefill, attention within a chunk of LINEAR_CHUNK_TOKENS (half of it on average).
    """
    kind = arch.kind(layer) if layer is not None else Kind.FULL
    att = arch.attention
    if kind == Kind.LINEAR:
        lin = arch.linear
        intra = LINEAR_CHUNK_TOKENS / 2 * (lin.key_head_dim + lin.value_head_dim) if phase == Phase.PREFILL else 0.0
        return 2.0 * lin.num_value_heads * (2 * lin.key_head_dim * lin.value_head_dim + intra)
    if isinstance(att, CompressedAttention):
        index = layer if layer is not None else 0
        keys = att.keys_read(index, context_tokens)
        ratio = att.ratios[index]
        indexer = 2.0 * att.indexer.num_heads * att.indexer.head_dim * context_tokens / ratio if ratio == 4 else 0.0
        return 2.0 * att.num_heads * 2 * att.head_dim * keys + indexer
    keys, indexer = context_tokens, 0.0
    if kind == Kind.SLIDING:
        keys = min(context_tokens, arch.sliding_window)
    elif arch.indexer is not None:
        keys = min(context_tokens, arch.indexer.top_k)
        indexer = 2.0 * arch.indexer.num_heads * arch.indexer.head_dim * context_tokens
    if isinstance(att, MLAAttention):
        if phase == Phase.PREFILL:
            per_key = att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim
        else:
            per_key = 2 * att.kv_lora_rank + att.qk_rope_head_dim
    else:
        per_key = att.head_dim + att.value_dim
    return 2.0 * att.num_heads * per_key * keys + indexer


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
    attention = sum(attention_core_flops_per_token_per_layer(arch, keys, phase, i) for i in range(arch.num_layers))
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
        "attention": arch.attention_kind_name,
        "attention_layers": {k.value: len(arch.layers_of(k)) for k in Kind if arch.layers_of(k)},
        "sliding_window_tokens": arch.sliding_window
        or (arch.attention.window_tokens if isinstance(arch.attention, CompressedAttention) else 0),
        "layers": arch.num_layers,
        "moe_layers": len(arch.moe_layers),
        "experts": arch.moe.num_experts if arch.moe else 0,
        "experts_per_token": arch.moe.top_k if arch.moe else 0,
        "shared_experts": arch.moe.num_shared_experts if arch.moe else 0,
        "latent_moe_size": arch.moe.latent_size if arch.moe else 0,
        "hash_routed_layers": arch.moe.hash_layers if arch.moe else 0,
        "mtp_layers": arch.num_mtp_layers,
        "total_params": total_params(arch),
        "active_params": active_params(arch),
        "active_params_excluding_embedding": active_params_excluding_embedding(arch),
        "mtp_params": mtp_params(arch),
        "params_by_part": params_by_part(arch),
        "precision": {p: plan.of(p).name for p in WEIGHT_PARTS}
        | {"kv_cache": plan.kv_cache.name, "dispatch": plan.dispatch.name, "combine": plan.combine.name},
        "precision_source": plan.source,
        "weight_bytes": sum(by_part.values()),
        "weight_bytes_by_part": by_part,
        "kv_bytes_per_token": kv_bytes_per_token(arch, plan),
        "context_tokens": context_tokens,
        "window_bytes_per_sequence": window_bytes_per_sequence(arch, plan, context_tokens),
        "linear_state_bytes_per_sequence": linear_state_bytes_per_sequence(arch),
        "cache_bytes_per_sequence": cache_bytes_per_sequence(arch, plan, context_tokens),
        "vision_params": arch.vision.params if arch.vision else 0,
        # a 1024 x 1024-pixel image, as an example of what an image costs the prompt and the encoder
        "image_tokens_per_1024px_image": arch.vision.tokens_per_image(1024, 1024) if arch.vision else 0,
        "vision_flops_per_1024px_image": arch.vision.flops_per_image(1024, 1024) if arch.vision else 0.0,
        "prefill_flops_per_token": flops_per_token(arch, context_tokens, Phase.PREFILL)["total"],
        "decode_flops_per_token": flops_per_token(arch, context_tokens, Phase.DECODE)["total"],
    }
