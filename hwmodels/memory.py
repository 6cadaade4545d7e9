"""Memory per device for a parallel layout: weights by part, activation workspace, KV cache capacity.

A layout spreads one model over `tp * dp * pp` devices:
- attention (and the dense MLPs, shared experts, embedding and LM head) is tensor-parallel over `tp`
  and replicated over `dp` data-parallel attention groups;
- routed experts are expert-parallel over all `tp * dp` devices of a pipeline stage, each device
  holding ceil((experts + redundant) / ep) expert slots per MoE layer;
- attention-FFN disaggregated (`ffn_devices` > 0, hwmodels.afd): the routed experts sit on the FFN devices alone,
  ceil((experts + redundant) / ffn_devices) slots per MoE layer each, with their tokens' workspace; the attention
  devices hold the rest and every KV cache, so the layout's figures (weights, KV capacity) are an attention device's,
  and it fits only where an FFN device's experts fit too;
- `pp` pipeline stages split the layers as the engines do (hwmodels.pipeline.stage_layers); the embedding sits on
  the first stage, the LM head on the last; a device holds its stage's weights and the KV cache of its stage's
  layers for every sequence of its attention group (all pp micro-batches), so the instance holds as many sequences
  as one stage's dp groups do.
MLA caches one latent per token that every tensor-parallel rank needs, so attention TP does not
shard the KV cache (the reason large MLA deployments use data-parallel attention); GQA shards it
over min(tp, kv_heads). A sequence also keeps a bounded cache that does not grow with its context: the sliding
windows (gpt-oss, DeepSeek-V4) and the fp32 recurrent state of linear-attention layers (Kimi K3's KDA, Qwen3.5's
Gated DeltaNet), which TP shards by heads like GQA. An engine whose KV pool keeps no per-window pool reserves a
share of the context for each sliding layer instead (`sliding_kv_share`, catalogs/engine_kv.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwmodels.arithmetic import kv_bytes_per_token, linear_state_bytes_per_sequence, unit_sizes, window_bytes_per_sequence
from hwmodels.attention_kinds import CompressedAttention
from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.model_arch import GQAAttention, MLAAttention, ModelArch
from hwmodels.pipeline import stage_layers
from hwmodels.precision import PrecisionPlan


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes on the most loaded device of a layout, and how many sequences of a context length fit."""

    layout: Layout
    layout_name: str
    weights_by_part: dict[str, float]
    weight_bytes: float
    workspace_bytes: float
    usable_bytes: float  # HBM x utilisation
    kv_capacity_bytes: float  # usable - weights - workspace; negative when the layout does not fit
    kv_bytes_per_sequence: float  # on one device, at the given context length (attention KV, sliding windows included)
    context_tokens: int
    concurrent_sequences: int  # whole layout (all DP groups)
    linear_state_bytes_per_sequence: float = 0.0  # on one device: the linear-attention state, whatever the context
    ffn_device_bytes: float = 0.0  # attention-FFN disaggregated: an FFN device's experts and workspace (0 otherwise)

    @property
    def fits(self) -> bool:
        return self.kv_capacity_bytes > 0 and self.concurrent_sequences > 0



