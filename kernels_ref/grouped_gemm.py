"""Grouped expert MLPs with SwiGLU over a variable number of tokens per expert.

# E = experts, T = token rows routed to the experts, D = hidden, I = expert intermediate size
Each expert computes down(silu(gate(x)) * up(x)). gate and up are fused into one weight w13
[2I, D] (gate rows first), as DeepGEMM and SGLang store them. Two layouts:
- contiguous (prefill): rows sorted by expert, expert e owns rows offsets[e]:offsets[e + 1];
- masked (decode): [E, max_m, D] with counts[e] valid rows per expert.
Empty experts cost nothing. The fp8 path quantises the SwiGLU output per token per 128
channels before the down projection, as DeepSeek-V3 inference does.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels_ref import native_cpu
from kernels_ref.fp8 import BLOCK, ceil_div, dequantize_weight_blocks, quantize_activation_groups, quantize_weight_blocks
from kernels_ref.fp8_gemm import GemmPath, fp8_grouped_gemm


@dataclass(frozen=True)
class ExpertWeights:
    """Unquantised expert weights (the reference's)."""

    w13: torch.Tensor  # [E, 2I, D]: gate rows, then up rows
    w2: torch.Tensor  # [E, D, I]


@dataclass(frozen=True)
class Fp8ExpertWeights:
    """Expert weights in float8_e4m3fn with one fp32 scale per 128x128 block."""

    w13: torch.Tensor  # [E, 2I, D]
    w13_scale: torch.Tensor  # [E, ceil(2I/128), ceil(D/128)]
    w2: torch.Tensor  # [E, D, I]
    w2_scale: torch.Tensor  # [E, ceil(D/128), ceil(I/128)]


def quantize_expert_weights(weights: ExpertWeights) -> Fp8ExpertWeights:
    """128x128 blocks per expert. With I a multiple of 128 (2048 in Kimi K2) no block spans
    gate and up rows, so this equals quantising gate_proj and up_proj apart, as checkpoints do."""
    w13, w13_scale = quantize_weight_blocks(weights.w13)
    w2, w2_scale = quantize_weight_blocks(weights.w2)
    return Fp8ExpertWeights(w13, w13_scale, w2, w2_scale)


def dequantize_expert_weights(weights: Fp8ExpertWeights) -> ExpertWeights:
    """The fp32 weights a checkpoint's fp8 blocks stand for: each code times its block's scale."""
    return ExpertWeights(dequantize_weight_blocks(weights.w13, weights.w13_scale),
                         dequantize_weight_blocks(weights.w2, weights.w2_scale))


def swiglu_reference(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One expert in fp32. x: [m, D], w13: [2I, D], w2: [D, I] -> [m, D] float32."""
    gate_up = x.float() @ w13.float().T  # [m, 2I]
    gate, up = gate_up.chunk(2, dim=-1)
    return (F.silu(gate) * up) @ w2.float().T


def grouped_swiglu_reference(x: torch.Tensor, offsets: torch.Tensor, weights: ExpertWeights) -> torch.Tensor:
    """Contiguous layout in fp32. x: [T, D], offsets: [E + 1] -> [T, D] float32."""
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    bounds = offsets.tolist()
    for e, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if end > start:
            out[start:end] = swiglu_reference(x[start:end], weights.w13[e], weights.w2[e])
    return out


def grouped_swiglu_fp8(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    offsets: torch.Tensor,
    weights: Fp8ExpertWeights,
    out_dtype: torch.dtype = torch.bfloat16,
    path: GemmPath | None = None,
) -> torch.Tensor:
    """Contiguous layout. x_q: [T, D] fp8 sorted by expert, x_scale: [T, ceil(D/128)],
    offsets: [E + 1] -> [T, D] out_dtype. path: None picks per expert from its token count."""
    gate_up = fp8_grouped_gemm(x_q, x_scale, offsets, weights.w13, weights.w13_scale, torch.float32, path)
    h_q, h_scale = swiglu_quantize(gate_up)
    return fp8_grouped_gemm(h_q, h_scale, offsets, weights.w2, weights.w2_scale, out_dtype, path)


def swiglu_quantize(gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_up: [T, 2I] float32 (gate columns first) -> quantize_activation_groups(silu(gate) * up):
    ([T, I] float8_e4m3fn, [T, ceil(I/128)] float32). On a CPU one native pass (native_cpu's glue)."""
    tokens, inter = gate_up.shape[0], gate_up.shape[1] // 2
    glue = native_cpu.library("glue") if gate_up.device.type == "cpu" and gate_up.dtype == torch.float32 else None
    if glue is None:
        gate, up = gate_up.chunk(2, dim=-1)  # [T, I] each
        return quantize_activation_groups(F.silu(gate) * up)
    gate_up = gate_up.contiguous()
    h_q = torch.empty(tokens, inter, dtype=torch.float8_e4m3fn)
    h_scale = torch.empty(tokens, ceil_div(inter, BLOCK), dtype=torch.float32)
    threads = native_cpu.glue_threads(gate_up.numel() * gate_up.element_size())
    if glue.swiglu_quantize_fp8(gate_up.data_ptr(), tokens, inter, h_q.data_ptr(), h_scale.data_ptr(), threads):
        raise MemoryError("swiglu_quantize_fp8 could not allocate its row buffers")
    return h_q, h_scale


def masked_swiglu_fp8(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    counts: torch.Tensor,
    weights: Fp8ExpertWeights,
    out_dtype: torch.dtype = torch.bfloat16,
    path: GemmPath | None = None,
) -> torch.Tensor:
    """Masked layout. x_q: [E, max_m, D] fp8, x_scale: [E, max_m, ceil(D/128)], counts: [E]
    -> [E, max_m, D] out_dtype, zero past each expert's count. The valid rows are gathered into
    the contiguous layout and scattered back."""
    experts, max_m, hidden = x_q.shape
    valid = (torch.arange(max_m, device=counts.device) < counts[:, None]).view(-1)  # [E * max_m]
    rows = torch.nonzero(valid).squeeze(1).to(x_q.device)
    offsets = F.pad(counts.cumsum(0), (1, 0))
    y = grouped_swiglu_fp8(
        x_q.view(torch.uint8).view(-1, hidden)[rows].view(x_q.dtype),
        x_scale.view(experts * max_m, -1)[rows],
        offsets,
        weights,
        out_dtype,
        path,
    )
    out = torch.zeros(experts * max_m, hidden, dtype=out_dtype, device=x_q.device)
    out[rows] = y
    return out.view(experts, max_m, hidden)
