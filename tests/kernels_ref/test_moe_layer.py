"""The MoE layer: noaux_tc routing and the fp8 layer against the fp32 reference."""

import torch

from kernels_ref import TOLERANCE, Router, calc_diff, moe_layer_fp8, route_noaux_tc
from kernels_ref.generators import generate_moe_layer


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


def test_fp8_layer_matches_fp32_reference():
    inputs, reference = generate_moe_layer(tokens=24, hidden=256, intermediate=128, experts=16, top_k=4)
    out = moe_layer_fp8(inputs.x, inputs.router, inputs.experts, inputs.shared, torch.float32)
    assert out.shape == reference.shape
    assert calc_diff(out, reference) < TOLERANCE["fp8_swiglu"]


def test_single_token_bf16_output():
    inputs, reference = generate_moe_layer(tokens=1, hidden=128, intermediate=256, experts=8, top_k=2, seed=3)
    out = moe_layer_fp8(inputs.x, inputs.router, inputs.experts, inputs.shared)
    assert out.dtype == torch.bfloat16 and calc_diff(out, reference) < TOLERANCE["fp8_swiglu"]
