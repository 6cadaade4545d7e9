"""Random inputs of realistic scale and their fp32 references, after DeepGEMM's
tests/generators.py: every generate_* returns (inputs, reference) with the reference computed
in fp32 from the unquantised activations. Expert weights are referenced as a checkpoint stores
them (`reference="checkpoint"`: the fp8 blocks dequantised, the model being served) or before any
rounding (`"unquantised"`: what converting a bf16 model to fp8 costs on top).

Scale: weights ~ N(0, 0.02) (the initializer_range of the DeepSeek-V3 and Kimi K2 configs),
activations ~ N(0, 1) (what RMSNorm hands the layer).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from kernels_ref.fp8 import quantize_activation_groups, quantize_weight_blocks
from kernels_ref.grouped_gemm import (
    ExpertWeights,
    Fp8ExpertWeights,
    dequantize_expert_weights,
    grouped_swiglu_reference,
    quantize_expert_weights,
)
from kernels_ref.mla_decode import MlaDecodeInputs, mla_decode_reference
from kernels_ref.moe_layer import Router, moe_layer_reference

WEIGHT_STD = 0.02


def _normal(shape, std: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.randn(shape, generator=generator) * std).to(device)


def random_expert_weights(
    experts: int, hidden: int, intermediate: int, generator: torch.Generator, device="cpu"
) -> ExpertWeights:
    """w13: [E, 2I, D], w2: [E, D, I], fp32 ~ N(0, 0.02)."""
    return ExpertWeights(
        w13=_normal((experts, 2 * intermediate, hidden), WEIGHT_STD, generator, device),
        w2=_normal((experts, hidden, intermediate), WEIGHT_STD, generator, device),
    )


def random_fp8_expert_weights(
    experts: int, hidden: int, intermediate: int, generator: torch.Generator, device="cpu", chunk: int = 4
) -> Fp8ExpertWeights:
    """quantize_expert_weights(random_expert_weights(...)), chunk experts at a time: the fp32
    weights of a device's share of a large layer never exist at once (32 Kimi K2 experts: 5.6 GB)."""
    parts = [
        quantize_expert_weights(random_expert_weights(min(chunk, experts - e), hidden, intermediate, generator, device))
        for e in range(0, experts, chunk)
    ]
    names = ("w13", "w13_scale", "w2", "w2_scale")
    return Fp8ExpertWeights(**{name: torch.cat([getattr(p, name) for p in parts]) for name in names})


def random_router(
    experts: int, hidden: int, top_k: int, generator: torch.Generator, routed_scaling_factor: float = 2.827, device="cpu"
) -> Router:
    """A noaux_tc router: weight ~ N(0, 0.02), load-balancing bias ~ N(0, 0.1).
    routed_scaling_factor defaults to Kimi K2's."""
    return Router(
        weight=_normal((experts, hidden), WEIGHT_STD, generator, device),
        e_score_correction_bias=_normal((experts,), 0.1, generator, device),
        top_k=top_k,
        routed_scaling_factor=routed_scaling_factor,
    )


def offsets_from_counts(counts: Sequence[int], device="cpu") -> torch.Tensor:
    """[E] rows per expert -> [E + 1] int64 offsets of the contiguous layout."""
    return F.pad(torch.tensor(counts, dtype=torch.int64).cumsum(0), (1, 0)).to(device)


@dataclass(frozen=True)
class Fp8GemmInputs:
    x_q: torch.Tensor  # [M, K] fp8
    x_scale: torch.Tensor  # [M, ceil(K/128)]
    w_q: torch.Tensor  # [N, K] fp8
    w_scale: torch.Tensor  # [ceil(N/128), ceil(K/128)]


def generate_fp8_gemm(m: int, n: int, k: int, seed: int = 0, device="cpu") -> tuple[Fp8GemmInputs, torch.Tensor]:
    """Reference: [M, N] = x @ w.T in fp32."""
    generator = torch.Generator().manual_seed(seed)
    x = _normal((m, k), 1.0, generator, device)
    w = _normal((n, k), WEIGHT_STD, generator, device)
    return Fp8GemmInputs(*quantize_activation_groups(x), *quantize_weight_blocks(w)), x @ w.T


@dataclass(frozen=True)
class GroupedSwigluInputs:
    x_q: torch.Tensor  # [T, D] fp8, rows sorted by expert
    x_scale: torch.Tensor  # [T, ceil(D/128)]
    offsets: torch.Tensor  # [E + 1]
    weights: Fp8ExpertWeights


Reference = Literal["checkpoint", "unquantised"]


def _reference_weights(weights: ExpertWeights, stored: Fp8ExpertWeights, reference: Reference) -> ExpertWeights:
    if reference not in ("checkpoint", "unquantised"):
        raise ValueError(f"reference must be 'checkpoint' or 'unquantised', got {reference!r}")
    return dequantize_expert_weights(stored) if reference == "checkpoint" else weights


