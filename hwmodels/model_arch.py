"""ModelArch: a decoder transformer (MoE or dense) read from the fields of its HuggingFace config.json.

Understood families, recognised by their fields, not by name:
- MLA attention (DeepSeek-V2/V3/R1, Kimi K2): `kv_lora_rank`, `q_lora_rank`, `qk_nope_head_dim`,
  `qk_rope_head_dim`, `v_head_dim`; otherwise grouped-query attention with `num_key_value_heads`
  and `head_dim` (default hidden_size / num_attention_heads).
- MoE (hwmodels.moe_config): `n_routed_experts` (DeepSeek style, with `first_k_dense_replace`, `moe_layer_freq`,
  `n_shared_experts`; Step-3.x's `share_expert_dim`), `num_experts` (Qwen-MoE, with `decoder_sparse_step`,
  `mlp_only_layers`, `shared_expert_intermediate_size`), `num_local_experts` (Mixtral; Llama 4 with
  `interleave_moe_layer_step` or `moe_layers`, a shared expert of `intermediate_size` in every MoE layer and dense
  layers of `intermediate_size_mlp`; Granite-MoE-Shared with `shared_intermediate_size`) or `moe_num_experts`
  (ERNIE 4.5: `moe_k`, `moe_layer_start_index`, `moe_layer_end_index`, `moe_layer_interval`,
  `moe_num_shared_experts`); otherwise a dense model. A config that names an expert count under any other field, or
  a layer pattern of a family moeplan does not read (Jamba, Nemotron-H, Step-3, Hunyuan, Gemma 4, MiniMax-Text-01's
  lightning attention), is refused, never read as dense or as another family.
- A multimodal wrapper with `text_config` (Kimi K2.5 / K3, Qwen3.5) is read through its text model; its
  `vision_config` becomes `ModelArch.vision` (hwmodels.vision), priced only for requests with images and not
  counted in the text model's parameters.
- Attention is a kind per layer (hwmodels.attention_kinds): MLA or GQA in full layers, sliding windows,
  linear attention (KDA, Gated DeltaNet), a DSA indexer, or DeepSeek-V4's compressed attention.

Refused, each as one InputError naming `config.json <field>` and the fix:
- encoder-decoder models (`is_encoder_decoder: true`, T5, BART, Whisper, Switch Transformers, ...) and known
  encoder-only families (BERT, RoBERTa, DeBERTa, ...): moeplan serves decoder-only causal LMs;
- an expert count of 0 (`n_routed_experts`, `num_experts`, `num_local_experts`, `moe_num_experts`): the config names
  an MoE with no experts, which no serving engine loads (Qwen2-MoE's own code would build dense layers, DeepSeek's
  and Mixtral's break); the fix is to drop the field (or set it to null) for a dense model, never a silent guess;
- a value of the wrong type (`quantization_config: "fp8"`, `num_hidden_layers: "61"`, `tie_word_embeddings:
  "false"`), a size <= 0 where a size is needed (`intermediate_size` when a layer is dense), and sizes past
  `MAX_SIZES`: bounds far above every published decoder that keep the work per config small (per-layer tuples,
  per-expert arrays), with the reason beside each;
- `quantization_config.ignore` patterns that nest repetition (`(a+)+`, `(a|b)*`), which Python's regular
  expressions can take exponential time to match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from hwmodels.attention_kinds import (CompressedAttention, Kind, LinearAttention, SparseIndexer, compress_ratios,
                                     layer_kinds, linear_attention)
from hwmodels.errors import InputError, excerpt
from hwmodels.moe_config import MoE, read_moe
from hwmodels.vision import VisionTower, vision_tower


@dataclass(frozen=True)
class MLAAttention:
    num_heads: int
    q_lora_rank: int  # 0: no query compression (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    output_gate: bool = False  # Kimi K3 `mla_use_output_gate`: sigmoid(W_g x) [H v_head_dim, D] before o_proj

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """The compressed cache: one latent of kv_lora_rank plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(frozen=True)
class GQAAttention:
    num_heads: int
    num_kv_heads: int
    head_dim: int  # of the queries and keys
    qk_norm: bool  # Qwen3 normalises q and k per head
    output_gate: bool = False  # Qwen3.5 `attn_output_gate`: q_proj also yields a [H head_dim] sigmoid gate
    v_head_dim: int = 0  # of the values where it differs (MiMo-V2-Flash: keys 192, values 128); 0: head_dim
    # MiniMax-M2 `qk_norm_type: per_layer`: one RMSNorm over every head's q (and k), so a TP group sums the squares
    # of its shards with an all-reduce before it can normalise (MiniMaxText01RMSNormTP in vLLM, SGLang, TensorRT-LLM)
    qk_norm_across_heads: bool = False

    @property
    def value_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        return self.num_kv_heads * (self.head_dim + self.value_dim)


