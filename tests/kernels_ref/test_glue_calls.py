"""Prepared glue calls (kernels_ref.glue_calls): bit for bit the eager kernels, at every ISA build, on buffers sized
once; e4m3 bit-identical to PyTorch's rounding and the combine within the fp32 bar of its fp32 reference."""

import time

import pytest
import torch

from kernels_ref import glue_calls, native_cpu
from kernels_ref.accuracy import TOLERANCE, calc_diff
from kernels_ref.dispatch import combine, dispatch, plan_dispatch
from kernels_ref.fp8 import quantize_activation_groups, quantize_activation_groups_torch
from kernels_ref.generators import random_router
from kernels_ref.glue_calls import prepare_combine, prepare_dispatch, prepare_quantize, prepare_router
from kernels_ref.moe_layer import route_noaux_tc, route_noaux_tc_torch

HIDDEN, EXPERTS, TOP_K = 7168, 384, 8


def _inputs(tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(tokens, HIDDEN, generator=g) * torch.rand(tokens, 1, generator=g) * 8).to(torch.bfloat16)
    topk_ids = torch.rand(tokens, EXPERTS, generator=g).topk(TOP_K, dim=-1).indices
    weights = torch.rand(tokens, TOP_K, generator=g)
    y = torch.randn(tokens * TOP_K, HIDDEN, generator=g).to(torch.bfloat16)
    return x, topk_ids, weights, y


def _same_fp8(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


@pytest.mark.parametrize("tokens", [1, 16, 130])
def test_prepared_quantize_is_the_eager_and_torch_rounding(native_glue, tokens):
    x, *_ = _inputs(tokens)
    run = prepare_quantize(x)
    q, scale = run()
    q_torch, scale_torch = quantize_activation_groups_torch(x)
    assert _same_fp8(q, q_torch) and torch.equal(scale, scale_torch)
    # the same buffers every call, refilled from the input as it is now
    x.copy_(_inputs(tokens, seed=1)[0])
    q2, scale2 = run()
    assert q2 is q and scale2 is scale
    q_eager, scale_eager = quantize_activation_groups(x)
    assert _same_fp8(q2, q_eager) and torch.equal(scale2, scale_eager) and not _same_fp8(q2, q_torch)


@pytest.mark.parametrize("tokens", [1, 16, 130])
def test_prepared_dispatch_and_combine_are_the_eager(native_glue, tokens):
    x, topk_ids, weights, y = _inputs(tokens)
    x_q, x_scale = quantize_activation_groups(x)
    q_rows, scale_rows, plan = prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS)()
    eager = plan_dispatch(topk_ids, EXPERTS)
    for field in ("token_of_row", "row_of_slot", "counts", "offsets"):
        assert torch.equal(getattr(plan, field), getattr(eager, field)), field
    assert _same_fp8(q_rows, dispatch(x_q, eager)) and torch.equal(scale_rows, dispatch(x_scale, eager))
    out = prepare_combine(y, plan, weights)()
    assert torch.equal(out, combine(y, eager, weights, torch.float32))
    reference = (y.float()[plan.row_of_slot] * weights[..., None]).sum(dim=1)  # fp32, [T, K, D] -> [T, D]
    assert calc_diff(out, reference) < TOLERANCE["fp32"] * 1e3  # fp32 sums in another order


@pytest.mark.parametrize("tokens", [1, 16, 130])
def test_prepared_router_is_the_eager(native_glue, tokens):
    x, *_ = _inputs(tokens)
    router = random_router(32, HIDDEN, TOP_K, torch.Generator().manual_seed(2))
    weights, ids = prepare_router(x, router)()
    eager_weights, eager_ids = route_noaux_tc(x, router)
    assert torch.equal(weights, eager_weights) and torch.equal(ids, eager_ids)
    torch_weights, torch_ids = route_noaux_tc_torch(x, router)
    assert calc_diff(weights, torch_weights) < 1e-3


