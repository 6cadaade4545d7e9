"""The prepared expert MLP and MoE layer (kernels_ref.expert_calls) return the eager kernels' values."""

import pytest
import torch

from kernels_ref import native_cpu
from kernels_ref.accuracy import calc_diff
from kernels_ref.expert_calls import prepare_grouped_swiglu, prepare_moe_layer
from kernels_ref.fp8 import quantize_activation_groups
from kernels_ref.generators import offsets_from_counts, random_fp8_expert_weights, random_router
from kernels_ref.fp8_gemm import fp8_grouped_gemm
from kernels_ref.grouped_gemm import grouped_swiglu_fp8, swiglu_quantize
from kernels_ref.moe_layer import moe_layer_fp8

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


def _layer(tokens, hidden=256, inter=128, experts=8, top_k=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    router = random_router(experts, hidden, top_k, generator)
    routed = random_fp8_expert_weights(experts, hidden, inter, generator, "cpu")
    shared = random_fp8_expert_weights(1, hidden, inter, generator, "cpu")
    return torch.randn(tokens, hidden, generator=generator).to(torch.bfloat16), router, routed, shared


@pytest.mark.parametrize("tokens", [1, 5, 64])
def test_the_prepared_layer_is_the_eager_layer(tuning_file, tokens):
    x, router, routed, shared = _layer(tokens)
    run = prepare_moe_layer(x, router, routed, shared)
    first = run().clone()
    assert first.dtype == torch.bfloat16 and torch.equal(run(), first)
    # one GEMM choice for every expert where the eager layer tunes each: equal far inside the fp8 tolerance
    assert calc_diff(first, moe_layer_fp8(x, router, routed, shared)) < 1e-4
    # the routing is read when called: new tokens in place route anew
    x.copy_(torch.randn(x.shape, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16))
    assert calc_diff(run(), moe_layer_fp8(x, router, routed, shared)) < 1e-4


def test_a_layer_whose_experts_have_no_native_kernel_runs_them_eagerly_into_the_same_buffers(monkeypatch, tuning_file):
    monkeypatch.setenv(native_cpu.ISA_ENV, "avx2")  # the glue builds, the fp8 GEMMs take the tile path
    x, router, routed, shared = _layer(7)
    run = prepare_moe_layer(x, router, routed, shared)
    assert run.choices == "eager"
    assert torch.equal(run(), moe_layer_fp8(x, router, routed, shared))
    x.copy_(torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16))
    assert torch.equal(run(), moe_layer_fp8(x, router, routed, shared))


def test_a_layer_without_any_native_kernel_routes_anew_on_every_call(monkeypatch, tuning_file):
    # no native library at all: every part eager, its fresh outputs (the dispatch plan's offsets too) copied in place
    monkeypatch.setattr(native_cpu, "library", lambda name: None)
    x, router, routed, shared = _layer(6)
    run = prepare_moe_layer(x, router, routed, shared)
    assert torch.equal(run(), moe_layer_fp8(x, router, routed, shared))
    x.copy_(torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16))
    assert torch.equal(run(), moe_layer_fp8(x, router, routed, shared))
