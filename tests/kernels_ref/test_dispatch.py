"""Token dispatch and combine within a device, against loops over tokens and experts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels_ref import combine, dispatch, native_cpu, plan_dispatch, quantize_activation_groups


def random_topk(tokens: int, experts: int, top_k: int, seed: int) -> torch.Tensor:
    scores = torch.rand(tokens, experts, generator=torch.Generator().manual_seed(seed))
    return scores.topk(top_k, dim=-1).indices  # distinct experts per token, as a router picks


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 40), experts=st.integers(1, 12), top_k=st.integers(1, 4), seed=st.integers(0, 99))
def test_plan_groups_by_expert_in_token_order_and_inverts(tokens, experts, top_k, seed):
    # T = tokens, K = top-k, E = experts
    top_k = min(top_k, experts)
    topk_ids = random_topk(tokens, experts, top_k, seed)
    plan = plan_dispatch(topk_ids, experts)
    expected_rows = [(t, e) for e in range(experts) for t in range(tokens) if e in topk_ids[t].tolist()]
    assert plan.token_of_row.tolist() == [t for t, _ in expected_rows]
    assert plan.counts.tolist() == [sum(1 for _, e in expected_rows if e == x) for x in range(experts)]
    assert plan.offsets.tolist() == [0, *torch.cumsum(plan.counts, 0).tolist()]
    for t in range(tokens):
        for k in range(top_k):
            row, expert = int(plan.row_of_slot[t, k]), int(topk_ids[t, k])
            assert int(plan.token_of_row[row]) == t and plan.offsets[expert] <= row < plan.offsets[expert + 1]


@settings(max_examples=20, deadline=None)
@given(tokens=st.integers(1, 30), seed=st.integers(0, 99))
def test_tokens_in_equal_tokens_out(tokens, seed):
    # identity experts and gates summing to one give back every token
    topk_ids = random_topk(tokens, 8, 3, seed)
    plan = plan_dispatch(topk_ids, 8)
    x = torch.randn(tokens, 16, generator=torch.Generator().manual_seed(seed))
    gates = torch.softmax(torch.randn(tokens, 3), dim=-1)
    assert torch.allclose(combine(dispatch(x, plan), plan, gates), x, atol=1e-6)


def test_combine_sums_expert_outputs_times_gates():
    tokens, experts, top_k, hidden = 300, 10, 3, 24  # more tokens than one combine chunk
    topk_ids = random_topk(tokens, experts, top_k, seed=1)
    plan = plan_dispatch(topk_ids, experts)
    y = torch.randn(tokens * top_k, hidden)
    gates = torch.rand(tokens, top_k)
    expected = torch.zeros(tokens, hidden)
    for row in range(tokens * top_k):
        t = int(plan.token_of_row[row])
        k = (plan.row_of_slot[t] == row).nonzero().item()
        expected[t] += gates[t, k] * y[row]
    assert torch.allclose(combine(y, plan, gates), expected, atol=1e-5)
    assert combine(y.bfloat16(), plan, gates).dtype == torch.bfloat16


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tokens, hidden", [(1, 7168), (3, 3000), (5, 1100), (40, 50)])
def test_combine_over_column_parts_is_the_sum(monkeypatch, threads, tokens, hidden):
    # one token, several 1024-column parts of a token, a last part with a d % 64 tail, and d < 64 (no part):
    # on one thread and split between two; the same sums either way
    monkeypatch.setattr(native_cpu, "glue_threads", lambda work_bytes: threads)
    top_k = 4
    topk_ids = random_topk(tokens, 8, top_k, seed=2)
    plan = plan_dispatch(topk_ids, 8)
    generator = torch.Generator().manual_seed(3)
    y = torch.randn(tokens * top_k, hidden, generator=generator).to(torch.bfloat16)
    gates = torch.rand(tokens, top_k, generator=generator)
    expected = (y.float()[plan.row_of_slot] * gates[..., None]).sum(dim=1)  # [T, K, D] -> [T, D]
    assert torch.allclose(combine(y, plan, gates, torch.float32), expected, rtol=1e-5, atol=1e-5)


def test_dispatch_moves_fp8_codes_and_scales_with_empty_experts():
    topk_ids = torch.tensor([[0, 3], [3, 0], [3, 5]])  # experts 1, 2, 4 empty
    plan = plan_dispatch(topk_ids, num_experts=6)
    assert plan.counts.tolist() == [2, 0, 0, 3, 0, 1]
    x_q, x_scale = quantize_activation_groups(torch.randn(3, 256))
    moved = dispatch(x_q, plan)
    assert moved.dtype == torch.float8_e4m3fn
    assert torch.equal(moved.view(torch.uint8), x_q.view(torch.uint8)[torch.tensor([0, 1, 0, 1, 2, 2])])
    assert torch.equal(dispatch(x_scale, plan), x_scale[torch.tensor([0, 1, 0, 1, 2, 2])])


@pytest.mark.parametrize("isa", ["avx2", "none"])
def test_the_portable_builds_dispatch_and_combine_as_the_default_one(monkeypatch, isa):
    # T = tokens, K = top-k, E = experts, D = hidden
    topk_ids = random_topk(50, 12, 4, seed=5)
    x_q, x_scale = quantize_activation_groups(torch.randn(50, 300, generator=torch.Generator().manual_seed(5)))
    y = torch.randn(200, 64, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    gates = torch.rand(50, 4, generator=torch.Generator().manual_seed(7))

    def run():
        plan = plan_dispatch(topk_ids, 12)
        return plan, dispatch(x_q, plan), dispatch(x_scale, plan), combine(y, plan, gates, torch.float32)

    expected = run()
    monkeypatch.setenv(native_cpu.ISA_ENV, isa)
    if native_cpu.library("glue") is None:
        pytest.skip("no C compiler")
    got = run()
    for field in ("token_of_row", "row_of_slot", "counts", "offsets"):
        assert torch.equal(getattr(got[0], field), getattr(expected[0], field))
    assert torch.equal(got[1].view(torch.uint8), expected[1].view(torch.uint8)) and torch.equal(got[2], expected[2])
    assert torch.allclose(got[3], expected[3], rtol=1e-6, atol=1e-6)


def test_an_expert_id_out_of_range_is_refused():
    with pytest.raises(AssertionError):
        plan_dispatch(torch.tensor([[0, 5]]), num_experts=4)