def weights_per_device(arch: ModelArch, plan: PrecisionPlan, layout: Layout, mtp_module: bool = False) -> dict[str, float]:
    """Weight bytes by part on the device of the heaviest pipeline stage; with `mtp_module`, the
    speculative-decoding MTP modules too (each an MoE layer, sharded like one, and its [D, 2D]
    projection), on the last stage, which holds the LM head they share."""
    u = unit_sizes(arch, plan)
    moe_layers = set(arch.moe_layers)
    n_experts = arch.moe.num_experts if arch.moe else 0
    # each slot holds 1 / moe_tp of an expert's width; attention-FFN disaggregated, the attention devices hold none
    slots = math.ceil((n_experts + layout.redundant_experts) / layout.ep) / layout.moe_tp \
        if n_experts and not layout.ffn_devices else 0
    best: dict[str, float] = {}
    for s, layers in enumerate(stage_layers(arch.num_layers, layout.pp)):
        n_moe = sum(1 for i in layers if i in moe_layers)
        n_dense = len(layers) - n_moe
        parts = {
            "attention": u.attention_per_layer * len(layers) / layout.tp,
            "dense_mlp": u.dense_mlp_per_dense_layer * n_dense / layout.tp,
            "shared_experts": u.shared_per_moe_layer * n_moe / layout.tp,
            "routed_experts": u.expert * slots * n_moe,
            "router": u.router_per_moe_layer * n_moe,
            "norms": u.norms_per_layer * len(layers),
            "embedding": u.embedding / layout.tp if s == 0 else 0.0,
            "lm_head": u.lm_head / layout.tp if s == layout.pp - 1 else 0.0,
        }
        if mtp_module and s == layout.pp - 1:
            one_moe_layer = (u.attention_per_layer / layout.tp + u.shared_per_moe_layer / layout.tp + u.expert * slots
                             + u.router_per_moe_layer + u.norms_per_layer)
            projection = plan.of("attention").matrix_bytes(arch.hidden_size, 2 * arch.hidden_size) / layout.tp
            parts["mtp_module"] = arch.num_mtp_layers * (one_moe_layer + projection)
        if sum(parts.values()) > sum(best.values()):
            best = parts
    return best


def ffn_device_bytes(arch: ModelArch, plan: PrecisionPlan, layout: Layout, tokens_per_step: int) -> float:
    """An FFN device's bytes, attention-FFN disaggregated: its expert slots of every MoE layer, and the rows the
    attention devices send it per step (their `tokens_per_step` each, top_k copies spread over the FFN devices) in
    the dispatch dtype, their gate/up outputs and combine inputs. 0 for other layouts."""
    if not layout.ffn_devices or arch.moe is None:
        return 0.0
    slots = math.ceil((arch.moe.num_experts + layout.redundant_experts) / layout.ffn_devices)
    expert = unit_sizes(arch, plan).expert * slots * len(arch.moe_layers)
    d, width, act = arch.hidden_size, arch.moe.expert_intermediate_size, plan.combine.bytes_per_element
    rows = tokens_per_step * layout.attention_devices / layout.tp * arch.moe.top_k / layout.ffn_devices
    return expert + rows * (d * plan.dispatch.bytes_per_element + 2 * width * act + d * act)


def workspace_bytes(arch: ModelArch, plan: PrecisionPlan, layout: Layout, tokens_per_step: int) -> float:
    """Live activations of the widest layer for one step of `tokens_per_step` tokens on one device.

    Residual stream and its normed copy, plus the larger of: MoE (tokens x top_k rows received in
    the dispatch dtype, gate/up outputs and combine inputs) and attention (prefill form: q, k, v
    expanded per local head). Allocator slack and CUDA graphs are in (1 - hbm_utilization).
    """
    act = plan.combine.bytes_per_element  # activations travel in the combine dtype (bf16 for fp8 checkpoints)
    d = arch.hidden_size
    residual = 2 * d * act
    if arch.moe:
        k, width = arch.moe.top_k, arch.moe.expert_intermediate_size
        mlp = k * (d * plan.dispatch.bytes_per_element + 2 * width * act + d * plan.combine.bytes_per_element)
    else:
        mlp = 2 * arch.dense_intermediate_size / layout.tp * act
    att = arch.attention
    if isinstance(att, CompressedAttention):  # q of the local heads, the KV head, the output before wo_a
        attention = (2 * att.num_heads / layout.tp + 1) * att.head_dim * act
    elif isinstance(att, MLAAttention):
        per_head = 2 * (att.qk_nope_head_dim + att.qk_rope_head_dim) + att.v_head_dim
        attention = att.num_heads / layout.tp * per_head * act
    else:
        attention = (att.num_heads * att.head_dim + att.num_kv_heads * (att.head_dim + att.value_dim)) / layout.tp * act
    return tokens_per_step * (residual + max(mlp, attention))