@dataclass(frozen=True)
class ModelArch:
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    tie_word_embeddings: bool
    dense_intermediate_size: int
    attention: MLAAttention | GQAAttention | CompressedAttention  # the attention of FULL (and SLIDING) layers
    moe: MoE | None
    moe_layers: tuple[int, ...]  # indices of the layers whose MLP is an MoE
    num_mtp_layers: int  # DeepSeek multi-token-prediction modules (not part of the main model)
    max_position_embeddings: int
    torch_dtype: str
    quantization_config: Mapping[str, Any] | None
    layer_kinds: tuple[Kind, ...] = ()  # per layer (attention_kinds.Kind); () means every layer FULL
    sliding_window: int = 0  # tokens a SLIDING layer attends to
    linear: LinearAttention | None = None  # the shape of the LINEAR layers
    indexer: SparseIndexer | None = None  # DSA: FULL layers attend to the indexer's top-k keys only
    vision: VisionTower | None = None  # a multimodal wrapper's vision tower (not counted in the text model's params)

    def kind(self, layer: int) -> Kind:
        return self.layer_kinds[layer] if self.layer_kinds else Kind.FULL

    def layers_of(self, kind: Kind) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_layers) if self.kind(i) == kind)

    @property
    def attention_kind_name(self) -> str:
        """'mla', 'gqa', 'compressed', with the other kinds of a hybrid: 'mla+linear', 'gqa+sliding'."""
        base = "compressed" if isinstance(self.attention, CompressedAttention) else "mla" if self.is_mla else "gqa"
        others = sorted({k.value for k in self.layer_kinds} - {Kind.FULL.value, Kind.COMPRESSED.value})
        sparse = "+dsa" if self.indexer is not None and not isinstance(self.attention, CompressedAttention) else ""
        return "+".join([base + sparse, *others])

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - len(self.moe_layers)

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def is_mla(self) -> bool:
        return isinstance(self.attention, MLAAttention)


_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")

