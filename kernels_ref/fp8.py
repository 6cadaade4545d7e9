"""Block-scaled fp8 e4m3 quantisation as in the DeepSeek-V3 / Kimi K2 checkpoints.

Weights carry one fp32 scale per 128x128 block, activations one per token per 128 channels.
Scales follow the checkpoints' `weight_scale_inv` convention: value = q * scale, with
scale = amax / 448 so that a block's largest magnitude lands on the largest fp8 e4m3 value.
A dimension that is not a multiple of 128 ends in a ragged (shorter) last block.
"""

import torch
import torch.nn.functional as F

from kernels_ref import native_cpu

FP8_E4M3_MAX = 448.0
BLOCK = 128
# DeepGEMM's floor on a block's amax: an all-zero block gets a finite scale and q = 0.
AMAX_FLOOR = 1e-4
# fp8_e4m3_to_bf16 returns q * 2**-120; multiply by this to undo it.
BF16_BITS_UNSCALE = 2.0**120
# Tokens quantised at a time by quantize_activation_groups_torch.
ACTIVATION_CHUNK_ROWS = 256


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pad_to_blocks(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Zero-pads the given trailing dims (negative indices) up to multiples of BLOCK."""
    pad = [0] * (2 * x.dim())
    for d in dims:
        pad[2 * (-d - 1) + 1] = ceil_div(x.shape[d], BLOCK) * BLOCK - x.shape[d]
    return F.pad(x, pad) if any(pad) else x


def quantize_weight_blocks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantises a weight (or a stack of expert weights) in 128x128 blocks.

    w: [..., N, K], any float dtype.
    Returns (q [..., N, K] float8_e4m3fn, scale [..., ceil(N/128), ceil(K/128)] float32)
    with w ~= q * scale (each scale broadcast over its block).
    """
    *lead, n, k = w.shape
    nb, kb = ceil_div(n, BLOCK), ceil_div(k, BLOCK)
    # Zero padding leaves every block's amax unchanged.
    blocks = _pad_to_blocks(w.float(), (-2, -1)).view(*lead, nb, BLOCK, kb, BLOCK)
    amax = blocks.abs().amax(dim=(-3, -1), keepdim=True).clamp(min=AMAX_FLOOR)
    q = (blocks * (FP8_E4M3_MAX / amax)).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    q = q.to(torch.float8_e4m3fn).view(*lead, nb * BLOCK, kb * BLOCK)[..., :n, :k].contiguous()
    return q, (amax / FP8_E4M3_MAX).view(*lead, nb, kb)


def dequantize_weight_blocks(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q: [..., N, K] fp8, scale: [..., ceil(N/128), ceil(K/128)] -> [..., N, K] float32."""
    n, k = q.shape[-2:]
    expanded = scale.repeat_interleave(BLOCK, dim=-2).repeat_interleave(BLOCK, dim=-1)
    return q.float() * expanded[..., :n, :k]


def quantize_activation_groups(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantises activations per token in groups of 128 channels.

    x: [..., K], any float dtype.
    Returns (q [..., K] float8_e4m3fn, scale [..., ceil(K/128)] float32), x ~= q * scale.
    On a CPU, bf16 and fp32 inputs take the native kernel (native_cpu's glue: one pass per token
    group, e4m3 rounding in vectorised integer arithmetic, bit for bit the result of
    quantize_activation_groups_torch); PyTorch converts to fp8 element by element in scalar code.
    """
    glue = native_cpu.library("glue") if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32) else None
    if glue is None:
        return quantize_activation_groups_torch(x)
    *lead, k = x.shape
    kb = ceil_div(k, BLOCK)
    rows = x.reshape(-1, k).contiguous()
    q = torch.empty(rows.shape, dtype=torch.float8_e4m3fn)
    scale = torch.empty(rows.shape[0], kb, dtype=torch.float32)
    glue.quantize_fp8(rows.data_ptr(), int(x.dtype == torch.bfloat16), rows.shape[0], k, q.data_ptr(),
                      scale.data_ptr(), native_cpu.glue_threads(rows.numel() * rows.element_size()), None)
    return q.view(*lead, k), scale.view(*lead, kb)


def quantize_activation_groups_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_activation_groups in PyTorch operations (any device, any float dtype)."""
    *lead, k = x.shape
    kb = ceil_div(k, BLOCK)
    rows = x.reshape(-1, k)
    q = torch.empty(rows.shape, dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty(rows.shape[0], kb, dtype=torch.float32, device=x.device)
    # Chunks of tokens keep the fp32 temporaries small: on a CPU, fresh buffers of hundreds of
    # megabytes cost page faults that took longer than the arithmetic (8192 Kimi K2 tokens: 35 us
    # per token in one piece, 8 in chunks; the results are the same, token by token).
    for r0 in range(0, rows.shape[0], ACTIVATION_CHUNK_ROWS):
        chunk = slice(r0, r0 + ACTIVATION_CHUNK_ROWS)
        groups = _pad_to_blocks(rows[chunk].float(), (-1,)).view(-1, kb, BLOCK)
        amax = groups.abs().amax(dim=-1, keepdim=True).clamp(min=AMAX_FLOOR)
        q_chunk = (groups * (FP8_E4M3_MAX / amax)).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
        q[chunk] = q_chunk.to(torch.float8_e4m3fn).view(-1, kb * BLOCK)[:, :k]
        scale[chunk] = (amax / FP8_E4M3_MAX).view(-1, kb)
    return q.view(*lead, k), scale.view(*lead, kb)


def dequantize_activation_groups(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q: [..., K] fp8, scale: [..., ceil(K/128)] -> [..., K] float32."""
    k = q.shape[-1]
    return q.float() * scale.repeat_interleave(BLOCK, dim=-1)[..., :k]


def fp8_e4m3_to_bf16(q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Exact q * 2**-120 as bfloat16, by moving bits; q: [...] float8_e4m3fn -> [...] bfloat16.

    out: optional bfloat16 buffer of q's shape to write into (fresh large allocations cost page
    faults on a CPU).

    PyTorch converts fp8 element by element in scalar code (under 1e9 elements/s on a CPU core);
    these three integer passes vectorise. e4m3 is sign | 4 exponent bits (bias 7) | 3 mantissa
    bits; bfloat16 is sign | 8 exponent bits (bias 127) | 7 mantissa bits. Sign-extending the
    byte to 16 bits and shifting left by 4 puts its exponent and mantissa in the low exponent bits
    and the top mantissa bits of a bfloat16 and copies the sign into bits 11 to 15; masking with
    0x87F0 clears bits 11 to 14. The exponent bias grows by 120, so the value is q * 2**-120, and
    e4m3 subnormals land on bfloat16 subnormals of the same value * 2**-120 (multiply by
    BF16_BITS_UNSCALE before anything that flushes subnormals). The e4m3 NaN code turns into a
    finite number; quantize_* never produce it.
    """
    codes = q.view(torch.int8)
    bits = codes.to(torch.int16) if out is None else out.view(torch.int16).copy_(codes)
    bits.bitwise_left_shift_(4).bitwise_and_(-30736)  # 0x87F0 as int16
    return bits.view(torch.bfloat16)
