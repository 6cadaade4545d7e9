"""ModelArch: a decoder transformer (MoE or dense) read from the fields of its HuggingFace config.json.

Understood families, recognised by their fields, not by name:
- MLA attention (DeepSeek-V2/V3/R1, Kimi K2): `kv_lora_rank`, `q_lora_rank`, `qk_nope_head_dim`,
  `qk_rope_head_dim`, `v_head_dim`; otherwise grouped-query attention with `num_key_value_heads`
  and `head_dim` (default hidden_size / num_attention_heads).
- MoE: `n_routed_experts` (DeepSeek style, with `first_k_dense_replace`, `moe_layer_freq`,
  `n_shared_experts`), `num_experts` (Qwen-MoE, with `decoder_sparse_step`, `mlp_only_layers`,
  `shared_expert_intermediate_size`), `num_local_experts` (Mixtral; Llama 4 with `interleave_moe_layer_step` or
  `moe_layers`, a shared expert of `intermediate_size` in every MoE layer and dense layers of
  `intermediate_size_mlp`; Granite-MoE-Shared with `shared_intermediate_size`; Step-3.x's `share_expert_dim`) or `moe_num_experts` (ERNIE 4.5: `moe_k`, `moe_layer_start_index`,
  `moe_layer_end_index`, `moe_layer_interval`, `moe_num_shared_experts`); otherwise a dense model. A config that
  names an expert count under any other field, or a layer pattern of a family moeplan does not read (Jamba,
  Nemotron-H, Step-3, Hunyuan, Gemma 4, MiniMax-Text-01's lightning attention), is refused (`_refuse_unread`), never read as dense or as another family.
- A multimodal wrapper with `text_config` (Kimi K2.5 / K3, Qwen3.5) is read through its text model; its
  `vision_config` becomes `ModelArch.vision` (hwmodels.vision), priced only for requests with images and not
  counted in the text model's parameters.
- Attention is a kind per layer (hwmodels.attention_kinds): MLA or GQA in full layers, sliding windows,
  linear attention (KDA, Gated DeltaNet), a DSA indexer, or DeepSeek-V4's compressed attention.

Refused, each as one InputError naming `config.json <field>` and the fix:
- encoder-decoder models (`is_encoder_decoder: true`, T5, BART, Whisper, Switch Transformers, ...) and known
  encoder-only families (BERT, RoBERTa, DeBERTa, ...): moeplan serves decoder-only causal LMs;
- an expert count of 0 (`n_routed_experts`, `num_experts`, `num_local_experts`, `moe_num_experts`): the config names an MoE with no
  experts, which no serving engine loads (Qwen2-MoE's own code would build dense layers, DeepSeek's and
  Mixtral's break); the fix is to drop the field (or set it to null) for a dense model, never a silent guess;
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

    @property
    def value_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        return self.num_kv_heads * (self.head_dim + self.value_dim)


@dataclass(frozen=True)
class MoE:
    num_experts: int
    top_k: int
    expert_intermediate_size: int
    num_shared_experts: int  # shared experts of expert_intermediate_size each
    shared_intermediate_size: int  # total width of the shared MLP (0 if none)
    shared_gate: bool  # Qwen2-MoE gates its shared expert with a [1, hidden] projection
    # latent MoE (Kimi K3 `routed_expert_hidden_size`): tokens are projected to this width before the dispatch,
    # the routed experts run in it and the combine carries it; 0: the model's hidden size
    latent_size: int = 0
    hash_layers: int = 0  # DeepSeek-V4 `num_hash_layers`: the first MoE layers route by token id, not by score
    # node-limited (group-limited) routing, DeepSeek-V2/V3 `n_group` / `topk_group`: the experts form n_group
    # contiguous groups and a token picks its top-k experts inside its best topk_group groups (V3: 4 of 8).
    # DeepEP's deployment maps groups to nodes, so a token reaches at most topk_group nodes when they align.
    num_groups: int = 1
    groups_per_token: int = 1


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
_EXPERT_COUNTS = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")
# An integer field whose name says it counts experts (DBRX's moe_num_experts nests in ffn_config, Step-3's
# moe_num_experts, Jamba's num_experts beside expert_layer_period): read only through the families above
_EXPERT_COUNT_NAME = re.compile(r"(^|_)(n|num)_?(local_|routed_)?experts?$|^moe_(num_)?experts?$|^num_experts_per_layer$")
# Fields that change which layers route, or add experts, in families moeplan does not read: Jamba's periods (and
# its Mamba layers), Nemotron-H's and Falcon-H1's block patterns, Step-3's MoE layer list and shared expert,
# Hunyuan-MoE's per-layer top-k and shared experts, Gemma 4's MoE block beside a dense MLP
_UNREAD_STRUCTURE_FIELDS = ("expert_layer_period", "expert_layer_offset", "attn_layer_period", "layers_block_type",
                            "hybrid_override_pattern", "moe_layers_enum", "moe_topk", "num_shared_expert",
                            "enable_moe_block", "top_k_experts")
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

    moe, moe_layers = _moe(config, get, layers, model_type, where)
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


def _moe(config: Mapping[str, Any], get, layers: int, model_type: str,
         where: str) -> tuple[MoE | None, tuple[int, ...]]:
    _refuse_unread(config, model_type, where, structure=True)
    for key in _EXPERT_COUNTS:
        if config.get(key) == 0 and not isinstance(config.get(key), bool):
            raise InputError(f"{where} {key}", "is 0: an MoE without experts",
                             f"remove {key} (or set it to null) for a dense model, or give the routed expert count")
    deepseek_style = config.get("n_routed_experts") is not None or (
        config.get("num_experts") is not None and "first_k_dense_replace" in config)  # Kimi K3 names them num_experts
    if deepseek_style:  # DeepSeek-V2/V3/V4, Kimi K2/K3, GLM-5
        key = "n_routed_experts" if config.get("n_routed_experts") is not None else "num_experts"
        first_dense = get("first_k_dense_replace", 0, allow_zero=True)
        routed = _moe_layer_flags(config, layers, where)
        freq = 1 if routed is not None else get("moe_layer_freq", 1)
        width = get("moe_intermediate_size")
        shared_key = "n_shared_experts" if config.get("n_shared_experts") is not None else "num_shared_experts"
        shared = get(shared_key, 0, allow_zero=True)
        # Step-3.x names its shared expert's width apart from the routed experts'
        shared_width = get("share_expert_dim", width) if shared else 0
        latent = get("routed_expert_hidden_size", 0, allow_zero=True)
        groups, per_token = _groups(get, get(key), where)
        moe = MoE(get(key), _top_k(get, key, where, config), width, shared, shared * shared_width, False,
                  latent_size=latent, hash_layers=get("num_hash_layers", 0, allow_zero=True),
                  num_groups=groups, groups_per_token=per_token)
        return moe, tuple(i for i in range(layers) if i >= first_dense and i % freq == 0 and (routed is None or routed[i]))
    if config.get("num_experts") is not None:  # Qwen2/Qwen3-MoE
        step = get("decoder_sparse_step", 1)
        dense_only = _layer_list(config, "mlp_only_layers", layers, where)
        shared_width = get("shared_expert_intermediate_size", 0, allow_zero=True)
        moe = MoE(get("num_experts"), _top_k(get, "num_experts", where), get("moe_intermediate_size"),
                  1 if shared_width else 0, shared_width, bool(shared_width))
        return moe, tuple(i for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
    if config.get("num_local_experts") is not None:
        width = get("intermediate_size")
        if model_type.startswith("llama4"):  # every Llama 4 MoE layer adds a shared expert of the experts' width
            moe = MoE(get("num_local_experts"), _top_k(get, "num_local_experts", where), width, 1, width, False)
            if config.get("moe_layers"):
                return moe, tuple(sorted(_layer_list(config, "moe_layers", layers, where)))
            step = get("interleave_moe_layer_step", 1)
            return moe, tuple(i for i in range(layers) if (i + 1) % step == 0)
        # Mixtral; Granite-MoE-Shared adds one shared MLP of shared_intermediate_size
        shared = get("shared_intermediate_size", 0, allow_zero=True)
        moe = MoE(get("num_local_experts"), _top_k(get, "num_local_experts", where), width, int(shared > 0), shared, False)
        return moe, tuple(range(layers))
    if config.get("moe_num_experts") is not None:  # ERNIE 4.5
        return _ernie_moe(config, get, layers, where)
    _refuse_unread(config, model_type, where, structure=False)
    return None, ()


def _moe_layer_flags(config: Mapping[str, Any], layers: int, where: str) -> list[int] | None:
    """`moe_layer_freq` given per layer (MiMo-V2-Flash: 1 where the layer routes), or None where it is a period."""
    flags = config.get("moe_layer_freq")
    if not isinstance(flags, list):
        return None
    if len(flags) != layers or not all(f in (0, 1) and not isinstance(f, bool) for f in flags):
        raise InputError(f"{where} moe_layer_freq", f"a list must give 0 or 1 for each of the {layers} layers, got "
                         f"{excerpt(flags)}", "copy moe_layer_freq from the checkpoint's config.json")
    return flags


def _ernie_moe(config: Mapping[str, Any], get, layers: int, where: str) -> tuple[MoE, tuple[int, ...]]:
    """ERNIE 4.5's MoE (vLLM's and transformers' Ernie4_5_Moe): layer i routes where (i + 1) % moe_layer_interval
    is 0 and moe_layer_start_index <= i <= moe_layer_end_index (default the last layer); its shared experts form
    one MLP of moe_num_shared_experts x moe_intermediate_size. The VL models' per-modality lists are refused."""
    for key in ("moe_num_experts", "moe_layer_start_index", "moe_layer_end_index", "moe_intermediate_size"):
        if isinstance(config.get(key), list):
            raise InputError(f"{where} {key}", f"is a per-modality list {excerpt(config[key])} (ERNIE 4.5 VL): "
                             "moeplan reads the text model's experts only",
                             f"give the text experts' {key} as one number")
    experts, width = get("moe_num_experts"), get("moe_intermediate_size")
    top_k = get("moe_k")
    if top_k > experts:
        raise InputError(f"{where} moe_k", f"{top_k} is more than the {experts} experts (moe_num_experts)",
                         f"give at most {experts} experts per token")
    shared = get("moe_num_shared_experts", 0, allow_zero=True)
    first, interval = get("moe_layer_start_index", 0, allow_zero=True), get("moe_layer_interval", 1)
    end = config.get("moe_layer_end_index")
    last = layers - 1 if end is None or end == -1 else get("moe_layer_end_index", 0, allow_zero=True)
    moe = MoE(experts, top_k, width, shared, shared * width, False)
    return moe, tuple(i for i in range(layers) if (i + 1) % interval == 0 and first <= i <= last)