# The largest value a config.json size may have. Published decoders stay far below: Llama 3.1 405B has
# hidden_size 16,384, 126 layers, 128 heads and intermediate_size 53,248; Kimi K2 384 routed experts; Gemma 3 a
# 262,144-token vocabulary; Llama 4 Scout a 10M-token context. Past these a value is a typo or hostile, and the
# work it would cause (a tuple per layer, an array per expert) is what the bound keeps small.
_WIDTH = 2**20  # 64 x the widest hidden_size, 20 x the widest MLP
MAX_SIZES = {
    "hidden_size": _WIDTH, "intermediate_size": _WIDTH, "moe_intermediate_size": _WIDTH,
    "shared_expert_intermediate_size": _WIDTH, "head_dim": _WIDTH, "q_lora_rank": _WIDTH, "kv_lora_rank": _WIDTH,
    "qk_nope_head_dim": _WIDTH, "qk_rope_head_dim": _WIDTH, "v_head_dim": _WIDTH,
    "num_hidden_layers": 10_000,  # 80 x the deepest (126)
    "num_nextn_predict_layers": 10_000, "first_k_dense_replace": 10_000, "moe_layer_freq": 10_000,
    "decoder_sparse_step": 10_000,
    "num_attention_heads": 65_536, "num_key_value_heads": 65_536,  # 512 x the most heads (128)
    "n_routed_experts": 100_000, "num_experts": 100_000, "num_local_experts": 100_000,  # 260 x Kimi K2's 384
    "moe_num_experts": 100_000, "moe_k": 100_000, "moe_num_shared_experts": 100_000,
    "interleave_moe_layer_step": 10_000, "moe_layer_interval": 10_000, "moe_layer_start_index": 10_000,
    "moe_layer_end_index": 10_000, "intermediate_size_mlp": _WIDTH, "shared_intermediate_size": _WIDTH,
    "share_expert_dim": _WIDTH, "attention_chunk_size": 10**9,
    "n_shared_experts": 100_000, "num_experts_per_tok": 100_000,
    "vocab_size": 10**8,  # 380 x the largest vocabulary (262,144)
    "routed_expert_hidden_size": _WIDTH, "o_lora_rank": _WIDTH, "index_head_dim": _WIDTH,
    "linear_key_head_dim": _WIDTH, "linear_value_head_dim": _WIDTH,
    "index_n_heads": 65_536, "o_groups": 65_536, "linear_num_key_heads": 65_536, "linear_num_value_heads": 65_536,
    "num_experts_per_token": 100_000, "num_shared_experts": 100_000, "num_hash_layers": 10_000,
    "n_group": 100_000, "topk_group": 100_000,  # groups of experts: at most one per expert
    "mtp_num_hidden_layers": 10_000, "num_mtp_modules": 10_000, "hc_mult": 64,
    "sliding_window": 10**9, "index_topk": 10**9,  # token counts: bounded like the context
    "max_position_embeddings": 10**9,  # 100 x the longest context (10M)
}
ENCODER_DECODER = frozenset({
    "t5", "mt5", "umt5", "longt5", "t5gemma", "switch_transformers", "bart", "mbart", "plbart", "pegasus", "pegasus_x",
    "bigbird_pegasus", "marian", "m2m_100", "nllb-moe", "fsmt", "prophetnet", "led", "blenderbot", "blenderbot-small",
    "whisper", "speech_to_text", "seamless_m4t", "encoder-decoder", "vision-encoder-decoder",
})
ENCODER_ONLY = frozenset({
    "bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "distilbert", "albert", "electra", "deberta",
    "deberta-v2", "mpnet", "ernie", "modernbert", "nomic_bert", "convbert", "mobilebert", "squeezebert", "rembert",
    "roformer", "funnel", "longformer", "layoutlm", "esm", "xlm", "flaubert", "megatron-bert", "nystromformer",
})
MAX_IGNORE_PATTERNS = 10_000  # quantization_config.ignore entries (real lists name a few hundred modules)


def arch_from_config(config: Mapping[str, Any], name: str, where: str = "config.json") -> ModelArch:
    """Build a ModelArch from a config.json dict; `where` names the file in error messages."""
    if not isinstance(config, Mapping):
        raise InputError(where, "is not a JSON object", "point at a HuggingFace config.json")
    vision = vision_tower(config, where)
    if "text_config" in config and "hidden_size" not in config:
        if not isinstance(config["text_config"], Mapping):
            raise InputError(f"{where} text_config", f"must be a JSON object, got {excerpt(config['text_config'])}",
                             "give the text model's fields there, as in a HuggingFace multimodal config.json")
        text = dict(config["text_config"])
        text.setdefault("quantization_config", config.get("quantization_config"))
        text.setdefault("torch_dtype", config.get("torch_dtype"))
        config = text
        where = f"{where} text_config"
    missing = [f for f in _REQUIRED if f not in config]
    if missing:
        kind = config.get("model_type", "unknown")
        raise InputError(
            f"{where} {missing[0]}",
            f"missing; model_type {excerpt(kind)} is not an MoE or dense decoder transformer moeplan understands",
            f"give a decoder config with {', '.join(_REQUIRED)}",
        )
    model_type = _decoder_only(config, where)
    get = _getter(config, where)
    hidden, layers, heads = get("hidden_size"), get("num_hidden_layers"), get("num_attention_heads")

    kinds = layer_kinds(config, layers, where)
    attention = _attention(config, get, heads, hidden, layers, model_type, where)
    indexer = None
    if config.get("index_topk") is not None:  # DSA (DeepSeek-V3.2, GLM-5) or DeepSeek-V4's ratio-4 layers
        indexer = SparseIndexer(get("index_n_heads"), get("index_head_dim"), get("index_topk"))
        if isinstance(attention, CompressedAttention):
            attention = CompressedAttention(**{**attention.__dict__, "indexer": indexer})
    linear = linear_attention(config, get, where) if Kind.LINEAR in kinds else None
    window = _window(config, get) if Kind.SLIDING in kinds else 0

    moe, moe_layers = read_moe(config, get, layers, model_type, where)
    # Llama 4's dense layers are wider than its experts and its shared expert (intermediate_size)
    dense_key = "intermediate_size_mlp" if config.get("intermediate_size_mlp") is not None else "intermediate_size"
    dense_width = get(dense_key, 0, allow_zero=True)
    if dense_width == 0 and len(moe_layers) < layers:
        raise InputError(f"{where} intermediate_size", "missing or 0, but the model has dense layers",
                         "give the dense MLP's width (intermediate_size in the checkpoint's config.json)")
    return ModelArch(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        vocab_size=get("vocab_size"),
        tie_word_embeddings=_flag(config, "tie_word_embeddings", where),
        dense_intermediate_size=dense_width,
        attention=attention,
        moe=moe,
        moe_layers=moe_layers,
        num_mtp_layers=_mtp_layers(config, get),
        max_position_embeddings=get("max_position_embeddings", 0, allow_zero=True),
        torch_dtype=_text(config, "torch_dtype", where) or "bfloat16",
        quantization_config=_expert_dtype(_quantization(config.get("quantization_config"), where), config, where),
        layer_kinds=kinds if set(kinds) != {Kind.FULL} else (),
        sliding_window=window,
        linear=linear,
        indexer=indexer if not isinstance(attention, CompressedAttention) else None,
        vision=vision,
    )


