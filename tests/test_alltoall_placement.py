"""The all-to-all priced by placement: hits against the uniform formula and a Monte Carlo of node-limited
routing, a node-aligned placement cheaper than the same device loads scattered over nodes, and the step."""

import numpy as np
import pytest

from hwmodels.alltoall_placement import (PlacedRouting, cross_domain_copies_per_token, group_sets, layer_hits,
                                         placed_hits)
from hwmodels.catalog import load_model, load_unit
from hwmodels.collectives import destination_hits
from hwmodels.errors import InputError
from hwmodels.expert_load import ExpertLoad
from hwmodels.hardware import make_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.step import StepContext


def _routing(rows: np.ndarray, num_experts: int, slots_per_device: int, share=None) -> PlacedRouting:
    rows = np.atleast_2d(rows)
    share = np.full((len(rows), num_experts), 1.0 / num_experts) if share is None else np.atleast_2d(share)
    return PlacedRouting(share, rows, slots_per_device)


def _scattered(num_experts: int, num_devices: int, domains: int) -> np.ndarray:
    """Contiguous placement with its devices dealt round-robin over the domains: the same device loads,
    each group spread over every domain."""
    per = num_experts // num_devices
    blocks = np.arange(num_experts).reshape(num_devices, per)
    order = np.arange(num_devices).reshape(domains, -1).T.ravel()  # device i of the contiguous layout -> slot
    return blocks[order].ravel()


def test_uniform_routing_matches_the_closed_form():
    # 16 experts on 8 devices of 2 slots, 2 domains of 4: uniform shares make both formulas exact
    routing = _routing(np.arange(16), 16, 2)
    domains = np.arange(8) // 4
    hits = placed_hits(routing, domains, top_k=4)
    device_hit, domain_hit = destination_hits(np.full(8, 1 / 8), domains, 4, 16)
    assert hits.device_hit[0] == pytest.approx(device_hit)
    assert hits.domain_hit[0] == pytest.approx(domain_hit)
    assert hits.share[0] == pytest.approx(np.full(8, 1 / 8))


def test_group_sets_uniform_and_weighted():
    member, prob = group_sets(np.full(4, 0.25), 2)
    assert member.shape == (6, 4) and member.sum(axis=1).tolist() == [2] * 6 and prob == pytest.approx(np.full(6, 1 / 6))
    member, prob = group_sets(np.array([0.4, 0.4, 0.1, 0.1]), 2)
    # P(set) proportional to the product of its groups' shares: {0, 1} weighs 0.16 of 0.16 + 4 x 0.04 + 0.01
    assert prob[0] == pytest.approx(0.16 / 0.33)
    with pytest.raises(InputError):
        group_sets(np.full(40, 1 / 40), 20)  # C(40, 20) sets are past what is enumerated


@pytest.mark.parametrize("aligned", [True, False])
def test_node_limited_hits_match_a_monte_carlo(aligned):
    # 32 experts in 4 groups of 8, 2 groups per token, top-4, uniform shares; 16 devices of 2 slots in 4 domains
    num_experts, devices, top_k = 32, 16, 4
    row = np.arange(num_experts) if aligned else _scattered(num_experts, devices, 4)
    domains = np.arange(devices) // 4
    hits = placed_hits(_routing(row, num_experts, 2), domains, top_k, num_groups=4, groups_per_token=2)
    rng = np.random.default_rng(0)
    device_of_expert = np.empty(num_experts, dtype=int)
    device_of_expert[row] = np.arange(num_experts) // 2
    tokens = 20_000
    reached_devices = reached_domains = 0
    for _ in range(tokens):
        groups = rng.choice(4, 2, replace=False)
        experts = rng.choice(np.concatenate([np.arange(8) + 8 * g for g in groups]), top_k, replace=False)
        reached_devices += len(set(device_of_expert[experts]))
        reached_domains += len(set(domains[device_of_expert[experts]]))
    assert hits.device_hit[0].sum() == pytest.approx(reached_devices / tokens, rel=0.01)
    assert hits.domain_hit[0].sum() == pytest.approx(reached_domains / tokens, rel=0.01)


def test_node_aligned_placement_sends_fewer_copies_across_nodes():
    # DeepSeek-V3's routing (8 groups, 4 per token, top-8) on 64 devices in 8 nodes: the same device loads,
    # groups kept in one node each vs dealt over every node
    domains = np.arange(64) // 8
    aligned = placed_hits(_routing(np.arange(256), 256, 4), domains, 8, 8, 4)
    scattered = placed_hits(_routing(_scattered(256, 64, 8), 256, 4), domains, 8, 8, 4)
    assert aligned.share == pytest.approx(scattered.share)
    normal_aligned = cross_domain_copies_per_token(aligned, "normal", 8)[0]
    normal_scattered = cross_domain_copies_per_token(scattered, "normal", 8)[0]
    # a token reaches at most its 4 groups' nodes when aligned, up to 8 when scattered
    assert normal_aligned < 4 * 7 / 8 < normal_scattered
    # decode's low-latency kernels send every pair: with sources spread evenly no placement changes the count
    low = [cross_domain_copies_per_token(h, "low_latency", 8)[0] for h in (aligned, scattered)]
    assert low == pytest.approx([8 * 7 / 8] * 2)


def test_step_time_shows_the_placement():
    arch = load_model("deepseek-v3")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(load_unit("hgx-h800"), units=8)
    layout = Layout(1, 64)
    layers = len(arch.moe_layers)

    def step(row):
        routing = _routing(np.broadcast_to(row, (layers, 256)), 256, 4)
        load = ExpertLoad(np.full((layers, 64), 1 / 64), "uniform, placed", routing)
        return StepContext(arch, plan, cluster, layout, load).step("prefill", 4096, 4096)

    aligned, scattered = step(np.arange(256)), step(_scattered(256, 64, 8))
    assert aligned.breakdown_s["expert_gemm"] == scattered.breakdown_s["expert_gemm"]  # the same device loads
    assert aligned.breakdown_s["dispatch"] < scattered.breakdown_s["dispatch"]
    assert aligned.breakdown_s["combine"] < scattered.breakdown_s["combine"]
    assert aligned.time_s < scattered.time_s


def test_placement_must_match_the_group():
    arch = load_model("deepseek-v3")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(load_unit("hgx-h800"), units=8)
    layers = len(arch.moe_layers)
    routing = _routing(np.broadcast_to(np.arange(256), (layers, 256)), 256, 8)  # 32 devices, not 64
    load = ExpertLoad(np.full((layers, 64), 1 / 64), "wrong group", routing)
    with pytest.raises(ValueError, match="EP64"):
        StepContext(arch, plan, cluster, Layout(1, 64), load).step("prefill", 4096, 4096)
    with pytest.raises(InputError):
        PlacedRouting(np.full((2, 4), 0.25), np.array([[0, 1, 2, 9]]), 2)  # one phy2log row for two layers


def test_hot_expert_share_moves_the_hits():
    # one expert with half the pairs: its device is reached by most tokens, the others less than uniform
    share = np.full(8, 0.5 / 7)
    share[0] = 0.5
    device_share, device_hit, _ = layer_hits(share, np.eye(8), np.arange(8) // 4, top_k=2)
    assert device_share == pytest.approx(share)
    uniform = layer_hits(np.full(8, 1 / 8), np.eye(8), np.arange(8) // 4, top_k=2)[1]
    assert device_hit[0] > uniform[0] and (device_hit[1:] < uniform[1:]).all()
