"""The prepared expert MLP (kernels_ref.expert_calls) returns grouped_swiglu_fp8's values bit for bit."""

import pytest
import torch

from kernels_ref import native_cpu
from kernels_ref.expert_calls import prepare_grouped_swiglu
from kernels_ref.fp8 import quantize_activation_groups
from kernels_ref.generators import offsets_from_counts, random_fp8_expert_weights
from kernels_ref.fp8_gemm import fp8_grouped_gemm
from kernels_ref.grouped_gemm import grouped_swiglu_fp8, swiglu_quantize

needs_native = pytest.mark.skipif(
    native_cpu.library("gemm_avx512") is None and native_cpu.library("gemm_amx") is None,
    reason="no AVX-512 BF16 or AMX CPU, or no C compiler")


def _inputs(counts, hidden=256, inter=128, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = random_fp8_expert_weights(len(counts), hidden, inter, generator, "cpu")
    x_q, x_scale = quantize_activation_groups(torch.randn(sum(counts), hidden, generator=generator))
    return x_q, x_scale, weights


@needs_native
@pytest.mark.parametrize("counts", [[1], [1, 0, 2, 1], [4, 4, 4, 4], [0, 3]])
def test_the_prepared_call_is_the_eager_path_bit_for_bit(tuning_file, counts):
    x_q, x_scale, weights = _inputs(counts)
    run = prepare_grouped_swiglu(x_q, x_scale, counts, weights)
    assert hasattr(run, "choices")  # the native calls, not the eager fallback
    up, down = (part.split("=")[1] for part in run.choices.split())

    def eager() -> torch.Tensor:
        offsets = offsets_from_counts(counts)
        gate_up = fp8_grouped_gemm(x_q, x_scale, offsets, weights.w13, weights.w13_scale, torch.float32, up)
        return fp8_grouped_gemm(*swiglu_quantize(gate_up), offsets, weights.w2, weights.w2_scale, torch.float32, down)

    first = run().clone()
    assert torch.equal(first, eager()) and torch.equal(run(), first)
    # the inputs are read where they were prepared: new values in place give the new result
    x_q.copy_(quantize_activation_groups(torch.randn(sum(counts), x_q.shape[1]))[0])
    assert torch.equal(run(), eager()) and not torch.equal(run(), first)


def test_where_no_native_kernel_runs_the_eager_path_is_returned(monkeypatch, tuning_file):
    monkeypatch.setenv(native_cpu.ISA_ENV, "avx2")
    x_q, x_scale, weights = _inputs([2, 1])
    run = prepare_grouped_swiglu(x_q, x_scale, [2, 1], weights)
    assert not hasattr(run, "choices")
    assert torch.equal(run(), grouped_swiglu_fp8(x_q, x_scale, [0, 2, 3], weights, torch.float32))


@needs_native
def test_scales_outside_the_native_range_take_the_eager_path(tuning_file):
    x_q, x_scale, weights = _inputs([2])
    x_scale.mul_(1e12)  # pre-scaled bf16 activations would overflow (fp32 holds the result)
    run = prepare_grouped_swiglu(x_q, x_scale, [2], weights)
    assert not hasattr(run, "choices")
    assert torch.equal(run(), grouped_swiglu_fp8(x_q, x_scale, [0, 2], weights, torch.float32))
