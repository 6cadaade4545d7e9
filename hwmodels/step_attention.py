"""The attention of one layer in a step, priced by its kind (hwmodels.attention_kinds).

`price(layer, b, context, phase, queries, index)` adds the layer's operators to `layer` (hwmodels.step's
accumulator: `gemm`, `op`, `memory`, `quantize_input`, `allreduce`, `ctx`) for `b` query rows of one TP group:
- FULL MLA: prefill non-absorbed, decode absorbed over the latent cache (FlashMLA); FULL GQA: a fused QKV
  projection, decode reading the K and V of each KV head. A DSA indexer (DeepSeek-V3.2, GLM-5) adds its
  projections and a scoring pass over every cached key, and the attention then reads at most `index_topk` keys.
- SLIDING: the same attention over at most `sliding_window` keys.
- LINEAR (KDA, Gated DeltaNet): the input projections, the short convolution, and the delta rule: in decode one
  read and one write of the fp32 state per sequence; in prefill the chunked form, priced as attention over half
  a chunk of keys plus two [dk, dv] state products per token (see arithmetic.attention_core_flops...).
- COMPRESSED (DeepSeek-V4): low-rank q, one KV head of head_dim, the compressor, the indexer on ratio-4 layers,
  sparse attention over the window plus the compressed entries read (FlashMLA's sparse kernel: priced as
  absorbed MLA over head_dim - rope latent and rope keys), and the grouped low-rank output projection.
`context` is the keys one query sees: decode the cache length, prefill the causal average.

Shape legend: b = query rows, h = heads on this device, d = hidden, t = attention TP.
"""

from __future__ import annotations

from hwmodels import efficiency
from hwmodels.arithmetic import LINEAR_CHUNK_TOKENS
from hwmodels.attention_kinds import INDEXER_KEY_BYTES_PER_ELEMENT, LINEAR_STATE_BYTES_PER_ELEMENT, CompressedAttention, Kind
from hwmodels.model_arch import MLAAttention
from hwmodels.roles import Phase


QK_NORM_STATISTIC_BYTES = 4  # MiniMaxText01RMSNormTP reduces its variance in fp32
_GROUPS_CACHE: dict[int, tuple] = {}  # id(arch) -> (arch, its groups): the arch held, so its id is never reused
_GROUPS_CACHE_SIZE = 64


def layer_groups(arch) -> tuple[tuple[tuple, ...], tuple[int, ...], dict[tuple, int], tuple[int, ...]]:
    """(the distinct signatures, one per group; each layer's group; dense layers per signature; each MoE layer's
    group, in order), once per model: every step of every layout shares them."""
    hit = _GROUPS_CACHE.get(id(arch))
    if hit is not None and hit[0] is arch:
        return hit[1]
    signatures = [signature(arch, i) for i in range(arch.num_layers)]
    distinct = tuple(dict.fromkeys(signatures))
    group = tuple(distinct.index(sig) for sig in signatures)
    moe = set(arch.moe_layers)
    dense: dict[tuple, int] = {}
    for i, sig in enumerate(signatures):
        if i not in moe:
            dense[sig] = dense.get(sig, 0) + 1
    groups = (distinct, group, dense, tuple(group[i] for i in arch.moe_layers))
    if len(_GROUPS_CACHE) >= _GROUPS_CACHE_SIZE:
        _GROUPS_CACHE.clear()
    _GROUPS_CACHE[id(arch)] = (arch, groups)
    return groups


def signature(arch, index: int) -> tuple:
    """Layers with one signature cost the same: their kind, and for DeepSeek-V4 their compression ratio."""
    if isinstance(arch.attention, CompressedAttention):
        return (Kind.COMPRESSED, arch.attention.ratios[index])
    return (arch.kind(index),)