def generate_grouped_swiglu(
    counts: Sequence[int], hidden: int, intermediate: int, seed: int = 0, device="cpu",
    reference: Reference = "checkpoint",
) -> tuple[GroupedSwigluInputs, torch.Tensor]:
    """counts: [E] tokens per expert (zeros allowed). Reference: [T, D] fp32."""
    generator = torch.Generator().manual_seed(seed)
    weights = random_expert_weights(len(counts), hidden, intermediate, generator, device)
    x = _normal((sum(counts), hidden), 1.0, generator, device)
    offsets = offsets_from_counts(counts, device)
    stored = quantize_expert_weights(weights)
    expected = grouped_swiglu_reference(x, offsets, _reference_weights(weights, stored, reference))
    return GroupedSwigluInputs(*quantize_activation_groups(x), offsets, stored), expected


def random_mla_decode_inputs(
    seq_lens: Sequence[int],
    heads: int,
    qk_nope_head_dim: int,
    qk_rope_head_dim: int,
    v_head_dim: int,
    kv_lora_rank: int,
    generator: torch.Generator,
    device="cpu",
) -> MlaDecodeInputs:
    """fp32 inputs for a batch of sequences of the given cache lengths. The latent is ~ N(0, 1)
    as after kv_a_layernorm; the softmax scale is 1 / sqrt(qk_nope_head_dim + qk_rope_head_dim)."""
    batch, length = len(seq_lens), max(seq_lens)
    return MlaDecodeInputs(
        q_nope=_normal((batch, heads, qk_nope_head_dim), 1.0, generator, device),
        q_rope=_normal((batch, heads, qk_rope_head_dim), 1.0, generator, device),
        c_kv=_normal((batch, length, kv_lora_rank), 1.0, generator, device),
        k_rope=_normal((batch, length, qk_rope_head_dim), 1.0, generator, device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int64, device=device),
        w_uk=_normal((heads, qk_nope_head_dim, kv_lora_rank), WEIGHT_STD, generator, device),
        w_uv=_normal((heads, v_head_dim, kv_lora_rank), WEIGHT_STD, generator, device),
        softmax_scale=(qk_nope_head_dim + qk_rope_head_dim) ** -0.5,
    )


def cast_mla_decode_inputs(inputs: MlaDecodeInputs, dtype: torch.dtype) -> MlaDecodeInputs:
    """Every floating-point tensor in dtype (the lengths and the softmax scale unchanged)."""
    names = ("q_nope", "q_rope", "c_kv", "k_rope", "w_uk", "w_uv")
    return replace(inputs, **{name: getattr(inputs, name).to(dtype) for name in names})


def generate_mla_decode(
    seq_lens: Sequence[int],
    heads: int,
    qk_nope_head_dim: int,
    qk_rope_head_dim: int,
    v_head_dim: int,
    kv_lora_rank: int,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    device="cpu",
) -> tuple[MlaDecodeInputs, torch.Tensor]:
    """Inputs in dtype; reference: [B, H, V] fp32, from the fp32 tensors before the cast."""
    generator = torch.Generator().manual_seed(seed)
    exact = random_mla_decode_inputs(
        seq_lens, heads, qk_nope_head_dim, qk_rope_head_dim, v_head_dim, kv_lora_rank, generator, device
    )
    return cast_mla_decode_inputs(exact, dtype), mla_decode_reference(exact)


@dataclass(frozen=True)
class MoeLayerInputs:
    x: torch.Tensor  # [T, D] fp32
    router: Router
    experts: Fp8ExpertWeights
    shared: Fp8ExpertWeights  # E = 1


def generate_moe_layer(
    tokens: int,
    hidden: int,
    intermediate: int,
    experts: int,
    top_k: int,
    routed_scaling_factor: float = 2.827,
    seed: int = 0,
    device="cpu",
    reference: Reference = "checkpoint",
) -> tuple[MoeLayerInputs, torch.Tensor]:
    """Reference: [T, D] fp32. routed_scaling_factor defaults to Kimi K2's."""
    generator = torch.Generator().manual_seed(seed)
    router = random_router(experts, hidden, top_k, generator, routed_scaling_factor, device)
    routed = random_expert_weights(experts, hidden, intermediate, generator, device)
    shared = random_expert_weights(1, hidden, intermediate, generator, device)
    x = _normal((tokens, hidden), 1.0, generator, device)
    inputs = MoeLayerInputs(x, router, quantize_expert_weights(routed), quantize_expert_weights(shared))
    expected = moe_layer_reference(x, router, _reference_weights(routed, inputs.experts, reference),
                                   _reference_weights(shared, inputs.shared, reference))
    return inputs, expected
