"""Grouped SwiGLU experts in fp8: contiguous and masked layouts, ragged and empty groups."""

import pytest
import torch

from kernels_ref import TOLERANCE, GemmPath, calc_diff, grouped_swiglu_fp8, masked_swiglu_fp8, native_cpu
from kernels_ref.generators import generate_grouped_swiglu

needs_native = pytest.mark.skipif(native_cpu.load() is None, reason="no AVX-512 BF16 CPU or no C compiler")
# E = experts, D = hidden, I = expert intermediate size; D and I off the 128 grid on purpose
HIDDEN, INTERMEDIATE = 320, 200


@pytest.mark.parametrize("path", [None, GemmPath.TILES, pytest.param(GemmPath.NATIVE_CPU, marks=needs_native)])
@pytest.mark.parametrize("counts", [[3, 0, 17, 1, 48, 0], [1], [0, 0, 2]])
def test_contiguous_layout_matches_fp32_reference(path, counts):
    inputs, reference = generate_grouped_swiglu(counts, HIDDEN, INTERMEDIATE, seed=len(counts))
    y = grouped_swiglu_fp8(inputs.x_q, inputs.x_scale, inputs.offsets, inputs.weights, torch.float32, path)
    assert y.shape == (sum(counts), HIDDEN)
    assert calc_diff(y, reference) < TOLERANCE["fp8_swiglu"]


def test_bf16_output():
    inputs, reference = generate_grouped_swiglu([5, 2], HIDDEN, INTERMEDIATE)
    y = grouped_swiglu_fp8(inputs.x_q, inputs.x_scale, inputs.offsets, inputs.weights)
    assert y.dtype == torch.bfloat16 and calc_diff(y, reference) < TOLERANCE["fp8_swiglu"]


def test_masked_layout_equals_contiguous_and_zeroes_the_padding():
    counts, max_m = [3, 0, 5, 1], 6
    inputs, reference = generate_grouped_swiglu(counts, HIDDEN, INTERMEDIATE, seed=7)
    contiguous = grouped_swiglu_fp8(inputs.x_q, inputs.x_scale, inputs.offsets, inputs.weights, torch.float32)
    # scatter the sorted rows into [E, max_m, D]
    x_q = torch.zeros(len(counts), max_m, HIDDEN, dtype=torch.uint8)
    x_scale = torch.ones(len(counts), max_m, inputs.x_scale.shape[1])
    bounds = inputs.offsets.tolist()
    for e, m in enumerate(counts):
        x_q[e, :m] = inputs.x_q.view(torch.uint8)[bounds[e] : bounds[e + 1]]
        x_scale[e, :m] = inputs.x_scale[bounds[e] : bounds[e + 1]]
    masked = masked_swiglu_fp8(
        x_q.view(torch.float8_e4m3fn), x_scale, torch.tensor(counts), inputs.weights, torch.float32
    )
    assert masked.shape == (len(counts), max_m, HIDDEN)
    for e, m in enumerate(counts):
        assert torch.equal(masked[e, :m], contiguous[bounds[e] : bounds[e + 1]])
        assert not masked[e, m:].any()
    assert calc_diff(contiguous, reference) < TOLERANCE["fp8_swiglu"]