def price(layer, b: float, context: float, phase: Phase, queries_per_sequence: int, index: int) -> None:
    ctx = layer.ctx
    arch, plan, t = ctx.arch, ctx.precision, ctx.layout.tp
    d, w, act = arch.hidden_size, plan.of("attention"), plan.combine.bytes_per_element
    kind = arch.kind(index)
    layer.quantize_input("attention", b, d, w)  # the normed hidden state, shared by the input projections
    if kind == Kind.LINEAR:
        _linear(layer, b, context, phase, queries_per_sequence)
    elif isinstance(arch.attention, CompressedAttention):
        _compressed(layer, b, context, phase, queries_per_sequence, index)
    else:
        keys = min(context, arch.sliding_window) if kind == Kind.SLIDING else context
        if kind == Kind.FULL and arch.indexer is not None:
            _indexer(layer, b, context, phase, queries_per_sequence)
            keys = min(context, arch.indexer.top_k)
        _full(layer, b, keys, phase, queries_per_sequence, sliding=kind == Kind.SLIDING)
    # RMSNorms, residual adds and rope: a few reads and writes of the hidden state per token
    layer.memory("other", 6 * b * d * act, "norms_residual")
    if t > 1:
        layer.allreduce("attention", t, b * d * act)


def _full(layer, b: float, context: float, phase: Phase, queries_per_sequence: int, sliding: bool = False) -> None:
    ctx = layer.ctx
    arch, plan, dev, t = ctx.arch, ctx.precision, ctx.cluster.device, ctx.layout.tp
    att, d = arch.attention, arch.hidden_size
    w = plan.of("attention")
    act = plan.combine.bytes_per_element
    if isinstance(att, MLAAttention):
        h = att.num_heads // t
        qk = att.qk_nope_head_dim + att.qk_rope_head_dim
        kv_a = att.kv_lora_rank + att.qk_rope_head_dim
        if att.q_lora_rank:  # q_a and kv_a are replicated across TP ranks; the rest is column/row parallel
            # q_a and kv_a read the same input, and the engines run them as one GEMM (SGLang's
            # fused_qkv_a_proj_with_mqa, TensorRT-LLM's fused_a, vLLM's fused_qkv_a_proj)
            layer.gemm("attention", b, att.q_lora_rank + kv_a, d, w, "qkv_a_proj")
            layer.quantize_input("attention", b, att.q_lora_rank, w)
            layer.gemm("attention", b, h * qk, att.q_lora_rank, w, "q_b_proj")
        else:
            layer.gemm("attention", b, h * qk, d, w, "q_proj")
            layer.gemm("attention", b, kv_a, d, w, "kv_a_proj")
        if phase == Phase.DECODE:  # absorbed: W_UK into q, attention over the latent, W_UV out of it
            layer.gemm("attention", b, att.kv_lora_rank, att.qk_nope_head_dim, w, "w_uk", groups=h, layout="masked")
            layer.op("attention", ctx.costs.mla_decode(
                dev, int(b / queries_per_sequence), context, h * queries_per_sequence, att.kv_lora_rank,
                att.qk_rope_head_dim, plan.kv_cache.bytes_per_element))
            layer.gemm("attention", b, att.v_head_dim, att.kv_lora_rank, w, "w_uv", groups=h, layout="masked")
        else:  # non-absorbed: expand the latent to per-head keys and values
            layer.quantize_input("attention", b, att.kv_lora_rank, w)
            layer.gemm("attention", b, h * (att.qk_nope_head_dim + att.v_head_dim), att.kv_lora_rank, w, "kv_b_proj")
            # per-head keys = [k_nope, the shared k_rope]: written out whole for the attention kernel
            # (SGLang's MLA prefill path; sgl-project/sglang issue #11989 names this concatenation)
            layer.memory("attention", b * h * (att.qk_nope_head_dim + qk) * act + b * att.qk_rope_head_dim * act,
                         "mla_key_concat")
            layer.op("attention", ctx.costs.attention_prefill(dev, int(b), context, h, qk, att.v_head_dim, mla=True))
        if att.output_gate:  # Kimi K3's gated MLA: sigmoid(W_g x) on the heads' output
            layer.gemm("attention", b, h * att.v_head_dim, d, w, "output_gate")
        layer.quantize_input("attention", b, h * att.v_head_dim, w)
        layer.gemm("attention", b, d, h * att.v_head_dim, w, "o_proj")
    else:
        h, kv = att.num_heads // t, max(att.num_kv_heads // t, 1)
        gate = h if att.output_gate else 0  # Qwen3.5's gated attention: q_proj also yields the gate
        v = att.value_dim
        layer.gemm("attention", b, (h + gate + kv) * att.head_dim + kv * v, d, w, "qkv_proj")
        if att.qk_norm_across_heads and t > 1:  # each token's q and k sums of squares, fp32, over the TP group
            layer.allreduce("attention", t, b * 2 * QK_NORM_STATISTIC_BYTES, "qk_norm_allreduce")
        if phase == Phase.DECODE:  # the queries of a sequence (its MTP drafts) share its K and V reads
            # keys and values of unequal widths read as many bytes as both at their mean (no table holds such a shape)
            layer.op("attention", ctx.costs.gqa_decode(dev, b / queries_per_sequence, context, h * queries_per_sequence,
                                                       kv, (att.head_dim + v) // 2, plan.kv_cache.bytes_per_element))
        else:  # a sliding window's prefill reads only its window: the fitted model's, as no table's rows slide
            layer.op("attention", ctx.costs.attention_prefill(dev, int(b), context, h, att.head_dim, v,
                                                              kv_heads=None if sliding else kv))
        layer.quantize_input("attention", b, h * v, w)
        layer.gemm("attention", b, d, h * v, w, "o_proj")


def _score_keys(layer, name: str, b: float, keys: float, phase: Phase, queries_per_sequence: int, heads: int,
                key_dim: int, rope_dim: int, key_bytes: float) -> None:
    """Attention of `heads` query heads over `keys` shared keys of key_dim + rope_dim (one KV head, as in MLA's
    absorbed form, DSA's indexer and DeepSeek-V4): the FlashMLA-shaped kernel at the published attention rates."""
    ctx = layer.ctx
    dev, rates, launch = ctx.cluster.device, ctx.costs.attention, ctx.costs.gemm_fit.launch_overhead_s
    if phase == Phase.DECODE:
        cost = efficiency.mla_decode_cost(dev, max(int(b / queries_per_sequence), 1), keys, heads * queries_per_sequence,
                                          rates, launch, key_dim, rope_dim, key_bytes, name=name)
    else:
        cost = efficiency.attention_prefill_cost(dev, max(int(b), 1), keys, heads, key_dim + rope_dim, key_dim, rates,
                                                 launch, name=name)
    layer.op("attention", cost)


def _indexer(layer, b: float, context: float, phase: Phase, queries_per_sequence: int) -> None:
    """DSA's lightning indexer: q from the q latent, one key per token, per-head weights, a score for every key."""
    ctx = layer.ctx
    arch, w = ctx.arch, ctx.precision.of("attention")
    ix, d = arch.indexer, arch.hidden_size
    q_rank = getattr(arch.attention, "q_lora_rank", 0) or d
    layer.gemm("attention", b, ix.num_heads * ix.head_dim, q_rank, w, "indexer_wq_b")
    layer.gemm("attention", b, ix.head_dim + ix.num_heads, d, w, "indexer_wk_weights")
    _score_keys(layer, "indexer_scores", b, context, phase, queries_per_sequence, ix.num_heads, ix.head_dim, 0,
                INDEXER_KEY_BYTES_PER_ELEMENT)


def _linear(layer, b: float, context: float, phase: Phase, queries_per_sequence: int) -> None:
    ctx = layer.ctx
    arch, plan, dev, t = ctx.arch, ctx.precision, ctx.cluster.device, ctx.layout.tp
    lin, d, w, act = arch.linear, arch.hidden_size, plan.of("attention"), plan.combine.bytes_per_element
    shard = min(t, lin.num_value_heads)  # TP splits the heads, and with them the state and the projections
    projections = [(r, c) for name, part, r, c in lin.matrices(d) if part == "attention" and name != "linear_attn.o_proj"]
    layer.gemm("attention", b, sum(r for r, c in projections if c == d) // shard, d, w, "linear_in_proj")
    low_rank = [(r, c) for r, c in projections if c != d]  # KDA's f_b (and g_b) from their low-rank inputs
    for r, c in low_rank:
        layer.gemm("attention", b, r // shard, c, w, "linear_gate_up")
    heads = lin.num_value_heads // shard
    conv = ctx.costs.elementwise(dev, b * lin.conv_kernel * lin.conv_channels / shard * act, "linear_short_conv")
    if phase == Phase.DECODE:  # the state of every sequence: read once, written once per step
        state = lin.num_value_heads * lin.key_head_dim * lin.value_head_dim / shard * LINEAR_STATE_BYTES_PER_ELEMENT
        rule = ctx.costs.elementwise(dev, 2 * b / queries_per_sequence * state, "linear_state_update")
        prompts, prompt_tokens = b / queries_per_sequence, 0.0
    else:
        # chunked delta rule (flash-linear-attention, chunks of LINEAR_CHUNK_TOKENS): per token, attention over
        # half a chunk plus two [dk, dv] state products, i.e. 2 dk dv / (dk + dv) keys more
        keys = LINEAR_CHUNK_TOKENS / 2 + 2 * lin.key_head_dim * lin.value_head_dim / (lin.key_head_dim + lin.value_head_dim)
        rule = efficiency.attention_prefill_cost(
            dev, max(int(b), 1), keys, heads, lin.key_head_dim, lin.value_head_dim, ctx.costs.attention,
            ctx.costs.gemm_fit.launch_overhead_s, name="linear_chunked_delta_rule")
        prompt_tokens = max(2.0 * context - 1.0, 1.0)  # context: the causal average of the prompt's keys
        prompts = b / prompt_tokens
    # each part by the engine's measured kernel, where its table holds the family and the heads per device
    for part, fitted in enumerate((conv, rule)):
        layer.op("attention", ctx.costs.delta_rule(lin.family, part, fitted, prompts, prompt_tokens,
                                                   max(lin.num_key_heads // shard, 1), heads, lin.key_head_dim,
                                                   lin.value_head_dim))
    layer.quantize_input("attention", b, lin.num_value_heads * lin.value_head_dim // shard, w)
    layer.gemm("attention", b, d, lin.num_value_heads * lin.value_head_dim // shard, w, "o_proj")


def _compressed(layer, b: float, context: float, phase: Phase, queries_per_sequence: int, index: int) -> None:
    ctx = layer.ctx
    arch, plan, t = ctx.arch, ctx.precision, ctx.layout.tp
    att, d, w = arch.attention, arch.hidden_size, plan.of("attention")
    h, ratio = att.num_heads // t, att.ratios[index]
    layer.gemm("attention", b, att.q_lora_rank, d, w, "wq_a")
    layer.gemm("attention", b, h * att.head_dim, att.q_lora_rank, w, "wq_b")
    compressor = (2 * (2 if ratio == 4 else 1) * att.head_dim) if ratio else 0
    layer.gemm("attention", b, att.head_dim + compressor, d, w, "wkv_compressor")
    if ratio == 4:  # the indexer scores the compressed entries and keeps the top index_topk
        ix = att.indexer
        layer.gemm("attention", b, ix.num_heads * ix.head_dim, att.q_lora_rank, w, "indexer_wq_b")
        layer.gemm("attention", b, ix.num_heads + 4 * ix.head_dim, d, w, "indexer_weights_compressor")
        _score_keys(layer, "indexer_scores", b, context / ratio, phase, queries_per_sequence, ix.num_heads,
                    ix.head_dim, 0, INDEXER_KEY_BYTES_PER_ELEMENT)
    _score_keys(layer, "compressed_sparse_attention", b, att.keys_read(index, context), phase, queries_per_sequence,
                h, att.head_dim - att.rope_head_dim, att.rope_head_dim, plan.kv_cache.bytes_per_element)
    groups = max(att.o_groups // t, 1)
    layer.gemm("attention", b, att.o_lora_rank, h * att.head_dim // groups, w, "wo_a", groups=groups, layout="masked")
    layer.gemm("attention", b, d, groups * att.o_lora_rank, w, "wo_b")