def kv_bytes_per_token_per_device(arch: ModelArch, plan: PrecisionPlan, layout: Layout, mtp_module: bool = False,
                                  sliding_kv_share: float = 0.0) -> float:
    heaviest_stage_layers = max(map(len, stage_layers(arch.num_layers, layout.pp)))
    if mtp_module:  # each MTP module's layer caches its own keys and values
        heaviest_stage_layers += arch.num_mtp_layers
    per_token = kv_bytes_per_token(arch, plan, sliding_kv_share) * heaviest_stage_layers / arch.num_layers
    if isinstance(arch.attention, GQAAttention):
        per_token /= min(layout.tp, arch.attention.num_kv_heads)
    return per_token


def _stage_share(arch: ModelArch, layout: Layout) -> float:
    return max(map(len, stage_layers(arch.num_layers, layout.pp))) / arch.num_layers


def window_bytes_per_sequence_per_device(arch: ModelArch, plan: PrecisionPlan, layout: Layout, context_tokens: float,
                                         sliding_kv_share: float = 0.0) -> float:
    per_sequence = window_bytes_per_sequence(arch, plan, context_tokens, sliding_kv_share) * _stage_share(arch, layout)
    if isinstance(arch.attention, GQAAttention):
        per_sequence /= min(layout.tp, arch.attention.num_kv_heads)
    return per_sequence


def sliding_kv_note(engine: str, sliding_kv_share: float) -> str:
    """The assumption line of an engine that holds sliding-window layers beyond their window."""
    return (f"{engine}'s KV pool holds each sliding-window layer at {sliding_kv_share:.0%} of the context, not its "
            "window, so fewer sequences fit than the windows alone would allow (catalogs/engine_kv.yaml)")


def linear_state_bytes_per_sequence_per_device(arch: ModelArch, layout: Layout) -> float:
    if arch.linear is None:
        return 0.0
    return (linear_state_bytes_per_sequence(arch) * _stage_share(arch, layout)
            / min(layout.tp, arch.linear.num_value_heads))


def device_memory(
    arch: ModelArch,
    plan: PrecisionPlan,
    cluster: Cluster,
    layout: Layout,
    context_tokens: int,
    hbm_utilization: float,
    tokens_per_step: int,
    mtp_module: bool = False,
    sliding_kv_share: float = 0.0,  # catalog.sliding_kv_share of the serving engine (0: each sliding layer its window)
) -> DeviceMemory:
    by_part = weights_per_device(arch, plan, layout, mtp_module)
    weights = sum(by_part.values())
    workspace = workspace_bytes(arch, plan, layout, tokens_per_step)
    usable = cluster.device.hbm_bytes * hbm_utilization
    kv_capacity = usable - weights - workspace
    ffn_bytes = ffn_device_bytes(arch, plan, layout, tokens_per_step)
    if ffn_bytes > usable:  # the FFN devices' experts do not fit: neither does the layout
        kv_capacity = min(kv_capacity, usable - ffn_bytes)
    per_sequence = (kv_bytes_per_token_per_device(arch, plan, layout, mtp_module, sliding_kv_share) * context_tokens
                    + window_bytes_per_sequence_per_device(arch, plan, layout, context_tokens, sliding_kv_share))
    state = linear_state_bytes_per_sequence_per_device(arch, layout)
    per_group = max(0, math.floor(kv_capacity / (per_sequence + state))) if kv_capacity > 0 else 0
    return DeviceMemory(
        layout=layout,
        layout_name=layout.name(arch.is_moe),
        weights_by_part=by_part,
        weight_bytes=weights,
        workspace_bytes=workspace,
        usable_bytes=usable,
        kv_capacity_bytes=kv_capacity,
        kv_bytes_per_sequence=per_sequence,
        context_tokens=context_tokens,
        concurrent_sequences=per_group * layout.dp,
        linear_state_bytes_per_sequence=state,
        ffn_device_bytes=ffn_bytes,
    )
