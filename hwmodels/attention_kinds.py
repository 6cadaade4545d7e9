"""Per-layer attention kinds read from a config.json, and the cache each kind keeps per sequence.

A decoder layer's attention is one of:
- FULL: the model's MLA or GQA/MHA attention over every earlier token (KV grows with the context);
- SLIDING: the same attention over the last `sliding_window` tokens only (gpt-oss `layer_types`
  "sliding_attention", with a learned sink logit per head that adds no cache);
- LINEAR: a recurrent linear attention with a fixed state per sequence (Kimi K3's KDA layers listed in
  `linear_attn_config.kda_layers`; Qwen3.5's Gated DeltaNet layers, `layer_types` "linear_attention");
- COMPRESSED: DeepSeek-V4's attention: one 512-wide KV head over a sliding window of recent tokens plus
  compressed entries (one per `compress_ratios[layer]` tokens; ratio 4 layers pick the top `index_topk`
  entries with an indexer, ratio 128 layers read all, ratio 0 layers only the window).
A FULL layer of a model with an indexer (DeepSeek-V3.2 and GLM-5's DSA: `index_n_heads`, `index_head_dim`,
`index_topk`) attends to at most `index_topk` keys, chosen by scoring every key with the indexer, whose own
key cache (fp8, one fp32 scale per key) grows with the context.

Shape legend: H = heads, Hk / Hv = linear-attention key / value heads, dk / dv = their head widths,
D = hidden, K = conv kernel, P = projection width (heads x head width).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping

from hwmodels.errors import InputError, excerpt


class Kind(StrEnum):
    FULL = "full"
    SLIDING = "sliding"
    LINEAR = "linear"
    COMPRESSED = "compressed"


# The recurrent state of linear attention is kept in fp32 (Qwen3.5 config.json `mamba_ssm_dtype: float32`;
# flash-linear-attention's chunked KDA / gated-delta-rule kernels accumulate the state in fp32).
LINEAR_STATE_BYTES_PER_ELEMENT = 4.0
# DSA's indexer keys are cached in fp8 with one fp32 scale per key (deepseek-ai/DeepSeek-V3.2-Exp
# inference/model.py: Indexer.k_cache in float8_e4m3fn, k_scale_cache in float32 per 128-wide key).
INDEXER_KEY_BYTES_PER_ELEMENT = 1.0
INDEXER_SCALE_BYTES_PER_KEY = 4.0


@dataclass(frozen=True)
class LinearAttention:
    """A delta-rule linear attention layer: per head a [dk, dv] state, updated once per token."""

    family: str  # 'kda' (Kimi Delta Attention) or 'gated_deltanet' (Qwen3.5)
    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int  # short causal convolution over q, k, v: keeps K - 1 past inputs per channel
    full_rank_gate: bool  # KDA's output gate as one [P, D] matrix (Kimi K3) instead of a low-rank pair

    @property
    def conv_channels(self) -> int:
        return 2 * self.num_key_heads * self.key_head_dim + self.num_value_heads * self.value_head_dim

    @property
    def state_elements_per_sequence(self) -> int:
        """One layer's recurrent state (Hv x dk x dv) plus its convolution's window of past inputs."""
        return (self.num_value_heads * self.key_head_dim * self.value_head_dim
                + (self.conv_kernel - 1) * self.conv_channels)

    def matrices(self, d: int) -> list[tuple[str, str, int, int]]:
        """(name, part, rows, cols) of one layer's weights."""
        qk = self.num_key_heads * self.key_head_dim
        v = self.num_value_heads * self.value_head_dim
        hv = self.num_value_heads
        if self.family == "kda":  # moonshotai Kimi Linear modeling: q/k/v, forget gate f_a/f_b, beta b, gate g
            m = [("linear_attn.q_proj", "attention", qk, d), ("linear_attn.k_proj", "attention", qk, d),
                 ("linear_attn.v_proj", "attention", v, d),
                 ("linear_attn.f_a_proj", "attention", self.key_head_dim, d),
                 ("linear_attn.f_b_proj", "attention", qk, self.key_head_dim),
                 ("linear_attn.b_proj", "attention", hv, d)]
            if self.full_rank_gate:
                m.append(("linear_attn.g_proj", "attention", v, d))
            else:
                m += [("linear_attn.g_a_proj", "attention", self.value_head_dim, d),
                      ("linear_attn.g_b_proj", "attention", v, self.value_head_dim)]
        else:  # Qwen3.5 Gated DeltaNet: fused q/k/v/z and b/a input projections
            m = [("linear_attn.in_proj_qkvz", "attention", 2 * qk + 2 * v, d),
                 ("linear_attn.in_proj_ba", "attention", 2 * hv, d)]
        m += [("linear_attn.conv1d", "norms", self.conv_channels, self.conv_kernel),
              ("linear_attn.A_log_dt_bias", "norms", 1, 2 * hv),
              ("linear_attn.o_norm", "norms", 1, self.value_head_dim),
              ("linear_attn.o_proj", "attention", d, v)]
        return m


