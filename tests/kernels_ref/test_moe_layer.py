"""The MoE layer: noaux_tc routing and the fp8 layer against the fp32 reference."""

import pytest
import torch

from kernels_ref import TOLERANCE, Router, calc_diff, moe_layer, moe_layer_fp8, route_noaux_tc
from kernels_ref.generators import generate_moe_layer, random_router
from kernels_ref.moe_layer import route_noaux_tc_torch


def test_router_gates_sum_to_the_scaling_factor_and_the_bias_only_picks():
    # T = tokens, E = experts, D = hidden
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(6, 32, generator=generator), torch.randn(16, 32, generator=generator) * 0.02
    bias = torch.zeros(16)
    bias[3] = 10.0  # expert 3 is chosen for every token, whatever its score
    router = Router(weight, bias, top_k=4, routed_scaling_factor=2.5)
    gates, ids = route_noaux_tc(x, router)
    assert ids.shape == gates.shape == (6, 4) and (ids == 3).any(dim=-1).all()
    assert torch.allclose(gates.sum(-1), torch.full((6,), 2.5))
    scores = torch.sigmoid(x @ weight.T)
    chosen = scores.gather(1, ids)
    assert torch.allclose(gates, 2.5 * chosen / chosen.sum(-1, keepdim=True))  # the bias never weighs


def test_the_packed_router_weight_sets_sixteen_experts_of_a_column_side_by_side():
    # the native router's GEMM reads [ceil(E/16), D, 16]: packed[b, c, l] = weight[16 b + l, c], zero past E
    weight = torch.randn(20, 9, generator=torch.Generator().manual_seed(0))
    packed = Router(weight, torch.zeros(20), top_k=2, routed_scaling_factor=1.0).packed_weight
    assert packed.shape == (2, 9, 16) and packed.is_contiguous()
    assert torch.equal(packed[1, 4, 3], weight[19, 4]) and torch.equal(packed[0, :, 5], weight[5])
    assert torch.equal(packed[1, :, 4:], torch.zeros(9, 12))


# Kimi K2's hidden and expert sizes (the 1e-3 bar is an expectation: see test_grouped_gemm), few experts
HIDDEN, INTERMEDIATE = 7168, 2048


def test_fp8_layer_matches_fp32_reference():
    inputs, reference = generate_moe_layer(tokens=24, hidden=HIDDEN, intermediate=INTERMEDIATE, experts=8, top_k=4)
    out = moe_layer_fp8(inputs.x, inputs.router, inputs.experts, inputs.shared, torch.float32)
    assert out.shape == reference.shape
    assert calc_diff(out, reference) < TOLERANCE["fp8_swiglu"]


def test_single_token_bf16_output():
    # one token per call; the bar on the mean of 8 calls (one token's error alone swings by +-10%)
    inputs, reference = generate_moe_layer(tokens=8, hidden=HIDDEN, intermediate=INTERMEDIATE, experts=4, top_k=2, seed=3)
    errors = []
    for t in range(8):
        out = moe_layer_fp8(inputs.x[t : t + 1], inputs.router, inputs.experts, inputs.shared)
        assert out.dtype == torch.bfloat16 and out.shape == (1, HIDDEN)
        errors.append(calc_diff(out, reference[t : t + 1]))
    assert sum(errors) / len(errors) < TOLERANCE["fp8_swiglu"] and max(errors) < 2 * TOLERANCE["fp8_swiglu"]


def test_fp8_layer_against_unrounded_weights():
    inputs, reference = generate_moe_layer(tokens=24, hidden=256, intermediate=128, experts=16, top_k=4, reference="unquantised")
    out = moe_layer_fp8(inputs.x, inputs.router, inputs.experts, inputs.shared, torch.float32)
    assert calc_diff(out, reference) < TOLERANCE["fp8_swiglu_with_weight_rounding"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_native_router_chooses_as_the_torch_router(native_glue, dtype, threads, monkeypatch):
    # the native router (native_cpu's glue) sums in another order: the same experts, gates within fp32 rounding.
    # Shapes: one token and a partial tile of 6; the experts split between threads (up to 64 tokens) or the token
    # tiles (above); experts not a multiple of the tile's 4; hidden not a multiple of 16; and one thread only.
    monkeypatch.setattr(moe_layer, "_router_tuned", lambda *shape: f"native:{threads}")
    generator = torch.Generator().manual_seed(1)
    for tokens, experts, hidden, top_k in [(1, 32, 7168, 8), (37, 32, 7168, 8), (70, 32, 7168, 8), (20, 7, 1000, 3),
                                           (130, 7, 300, 3), (5, 16, 256, 4), (9, 7, 100, 3)]:
        router = random_router(experts, hidden, top_k, generator)
        x = torch.randn(tokens, hidden, generator=generator).to(dtype)
        (gates, ids), (gates_torch, ids_torch) = route_noaux_tc(x, router), route_noaux_tc_torch(x, router)
        assert torch.equal(ids, ids_torch) and torch.allclose(gates, gates_torch, rtol=1e-5, atol=1e-6)


def test_the_router_is_tuned_between_torch_and_the_native_router_on_each_thread_count(native_glue, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    calls = moe_layer._router_tuning_calls(4, 8, 64, torch.bfloat16)
    assert sorted(calls) == ["native:1", "native:2", "torch"]
    (gates_1, ids_1), (gates_2, ids_2) = calls["native:1"](), calls["native:2"]()
    assert torch.equal(ids_1, ids_2) and torch.equal(gates_1, gates_2)  # the same sums, split differently
    monkeypatch.setattr(moe_layer.autotune, "choose", lambda shape_class, candidates, cold: "native:2")
    assert moe_layer.router_choice(4, 8, 64, torch.bfloat16) == "native"
