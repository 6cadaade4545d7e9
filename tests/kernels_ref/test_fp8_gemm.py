"""Block-scaled fp8 (grouped) GEMM: every implementation against the fp32 reference computed
before quantising, ragged shapes, empty experts, a single token; the measured choice between them."""

import json

import pytest
import torch

from kernels_ref import (
    TOLERANCE,
    GemmPath,
    calc_diff,
    choose_gemm_path,
    fp8_block_gemm,
    fp8_grouped_gemm,
    gemm_choice,
    native_cpu,
)
from kernels_ref.fp8 import dequantize_weight_blocks, quantize_activation_groups
from kernels_ref.fp8_gemm import candidates, dequantize_to_bf16, fits_exponent_range
from kernels_ref.generators import (
    generate_fp8_gemm,
    offsets_from_counts,
    random_expert_weights,
)
from kernels_ref.grouped_gemm import quantize_expert_weights

needs_avx512 = pytest.mark.skipif(native_cpu.library("gemm_avx512") is None, reason="no AVX-512 BF16 CPU or no C compiler")
needs_amx = pytest.mark.skipif(native_cpu.library("gemm_amx") is None, reason="no AMX BF16 CPU or no C compiler")
# Every implementation, the AVX-512 kernel's rows per tile (4 by default, and 1), and the AMX kernel's tunables: the weight scale in the tokens, the weights
# or the sums, and chunks of 1 or 3 token blocks (odd, so a chunk ends on a lone block).
NATIVE = [pytest.param(GemmPath.NATIVE_CPU, marks=needs_avx512), pytest.param("native_cpu:r1", marks=needs_avx512)] + [
    pytest.param(f"native_amx:{scale}:c{chunk}", marks=needs_amx) for scale in ("tokens", "weights", "sums") for chunk in (1, 3)
]
PATHS = [GemmPath.TILES, *NATIVE]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", [(1, 256, 512), (7, 300, 200), (40, 129, 257), (3, 1, 1), (70, 160, 384)])
def test_fp8_gemm_matches_fp32_reference(path, m, n, k):
    # M = tokens, N = output features, K = input features
    inputs, reference = generate_fp8_gemm(m, n, k, seed=m + n + k)
    y = fp8_block_gemm(inputs.x_q, inputs.x_scale, inputs.w_q, inputs.w_scale, torch.float32, path)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert calc_diff(y, reference) < TOLERANCE["fp8_gemm"]


@pytest.mark.parametrize("path", NATIVE)
def test_native_and_tile_paths_agree_far_inside_the_fp8_tolerance(path):
    inputs, _ = generate_fp8_gemm(37, 384, 640, seed=3)
    args = (inputs.x_q, inputs.x_scale, inputs.w_q, inputs.w_scale, torch.float32)
    assert calc_diff(fp8_block_gemm(*args, path), fp8_block_gemm(*args, GemmPath.TILES)) < 1e-4


