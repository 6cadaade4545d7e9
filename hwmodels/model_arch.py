"""ModelArch: a decoder transformer (MoE or dense) read from the fields of its HuggingFace config.json.

Understood families, recognised by their fields, not by name:
- MLA attention (DeepSeek-V2/V3/R1, Kimi K2): `kv_lora_rank`, `q_lora_rank`, `qk_nope_head_dim`,
  `qk_rope_head_dim`, `v_head_dim`; otherwise grouped-query attention with `num_key_value_heads`
  and `head_dim` (default hidden_size / num_attention_heads).
- MoE: `n_routed_experts` (DeepSeek style, with `first_k_dense_replace`, `moe_layer_freq`,
  `n_shared_experts`), `num_experts` (Qwen-MoE, with `decoder_sparse_step`, `mlp_only_layers`,
  `shared_expert_intermediate_size`) or `num_local_experts` (Mixtral); otherwise a dense model.
- A multimodal wrapper with `text_config` (Kimi K2.5) is read through its text model; the vision
  tower is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hwmodels.errors import InputError


@dataclass(frozen=True)
class MLAAttention:
    num_heads: int
    q_lora_rank: int  # 0: no query compression (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """The compressed cache: one latent of kv_lora_rank plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(frozen=True)
class GQAAttention:
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qk_norm: bool  # Qwen3 normalises q and k per head

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        return 2 * self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class MoE:
    num_experts: int
    top_k: int
    expert_intermediate_size: int
    num_shared_experts: int  # shared experts of expert_intermediate_size each
    shared_intermediate_size: int  # total width of the shared MLP (0 if none)
    shared_gate: bool  # Qwen2-MoE gates its shared expert with a [1, hidden] projection


@dataclass(frozen=True)
class ModelArch:
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    tie_word_embeddings: bool
    dense_intermediate_size: int
    attention: MLAAttention | GQAAttention
    moe: MoE | None
    moe_layers: tuple[int, ...]  # indices of the layers whose MLP is an MoE
    num_mtp_layers: int  # DeepSeek multi-token-prediction modules (not part of the main model)
    max_position_embeddings: int
    torch_dtype: str
    quantization_config: Mapping[str, Any] | None

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


def arch_from_config(config: Mapping[str, Any], name: str, where: str = "config.json") -> ModelArch:
    """Build a ModelArch from a config.json dict; `where` names the file in error messages."""
    if not isinstance(config, Mapping):
        raise InputError(where, "is not a JSON object", "point at a HuggingFace config.json")
    if "text_config" in config and "hidden_size" not in config:
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
            f"missing; model_type '{kind}' is not an MoE or dense decoder transformer moeplan understands",
            f"give a decoder config with {', '.join(_REQUIRED)}",
        )
    get = _getter(config, where)
    hidden, layers, heads = get("hidden_size"), get("num_hidden_layers"), get("num_attention_heads")

    if "kv_lora_rank" in config and config["kv_lora_rank"]:
        attention: MLAAttention | GQAAttention = MLAAttention(
            num_heads=heads,
            q_lora_rank=get("q_lora_rank", 0, allow_zero=True),
            kv_lora_rank=get("kv_lora_rank"),
            qk_nope_head_dim=get("qk_nope_head_dim"),
            qk_rope_head_dim=get("qk_rope_head_dim"),
            v_head_dim=get("v_head_dim"),
        )
    else:
        attention = GQAAttention(
            num_heads=heads,
            num_kv_heads=get("num_key_value_heads", heads),
            head_dim=get("head_dim", hidden // heads),
            qk_norm=config.get("model_type", "").startswith("qwen3"),
        )

    moe, moe_layers = _moe(config, get, layers)
    return ModelArch(
        name=name,
        model_type=str(config.get("model_type", "")),
        hidden_size=hidden,
        num_layers=layers,
        vocab_size=get("vocab_size"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        dense_intermediate_size=get("intermediate_size", 0, allow_zero=True),
        attention=attention,
        moe=moe,
        moe_layers=moe_layers,
        num_mtp_layers=get("num_nextn_predict_layers", 0, allow_zero=True),
        max_position_embeddings=get("max_position_embeddings", 0, allow_zero=True),
        torch_dtype=str(config.get("torch_dtype") or "bfloat16"),
        quantization_config=config.get("quantization_config"),
    )


def _moe(config: Mapping[str, Any], get, layers: int) -> tuple[MoE | None, tuple[int, ...]]:
    if config.get("n_routed_experts"):  # DeepSeek-V2/V3, Kimi K2
        first_dense = get("first_k_dense_replace", 0, allow_zero=True)
        freq = get("moe_layer_freq", 1)
        width = get("moe_intermediate_size")
        shared = get("n_shared_experts", 0, allow_zero=True)
        moe = MoE(get("n_routed_experts"), get("num_experts_per_tok"), width, shared, shared * width, False)
        return moe, tuple(i for i in range(layers) if i >= first_dense and i % freq == 0)
    if config.get("num_experts"):  # Qwen2/Qwen3-MoE
        step = get("decoder_sparse_step", 1)
        dense_only = set(config.get("mlp_only_layers") or [])
        shared_width = get("shared_expert_intermediate_size", 0, allow_zero=True)
        moe = MoE(get("num_experts"), get("num_experts_per_tok"), get("moe_intermediate_size"),
                  1 if shared_width else 0, shared_width, bool(shared_width))
        return moe, tuple(i for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
    if config.get("num_local_experts"):  # Mixtral
        moe = MoE(get("num_local_experts"), get("num_experts_per_tok"), get("intermediate_size"), 0, 0, False)
        return moe, tuple(range(layers))
    return None, ()


def _getter(config: Mapping[str, Any], where: str):
    def get(key: str, default: int | None = None, allow_zero: bool = False) -> int:
        value = config.get(key, default)
        if value is None:
            raise InputError(f"{where} {key}", "missing", f"add {key} to the config")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} {key}", f"must be an integer, got {value!r}", "fix the config value")
        if value < 0 or (value == 0 and not allow_zero):
            raise InputError(f"{where} {key}", f"must be positive, got {value}", "fix the config value")
        return value

    return get