@dataclass(frozen=True)
class SparseIndexer:
    """DSA's lightning indexer: scores every cached key with `num_heads` small heads, keeps the top `top_k`."""

    num_heads: int
    head_dim: int
    top_k: int

    @property
    def key_bytes_per_token(self) -> float:
        return self.head_dim * INDEXER_KEY_BYTES_PER_ELEMENT + INDEXER_SCALE_BYTES_PER_KEY

    def matrices(self, d: int, q_rank: int) -> list[tuple[str, str, int, int]]:
        # deepseek-ai/DeepSeek-V3.2-Exp inference/model.py Indexer: wq_b from the q latent, wk, weights_proj
        return [("self_attn.indexer.wq_b", "attention", self.num_heads * self.head_dim, q_rank),
                ("self_attn.indexer.wk", "attention", self.head_dim, d),
                ("self_attn.indexer.k_norm", "norms", 1, self.head_dim),
                ("self_attn.indexer.weights_proj", "attention", self.num_heads, d)]


@dataclass(frozen=True)
class CompressedAttention:
    """DeepSeek-V4: H query heads over one KV head of `head_dim`, a sliding window of `window_tokens` raw
    entries and one compressed entry per `ratio` tokens (per layer), low-rank q and grouped low-rank output."""

    num_heads: int
    head_dim: int
    rope_head_dim: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    window_tokens: int
    ratios: tuple[int, ...]  # per layer: 0 (window only), 4 (indexed top-k) or 128 (all compressed entries)
    indexer: SparseIndexer
    hyper_connections: int  # hc_mult: copies of the residual stream mixed per sub-layer (mHC)

    def keys_read(self, layer: int, context: float) -> float:
        """Keys one query attends to in `layer` at `context` tokens."""
        ratio = self.ratios[layer]
        window = min(context, self.window_tokens)
        if not ratio:
            return window
        compressed = context / ratio
        return window + (min(compressed, self.indexer.top_k) if ratio == 4 else compressed)

    def matrices(self, d: int, layer: int) -> list[tuple[str, str, int, int]]:
        """One layer's weights (deepseek-ai/DeepSeek-V4 inference/model.py: Attention, Compressor, Indexer, Block)."""
        h, hd, ratio = self.num_heads, self.head_dim, self.ratios[layer]
        m = [("attn.wq_a", "attention", self.q_lora_rank, d), ("attn.q_norm", "norms", 1, self.q_lora_rank),
             ("attn.wq_b", "attention", h * hd, self.q_lora_rank), ("attn.wkv", "attention", hd, d),
             ("attn.kv_norm", "norms", 1, hd), ("attn.attn_sink", "norms", 1, h),
             ("attn.wo_a", "attention", self.o_groups * self.o_lora_rank, h * hd // self.o_groups),
             ("attn.wo_b", "attention", d, self.o_groups * self.o_lora_rank)]
        if ratio:
            coff = 2 if ratio == 4 else 1  # ratio-4 compressors pool overlapping windows: twice the width
            m += [("attn.compressor.wkv_wgate", "attention", 2 * coff * hd, d),
                  ("attn.compressor.ape_norm", "norms", 1, ratio * coff * hd + hd)]
        if ratio == 4:
            ix = self.indexer
            m += [("attn.indexer.wq_b", "attention", ix.num_heads * ix.head_dim, self.q_lora_rank),
                  ("attn.indexer.weights_proj", "attention", ix.num_heads, d),
                  ("attn.indexer.compressor.wkv_wgate", "attention", 2 * 2 * ix.head_dim, d),
                  ("attn.indexer.compressor.ape_norm", "norms", 1, ratio * 2 * ix.head_dim + ix.head_dim)]
        hc = self.hyper_connections
        if hc > 1:  # hc_attn_fn and hc_ffn_fn: [(2 + hc) hc, hc D] each, plus their bases and scales
            m.append(("hc_fn", "norms", 2 * (2 + hc) * hc, hc * d))
        return m


def layer_kinds(config: Mapping[str, Any], layers: int, where: str) -> tuple[Kind, ...]:
    """The attention kind of each layer, from `layer_types` (gpt-oss, Qwen3.5), Kimi Linear's
    `linear_attn_config` (1-based layer numbers) or DeepSeek-V4's `compress_ratios`; otherwise all FULL."""
    if config.get("compress_ratios") is not None:
        return (Kind.COMPRESSED,) * layers
    lin = config.get("linear_attn_config")
    if lin is not None:
        if not isinstance(lin, Mapping):
            raise InputError(f"{where} linear_attn_config", f"must be a JSON object, got {excerpt(lin)}",
                             "copy linear_attn_config from the checkpoint's config.json")
        kda = _layer_numbers(lin.get("kda_layers"), layers, f"{where} linear_attn_config.kda_layers")
        return tuple(Kind.LINEAR if i + 1 in kda else Kind.FULL for i in range(layers))
    types = config.get("layer_types")
    if types is None:
        return _derived_kinds(config, layers, where)
    # Llama 4's chunked layers attend within fixed chunks: priced as a window of the chunk (model_arch._window)
    # GLM-5.2's deepseek_sparse_attention layers are full layers reading the DSA indexer's keys (index_topk)
    names = {"full_attention": Kind.FULL, "sliding_attention": Kind.SLIDING, "linear_attention": Kind.LINEAR,
             "chunked_attention": Kind.SLIDING, "deepseek_sparse_attention": Kind.FULL}
    if not isinstance(types, list) or len(types) != layers or not all(isinstance(t, str) and t in names for t in types):
        raise InputError(f"{where} layer_types", f"must list one of {', '.join(names)} for each of the {layers} layers, "
                         f"got {excerpt(types)}", "copy layer_types from the checkpoint's config.json")
    return tuple(names[t] for t in types)


def _derived_kinds(config: Mapping[str, Any], layers: int, where: str) -> tuple[Kind, ...]:
    """The kinds a config without `layer_types` implies, as its modelling code derives them: MiMo-V2-Flash's
    `hybrid_layer_pattern` (its sliding layers' own head counts, `swa_num_key_value_heads`, are not read: they
    hold 128 tokens, and their wider K and V projections are 0.07% of its weights), Qwen3-Next's
    `full_attention_interval` (every n-th layer full, the others Gated DeltaNet) and Llama 4's
    `attention_chunk_size` (chunked attention where `no_rope_layers` is 1; by default every layer but each
    fourth, whose global attention has no RoPE); otherwise every layer FULL."""
    pattern = config.get("hybrid_layer_pattern")
    if pattern is not None:  # MiMo-V2-Flash: 1 a sliding-window layer, 0 a full one
        if not isinstance(pattern, list) or len(pattern) != layers or not all(
                p in (0, 1) and not isinstance(p, bool) for p in pattern):
            raise InputError(f"{where} hybrid_layer_pattern", f"must list 0 or 1 for each of the {layers} layers, got "
                             f"{excerpt(pattern)}", "copy hybrid_layer_pattern from the checkpoint's config.json")
        return tuple(Kind.SLIDING if p else Kind.FULL for p in pattern)
    interval = config.get("full_attention_interval")
    if interval is not None and config.get("linear_num_value_heads") is not None:
        if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= layers:
            raise InputError(f"{where} full_attention_interval", f"must be a whole number in [1, {layers}], got "
                             f"{excerpt(interval)}", "copy full_attention_interval from the checkpoint's config.json")
        return tuple(Kind.FULL if (i + 1) % interval == 0 else Kind.LINEAR for i in range(layers))
    if config.get("attention_chunk_size") is not None:
        rope = config.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(layers)]
        if not isinstance(rope, list) or len(rope) != layers or not all(r in (0, 1) and not isinstance(r, bool)
                                                                        for r in rope):
            raise InputError(f"{where} no_rope_layers", f"must list 0 or 1 for each of the {layers} layers, got "
                             f"{excerpt(rope)}", "copy no_rope_layers from the checkpoint's config.json")
        return tuple(Kind.SLIDING if r else Kind.FULL for r in rope)
    return (Kind.FULL,) * layers


