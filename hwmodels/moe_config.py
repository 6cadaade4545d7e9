"""The routed experts of a config.json: which family names them, how wide they are, which layers route.

The families (hwmodels.model_arch's docstring lists their fields) and the refusals: an expert count or a layer
pattern in a field no family reads (`_refuse_unread`) is one InputError naming that field, never a model read as
dense or as another family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from hwmodels.errors import InputError, excerpt


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


def read_moe(config: Mapping[str, Any], get, layers: int, model_type: str,
             where: str) -> tuple[MoE | None, tuple[int, ...]]:
    """The routed experts of a config.json and the layers that route to them (None, () for a dense model); `get`
    reads a bounded size (model_arch._getter). The families read and the configs refused: hwmodels.model_arch."""
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