def _attention(config: Mapping[str, Any], get, heads: int, hidden: int, layers: int, model_type: str,
               where: str) -> MLAAttention | GQAAttention | CompressedAttention:
    """The attention of the model's FULL layers (DeepSeek-V4: of every layer)."""
    if config.get("compress_ratios") is not None:  # DeepSeek-V4 (index fields read by the caller)
        return CompressedAttention(
            num_heads=heads, head_dim=get("head_dim"), rope_head_dim=get("qk_rope_head_dim"),
            q_lora_rank=get("q_lora_rank"), o_groups=get("o_groups"), o_lora_rank=get("o_lora_rank"),
            window_tokens=get("sliding_window"), ratios=compress_ratios(config, layers, where),
            indexer=SparseIndexer(1, 1, 1), hyper_connections=get("hc_mult", 1))
    if "kv_lora_rank" in config and config["kv_lora_rank"]:
        return MLAAttention(
            num_heads=heads,
            q_lora_rank=get("q_lora_rank", 0, allow_zero=True),
            kv_lora_rank=get("kv_lora_rank"),
            qk_nope_head_dim=get("qk_nope_head_dim"),
            qk_rope_head_dim=get("qk_rope_head_dim"),
            v_head_dim=get("v_head_dim"),
            output_gate=_flag(config, "mla_use_output_gate", where),
        )
    if heads > hidden and config.get("head_dim") is None:
        raise InputError(f"{where} num_attention_heads", f"{heads} heads leave no width of the {hidden} hidden_size "
                         "to each", "give head_dim, or fewer heads than hidden_size")
    kv_heads = get("num_key_value_heads", heads)
    if kv_heads > heads:
        raise InputError(f"{where} num_key_value_heads", f"{kv_heads} is more than the {heads} query heads",
                         "give at most num_attention_heads (grouped-query attention shares a KV head among query heads)")
    head_dim = get("head_dim", hidden // heads)
    return GQAAttention(
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        qk_norm=model_type.startswith("qwen3") or _flag(config, "use_qk_norm", where),
        output_gate=_flag(config, "attn_output_gate", where),
        v_head_dim=0 if get("v_head_dim", head_dim) == head_dim else get("v_head_dim"),
        qk_norm_across_heads=_flag(config, "use_qk_norm", where) and config.get("qk_norm_type") == "per_layer",
    )


def _expert_dtype(qc: Mapping[str, Any] | None, config: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    """DeepSeek-V4 states its routed experts' format beside quantization_config (`expert_dtype: fp4`: e2m1 with one
    e8m0 scale per 32, deepseek-ai/DeepSeek-V4 inference/model.py); folded in, so the precision plan reads one place."""
    dtype = config.get("expert_dtype")
    if dtype is None or qc is None:  # without a quantization_config the checkpoint is read as unquantised
        return qc
    if dtype != "fp4":
        raise InputError(f"{where} expert_dtype", f"{excerpt(dtype)} is not a format moeplan reads (fp4)",
                         "set precision.routed_experts in the spec instead")
    return {**qc, "expert_dtype": "fp4"}


def _mtp_layers(config: Mapping[str, Any], get) -> int:
    """Multi-token-prediction modules: DeepSeek/GLM `num_nextn_predict_layers`, Qwen3.5 `mtp_num_hidden_layers`,
    MiniMax `num_mtp_modules` (when `use_mtp`)."""
    if config.get("num_nextn_predict_layers") is not None:
        return get("num_nextn_predict_layers", 0, allow_zero=True)
    if config.get("mtp_num_hidden_layers") is not None:
        return get("mtp_num_hidden_layers", 0, allow_zero=True)
    if config.get("use_mtp") is True:
        return get("num_mtp_modules", 0, allow_zero=True)
    return 0


def _decoder_only(config: Mapping[str, Any], where: str) -> str:
    """The model_type ("" when absent), once the config is known not to be an encoder or an encoder-decoder."""
    model_type = _text(config, "model_type", where)
    fix = "give a decoder-only causal LM (Llama, Qwen, DeepSeek, Mixtral, ...): moeplan plans decoder serving"
    if _flag(config, "is_encoder_decoder", where) or model_type in ENCODER_DECODER:
        if config.get("is_encoder_decoder"):
            raise InputError(f"{where} is_encoder_decoder", "is true: an encoder-decoder model", fix)
        raise InputError(f"{where} model_type", f"'{model_type}' is an encoder-decoder model", fix)
    if model_type in ENCODER_ONLY:
        raise InputError(f"{where} model_type", f"'{model_type}' is an encoder-only model (no decoding)", fix)
    architectures = config.get("architectures") or []
    if isinstance(architectures, list):
        masked = [a for a in architectures[:100] if isinstance(a, str) and a.endswith(("ForMaskedLM", "ForSeq2SeqLM"))]
        if masked:
            raise InputError(f"{where} architectures", f"{excerpt(masked[0])} is not a causal decoder", fix)
    return model_type


def _text(config: Mapping[str, Any], key: str, where: str) -> str:
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where} {key}", f"must be a string, got {excerpt(value)}", f"give {key} as a JSON string")
    return value or ""


def _flag(config: Mapping[str, Any], key: str, where: str) -> bool:
    value = config.get(key, False)
    if value is not None and not isinstance(value, bool):
        raise InputError(f"{where} {key}", f"must be true or false, got {excerpt(value)}", "give a JSON boolean, unquoted")
    return bool(value)


def _window(config: Mapping[str, Any], get) -> int:
    """Tokens a SLIDING layer holds and reads: its `sliding_window`, or Llama 4's `attention_chunk_size` (a chunked
    layer attends within its chunk of that many tokens: at most the chunk, half of it on average past the first,
    so pricing the whole chunk bounds its time from above and its KV exactly)."""
    if config.get("sliding_window") is None and config.get("attention_chunk_size") is not None:
        return get("attention_chunk_size")
    return get("sliding_window")


def _quantization(qc: Any, where: str) -> Mapping[str, Any] | None:
    """quantization_config, checked for the shape hwmodels.precision.default_plan reads: a JSON object whose
    quant_method is a string, weight_block_size a list of integers, config_groups an object of objects (each with
    an object `weights`) and ignore a list of module names or `re:` patterns that match in bounded time."""
    field = f"{where} quantization_config"
    if qc is None:
        return None
    if not isinstance(qc, Mapping):
        raise InputError(field, f"must be a JSON object, got {excerpt(qc)}",
                         'give the checkpoint\'s object (e.g. {"quant_method": "fp8", "weight_block_size": [128, 128]}), '
                         "or leave it out for an unquantised checkpoint")
    _text(qc, "quant_method", field)
    block = qc.get("weight_block_size")
    if block is not None and not (isinstance(block, list) and len(block) <= 8 and all(
            isinstance(b, int) and not isinstance(b, bool) for b in block)):
        raise InputError(f"{field}.weight_block_size", f"must be a list of integers, got {excerpt(block)}", "e.g. [128, 128]")
    groups = qc.get("config_groups")
    if groups is not None and not (isinstance(groups, Mapping) and all(
            isinstance(g, Mapping) and isinstance(g.get("weights") or {}, Mapping) for g in groups.values())):
        raise InputError(f"{field}.config_groups", f"must map group names to objects with a `weights` object, got "
                         f"{excerpt(groups)}", "copy config_groups from the checkpoint's config.json")
    ignore = qc.get("ignore")
    if ignore is not None:
        if not isinstance(ignore, list) or len(ignore) > MAX_IGNORE_PATTERNS or not all(isinstance(i, str) for i in ignore):
            raise InputError(f"{field}.ignore", f"must be a list of at most {MAX_IGNORE_PATTERNS:,} module names or "
                             f"re: patterns, got {excerpt(ignore)}", 'e.g. ["lm_head", "re:.*self_attn.*"]')
        producer = qc.get("producer")
        modelopt = qc.get("quant_method") == "modelopt" or (isinstance(producer, Mapping) and producer.get("name") == "modelopt")
        if not modelopt:  # ModelOpt's ignore entries are shell globs, not expressions
            for i, pattern in enumerate(ignore):
                _bounded_pattern(pattern.removeprefix("re:"), f"{field}.ignore[{i}]")
    return qc


def _bounded_pattern(pattern: str, field: str) -> None:
    """Refuse a pattern that does not compile, or that repeats a repetition or an alternation (`(a+)+`,
    `(a|ab)*`): Python's backtracking matcher can take exponential time on those."""
    import re._parser as sre  # the parser `re` itself uses; public enough for a check that only reads its tree

    fix = "write the pattern without a repeated group that itself repeats or alternates, e.g. re:.*mlp\\.(gate|up)_proj.*"
    if len(pattern) > 1000:
        raise InputError(field, f"is {len(pattern):,} characters long", "give a module name or a short re: pattern")
    try:
        tree = sre.parse(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise InputError(field, f"is not a regular expression ({e})", "fix the pattern, or give a plain module name") from None

    def nested(items, inside: bool) -> bool:
        for op, av in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
                repeats = av[1] > 1
                if inside and repeats:
                    return True
                if nested(av[2], inside or repeats):
                    return True
            elif op is sre.BRANCH:
                if inside or any(nested(branch, inside) for branch in av[1]):
                    return True
            elif op is sre.SUBPATTERN:
                if nested(av[-1], inside):
                    return True
            elif op in (sre.ASSERT, sre.ASSERT_NOT, sre.ATOMIC_GROUP):
                if nested(av[-1] if op is not sre.ATOMIC_GROUP else av, inside):
                    return True
            elif op is sre.GROUPREF_EXISTS:
                if any(branch is not None and nested(branch, inside) for branch in av[1:]):
                    return True
        return False

    try:
        exponential = nested(tree, False)
    except RecursionError:
        exponential = True
    if exponential:
        raise InputError(field, f"{excerpt(pattern)} repeats a group that repeats or alternates (matching can take "
                         "exponential time)", fix)


def _getter(config: Mapping[str, Any], where: str):
    def get(key: str, default: int | None = None, allow_zero: bool = False) -> int:
        value = config.get(key)
        if value is None:
            value = default
        if value is None:
            raise InputError(f"{where} {key}", "missing", f"add {key} to the config")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} {key}", f"must be an integer, got {excerpt(value)}", f"give {key} as a whole JSON number, unquoted")
        if value < 0 or (value == 0 and not allow_zero):
            raise InputError(f"{where} {key}", f"must be positive, got {value}",
                             f"give the checkpoint's {key} (a whole number {'>= 0' if allow_zero else '> 0'})")
        bound = MAX_SIZES.get(key)
        if bound is not None and value > bound:
            raise InputError(f"{where} {key}", f"{excerpt(value)} is past the bound of {bound:,} (far above any published "
                             "decoder: hwmodels.model_arch.MAX_SIZES)", f"give the checkpoint's real {key}")
        return value

    return get