def _layer_numbers(value: Any, layers: int, field: str) -> set[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= layers
                                              for i in value):
        raise InputError(field, f"must list layer numbers in [1, {layers}], got {excerpt(value)}",
                         "copy it from the checkpoint's config.json (Kimi Linear numbers layers from 1)")
    return set(value)


def linear_attention(config: Mapping[str, Any], get, where: str) -> LinearAttention:
    """The linear-attention layer shape of a hybrid model."""
    lin = config.get("linear_attn_config")
    if isinstance(lin, Mapping):  # Kimi Linear / K3: KDA with equal key and value heads
        sub = _sub_getter(lin, f"{where} linear_attn_config")
        heads, dim = sub("num_heads"), sub("head_dim")
        return LinearAttention("kda", heads, heads, dim, dim, sub("short_conv_kernel_size", 4),
                               bool(lin.get("use_full_rank_gate")))
    return LinearAttention("gated_deltanet", get("linear_num_key_heads"), get("linear_num_value_heads"),
                           get("linear_key_head_dim"), get("linear_value_head_dim"), get("linear_conv_kernel_dim", 4),
                           False)


def _sub_getter(section: Mapping[str, Any], where: str):
    def get(key: str, default: int | None = None) -> int:
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**20:
            raise InputError(f"{where}.{key}", f"must be a positive whole number, got {excerpt(value)}",
                             "copy it from the checkpoint's config.json")
        return value
    return get


def compress_ratios(config: Mapping[str, Any], layers: int, where: str) -> tuple[int, ...]:
    """DeepSeek-V4's per-layer ratios (the config lists the MTP layer's too, after the main layers)."""
    ratios = config.get("compress_ratios")
    if not isinstance(ratios, list) or len(ratios) < layers or not all(r in (0, 4, 128) for r in ratios):
        raise InputError(f"{where} compress_ratios", f"must give 0, 4 or 128 for each of the {layers} layers, got "
                         f"{excerpt(ratios)}", "copy compress_ratios from the checkpoint's config.json")
    return tuple(ratios[:layers])