@pytest.mark.parametrize("path", [None, *PATHS])
def test_grouped_gemm_with_ragged_and_empty_experts(path):
    # E = experts, T = token rows sorted by expert, D = hidden, N = output features
    counts, hidden, n = [3, 0, 17, 1, 0, 64], 256, 384
    generator = torch.Generator().manual_seed(0)
    w = quantize_expert_weights(random_expert_weights(len(counts), hidden, n // 2, generator))
    x = torch.randn(sum(counts), hidden, generator=generator)
    x_q, x_scale = quantize_activation_groups(x)
    offsets = offsets_from_counts(counts)
    y = fp8_grouped_gemm(x_q, x_scale, offsets, w.w13, w.w13_scale, torch.bfloat16, path)
    assert y.shape == (sum(counts), n) and y.dtype == torch.bfloat16
    bounds = offsets.tolist()
    for e in range(len(counts)):
        rows = slice(bounds[e], bounds[e + 1])
        if counts[e]:
            reference = x[rows] @ dequantize_weight_blocks(w.w13[e], w.w13_scale[e]).T
            assert calc_diff(y[rows], reference) < TOLERANCE["fp8_gemm"]


@pytest.mark.parametrize("path", NATIVE)
def test_native_kernels_take_groups_larger_than_their_token_chunks(path):
    # the AVX-512 kernel pre-scales at most 256 tokens at a time, the AMX kernel 16 per block
    counts, hidden, n = [300, 5, 33], 256, 256
    generator = torch.Generator().manual_seed(2)
    w = quantize_expert_weights(random_expert_weights(len(counts), hidden, n // 2, generator))
    x_q, x_scale = quantize_activation_groups(torch.randn(sum(counts), hidden, generator=generator))
    args = (x_q, x_scale, offsets_from_counts(counts), w.w13, w.w13_scale, torch.float32)
    assert calc_diff(fp8_grouped_gemm(*args, path), fp8_grouped_gemm(*args, GemmPath.TILES)) < 1e-4


def test_the_choice_is_a_measured_candidate_and_is_cached(tuning_file):
    for tokens in (1, 16, 200):
        choice = gemm_choice(tokens, 256, 512, "cpu")
        assert choice in candidates(tokens)
        assert choose_gemm_path(tokens, 256, 512, "cpu") is GemmPath(choice.split(":")[0])
    assert "tiles" in candidates(128) and gemm_choice(1, 256, 512, "meta") == "tiles"
    if len(candidates(1)) > 1:  # timed, so the file names the class with every candidate's seconds
        recorded = json.loads(tuning_file.read_text())["choices"]["fp8_gemm:256x512:m1"]
        assert recorded["choice"] == gemm_choice(1, 256, 512, "cpu") and set(recorded["seconds"]) == set(candidates(1))


def test_without_avx512_only_the_tile_path_runs(monkeypatch):
    # how a CI machine without AVX-512 runs: the glue still builds (for AVX2 or plain C)
    monkeypatch.setenv(native_cpu.ISA_ENV, "avx2")
    assert native_cpu.library("gemm_avx512") is None and native_cpu.library("gemm_amx") is None
    assert candidates(1) == ["tiles"] and gemm_choice(1, 256, 512, "cpu") == "tiles"
    inputs, reference = generate_fp8_gemm(5, 256, 384, seed=1)
    y = fp8_block_gemm(inputs.x_q, inputs.x_scale, inputs.w_q, inputs.w_scale, torch.float32)
    assert calc_diff(y, reference) < TOLERANCE["fp8_gemm"]


@pytest.mark.parametrize("path", PATHS)
def test_scales_beyond_the_fast_exponent_range_stay_correct(path):
    # Activations near 1e8 and weights near 1e2: the bf16 scale factor of the tile path and the
    # pre-scaled activations of the native kernel would overflow, so both take a safe route.
    inputs, reference = generate_fp8_gemm(2, 128, 256, seed=5)
    x_scale, w_scale = inputs.x_scale * 1e8, inputs.w_scale * 1e4
    assert not fits_exponent_range(float(x_scale.max()), float(w_scale.max()))
    y = fp8_block_gemm(inputs.x_q, x_scale, inputs.w_q, w_scale, torch.float32, path)
    assert torch.isfinite(y).all()
    assert calc_diff(y, reference * 1e12) < TOLERANCE["fp8_gemm"]


def test_tile_dequantisation_pads_ragged_blocks_with_zeros():
    inputs, _ = generate_fp8_gemm(1, 130, 200)
    tile = dequantize_to_bf16(inputs.w_q, inputs.w_scale, block_rows=128)
    assert tile.shape == (256, 256) and tile.dtype == torch.bfloat16
    assert not tile[130:].any() and not tile[:, 200:].any()
    exact = dequantize_weight_blocks(inputs.w_q, inputs.w_scale)
    assert calc_diff(tile[:130, :200], exact) < 1e-5