@pytest.mark.parametrize("choice", ["1 thread", "2 threads"])
def test_either_thread_choice_gives_the_same_results(native_glue, choice, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chosen = []
    monkeypatch.setattr(glue_calls.autotune, "choose", lambda shape_class, calls, cold: chosen.append(cold) or choice)
    x, topk_ids, weights, y = _inputs(70)
    x_q, x_scale = quantize_activation_groups(x)
    plan = plan_dispatch(topk_ids, EXPERTS)
    router = random_router(32, HIDDEN, TOP_K, torch.Generator().manual_seed(2))
    monkeypatch.setattr(glue_calls, "router_choice", lambda *shape: "native")
    runs = [prepare_quantize(x), prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS), prepare_combine(y, plan, weights),
            prepare_router(x, router)]
    assert chosen == [True] * 4 and {run.threads for run in runs} == {int(choice[0])}  # timed on cold caches
    q, scale = runs[0]()
    assert _same_fp8(q, quantize_activation_groups(x)[0]) and torch.equal(scale, quantize_activation_groups(x)[1])
    q_rows, scale_rows, got_plan = runs[1]()
    assert _same_fp8(q_rows, dispatch(x_q, plan)) and torch.equal(scale_rows, dispatch(x_scale, plan))
    assert torch.equal(runs[2](), combine(y, plan, weights, torch.float32))
    gates, ids = runs[3]()
    torch_gates, torch_ids = route_noaux_tc_torch(x, router)
    assert torch.equal(ids, torch_ids) and calc_diff(gates, torch_gates) < 1e-6


def test_prepared_calls_time_their_kernels(native_glue):
    x, topk_ids, weights, y = _inputs(16)
    x_q, x_scale = quantize_activation_groups(x)
    plan = plan_dispatch(topk_ids, EXPERTS)
    router = random_router(32, HIDDEN, TOP_K, torch.Generator().manual_seed(2))
    for run in (prepare_quantize(x), prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS), prepare_combine(y, plan, weights),
                prepare_router(x, router)):
        if not hasattr(run, "kernel_seconds"):  # the router of this shape may be PyTorch's (router_choice)
            continue
        start = time.perf_counter()
        run()
        wall_s = time.perf_counter() - start
        assert 0 < run.kernel_seconds() <= wall_s


def test_an_expert_id_out_of_range_is_refused_by_the_prepared_dispatch(native_glue):
    x, topk_ids, *_ = _inputs(4)
    x_q, x_scale = quantize_activation_groups(x)
    run = prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS)
    topk_ids[2, 3] = EXPERTS  # the inputs are read where they were when prepared
    with pytest.raises(ValueError, match="out of range"):
        run()


def test_inputs_the_native_glue_does_not_take_run_eagerly():
    x, *_ = _inputs(3)
    strided = x.float().t().contiguous().t()  # not contiguous
    q, scale = prepare_quantize(strided)()
    q_torch, scale_torch = quantize_activation_groups_torch(strided)
    assert _same_fp8(q, q_torch) and torch.equal(scale, scale_torch)
    half = x.to(torch.float16)
    q, scale = prepare_quantize(half)()
    assert _same_fp8(q, quantize_activation_groups_torch(half)[0])


def test_without_the_native_library_prepared_calls_are_the_eager_ones(monkeypatch):
    monkeypatch.setattr(native_cpu, "library", lambda name: None)
    x, topk_ids, weights, y = _inputs(4)
    x_q, x_scale = quantize_activation_groups_torch(x)
    plan = plan_dispatch(topk_ids, EXPERTS)
    router = random_router(32, HIDDEN, TOP_K, torch.Generator().manual_seed(2))
    runs = (prepare_quantize(x), prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS), prepare_combine(y, plan, weights),
            prepare_router(x, router))
    assert not any(hasattr(run, "kernel_seconds") for run in runs)  # wall-timed by the harness
    q, scale = runs[0]()
    assert _same_fp8(q, x_q) and torch.equal(scale, x_scale)
    assert torch.equal(runs[2](), combine(y, plan, weights, torch.float32))
    gates, ids = runs[3]()
    assert torch.equal(ids, route_noaux_tc_torch(x, router)[1])
