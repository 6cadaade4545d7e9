"""Block-scaled fp8 e4m3 quantisation: layout of codes and scales, and the bit-move conversion."""

import pytest
import torch

from kernels_ref import (
    BLOCK,
    FP8_E4M3_MAX,
    TOLERANCE,
    calc_diff,
    dequantize_activation_groups,
    dequantize_weight_blocks,
    fp8_e4m3_to_bf16,
    quantize_activation_groups,
    quantize_weight_blocks,
)
from kernels_ref.fp8 import BF16_BITS_UNSCALE, quantize_activation_groups_torch


def all_finite_codes() -> torch.Tensor:
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    return codes[~torch.isnan(codes.float())]  # 254: every e4m3 value but the two NaNs


def test_bit_move_is_exact_for_every_code_including_subnormals():
    codes = all_finite_codes()
    moved = fp8_e4m3_to_bf16(codes).double() * BF16_BITS_UNSCALE
    assert torch.equal(moved, codes.double())
    out = torch.empty(codes.shape, dtype=torch.bfloat16)
    assert fp8_e4m3_to_bf16(codes, out=out).data_ptr() == out.data_ptr()
    assert torch.equal(out.double() * BF16_BITS_UNSCALE, codes.double())


@pytest.mark.parametrize("shape", [(256, 384), (300, 200), (1, 1), (3, 130, 257)])
def test_weight_blocks_layout_and_round_trip(shape):
    # N = output rows, K = input columns; a leading dim stacks experts
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.02
    q, scale = quantize_weight_blocks(w)
    *lead, n, k = shape
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (*lead, -(-n // BLOCK), -(-k // BLOCK))
    # each block's largest magnitude maps onto the largest e4m3 value
    assert q.float().abs().amax() == FP8_E4M3_MAX
    assert calc_diff(dequantize_weight_blocks(q, scale), w) < 5e-4


def test_weight_scale_is_per_128x128_block_with_ragged_edges():
    w = torch.zeros(200, 130)
    w[0, 0], w[199, 129], w[128, 0] = 4.48, -0.448, 44.8  # one value in three of the four blocks
    q, scale = quantize_weight_blocks(w)
    assert torch.allclose(scale, torch.tensor([[0.01, 1e-4 / FP8_E4M3_MAX], [0.1, 0.001]]))
    assert torch.allclose(dequantize_weight_blocks(q, scale), w)


@pytest.mark.parametrize("shape", [(1, 7168), (5, 300), (2, 3, 128)])
def test_activation_groups_layout_and_round_trip(shape):
    # T = tokens, K = channels; scales per token per 128 channels
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    q, scale = quantize_activation_groups(x)
    assert q.shape == x.shape and scale.shape == (*shape[:-1], -(-shape[-1] // BLOCK))
    assert torch.equal(q.float().abs().amax(dim=-1), torch.full(shape[:-1], FP8_E4M3_MAX))
    assert calc_diff(dequantize_activation_groups(q, scale), x) < TOLERANCE["fp8_gemm"] / 2


def test_all_zero_group_quantises_to_zero_with_a_finite_scale():
    q, scale = quantize_activation_groups(torch.zeros(2, 256))
    assert torch.equal(q.float(), torch.zeros(2, 256)) and torch.isfinite(scale).all() and (scale > 0).all()


# The native quantisation (native_cpu's glue) against quantize_activation_groups_torch, bit for bit:
# AVX-512 where the CPU has it, and the portable C the AVX2 and plain builds run.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_native_quantisation_is_bit_for_bit_torchs(native_glue, dtype):
    generator = torch.Generator().manual_seed(0)
    # magnitudes from 1e-8 to 1e3 across each row (subnormal e4m3 codes included), ragged last groups
    for shape in [(5, 300), (64, 1024), (3, 1), (2, 128), (1, 7168)]:
        x = (torch.randn(*shape, generator=generator) * torch.logspace(-8, 3, shape[-1])).to(dtype)
        x[0, : min(3, shape[1])] = 0
        (q, scale), (q_torch, scale_torch) = quantize_activation_groups(x), quantize_activation_groups_torch(x)
        assert torch.equal(q.view(torch.uint8), q_torch.view(torch.uint8)) and torch.equal(scale, scale_torch)
    # every rounding case: a fine grid of values against a group maximum of 448 (scale 1)
    grid = torch.linspace(-FP8_E4M3_MAX, FP8_E4M3_MAX, 128 * 2000)
    x = torch.cat([grid, grid * 1e-3]).reshape(-1, 128).clone()
    x[:, 0] = FP8_E4M3_MAX
    q, q_torch = quantize_activation_groups(x.to(dtype))[0], quantize_activation_groups_torch(x.to(dtype))[0]
    assert torch.equal(q.view(torch.uint8), q_torch.view(torch.uint8))
    # values a few fp32 ulps from the midpoints between e4m3 codes, where rounding twice (to float16, then to e4m3)
    # would differ from rounding once unless the first rounding is to odd (the AVX-512 kernel's)
    codes = torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    ties = (codes[:-1] + codes[1:]) / 2
    ulps = torch.tensor([-3, -2, -1, 0, 1, 2, 3], dtype=torch.float32) * 2.0**-23
    near = (ties[:, None] * (1 + ulps)).reshape(-1)
    near = torch.cat([near, -near])
    near = torch.cat([near, torch.ones(-near.numel() % 127)]).reshape(-1, 127)
    x = torch.cat([torch.full((near.shape[0], 1), FP8_E4M3_MAX), near], dim=1)
    q, q_torch = quantize_activation_groups(x.to(dtype))[0], quantize_activation_groups_torch(x.to(dtype))[0]
    assert torch.equal(q.view(torch.uint8), q_torch.view(torch.uint8))