def _refuse_unread(config: Mapping[str, Any], model_type: str, where: str, structure: bool) -> None:
    """A layer pattern or shared experts in a field moeplan does not read (`structure`), or, for a config about to
    be read as dense, an expert count under another name: priced without them, a model's weights, FLOPs and step
    would all be wrong without a word."""
    if structure:
        found = [(k, config[k]) for k in _UNREAD_STRUCTURE_FIELDS if config.get(k) not in (None, 0, "", [], False)]
        # MiniMax's attn_type_list: 1 softmax attention, 0 lightning (linear) attention, which moeplan does not read
        kinds = config.get("attn_type_list")
        if kinds is not None and (not isinstance(kinds, list) or any(k != 1 or isinstance(k, bool) for k in kinds)):
            found.append(("attn_type_list", kinds))
    else:
        found = [(k, v) for k, v in config.items() if isinstance(k, str) and _EXPERT_COUNT_NAME.search(k)
                 and isinstance(v, int) and not isinstance(v, bool) and v > 1]
    if found:
        key, value = found[0]
        kind = f"model_type {excerpt(model_type)}" if model_type else "this config"
        what = ("a layer pattern or shared experts" if structure else "an expert count")
        raise InputError(f"{where} {key}", f"{excerpt(value)}: {kind} gives {what} in a field moeplan does not "
                         "read, so it cannot tell which layers route to which experts",
                         "restate the model in a family moeplan reads (hwmodels/model_arch.py's docstring: e.g. "
                         "n_routed_experts with first_k_dense_replace, n_shared_experts and moe_intermediate_size) "
                         "in a copy of the config.json, or drop the field if the model is dense")


def _groups(get, experts: int, where: str) -> tuple[int, int]:
    """`n_group` / `topk_group` (default 1 / 1: no group limit), checked: the groups split the experts evenly
    (DeepSeek's router reshapes its scores to [tokens, n_group, experts / n_group]) and a token picks 1..n_group."""
    groups = get("n_group", 1)
    if experts % groups:
        raise InputError(f"{where} n_group", f"{groups} groups do not split the {experts} routed experts evenly",
                         "give the checkpoint's n_group (a divisor of the routed experts)")
    if groups == 1:  # one group holds every expert: topk_group (Kimi K3 gives 1 without n_group) limits nothing
        return 1, 1
    per_token = get("topk_group")
    if per_token > groups:
        raise InputError(f"{where} topk_group", f"{per_token} is more than the {groups} groups (n_group)",
                         "give at most n_group groups per token")
    return groups, per_token


def _top_k(get, experts_key: str, where: str, config: Mapping[str, Any] | None = None) -> int:
    alias = config is not None and config.get("num_experts_per_tok") is None and "num_experts_per_token" in config
    top_k, experts = get("num_experts_per_token" if alias else "num_experts_per_tok"), get(experts_key)
    if top_k > experts:
        raise InputError(f"{where} num_experts_per_tok", f"{top_k} is more than the {experts} experts ({experts_key})",
                         f"give at most {experts} experts per token")
    return top_k


def _layer_list(config: Mapping[str, Any], key: str, layers: int, where: str) -> set[int]:
    value = config.get(key) or []
    if not isinstance(value, list) or len(value) > layers or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in value):
        raise InputError(f"{where} {key}", f"must be a list of layer indices in [0, {layers}), got {excerpt(value)}",
                         "give the indices of the layers with a dense MLP, e.g. [0, 1]")
    return set(value)


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
