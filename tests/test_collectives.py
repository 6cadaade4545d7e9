"""Alpha-beta collectives at the stored fits: routing dedup, domain containment, skew, ranks per device, ring
formulas. The reproduction of the published DeepEP tables and the fits are in test_deepep_fit.py."""

import dataclasses
import math
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import collectives
from hwmodels.calibrate.operator_costs import fitted_costs
from hwmodels.catalog import load_device, load_unit
from hwmodels.collectives import HOP_LATENCY_S, RING_BASE_LATENCY_S, destination_hits, ep_group_domains
from hwmodels.errors import InputError
from hwmodels.hardware import make_cluster

H, T_PREFILL, K, E = 7168, 4096, 8, 256
FP8_TOKEN_BYTES = H + H / 128 * 4  # fp8 + one fp32 scale per 128 channels
COSTS = fitted_costs()
DEEPEP_FIT, DEEPEP_ASCEND_FIT = COSTS.deepep, COSTS.deepep_ascend


def _fit(cluster_or_device):
    return COSTS.collective_fit(getattr(cluster_or_device, "device", cluster_or_device))


def dispatch_cost(cluster, *args, **kwargs):
    return collectives.dispatch_cost(cluster, *args, fit=_fit(cluster), **kwargs)


def combine_cost(cluster, *args, **kwargs):
    return collectives.combine_cost(cluster, *args, fit=_fit(cluster), **kwargs)


def allreduce_cost(cluster, *args, **kwargs):
    return collectives.allreduce_cost(cluster, *args, fit=_fit(cluster), **kwargs)


def allgather_cost(cluster, *args, **kwargs):
    return collectives.allgather_cost(cluster, *args, fit=_fit(cluster), **kwargs)


def link_classes(device):
    return collectives.link_classes(device, _fit(device))


def _cluster(unit: str, devices: int):
    return make_cluster(load_unit(unit), devices=devices)


def test_a_910c_runs_its_two_dies_as_ranks():
    """A device of two ranks costs what one rank costs with half its tokens in a group of twice the
    ranks, over half the links: so doubling ranks_per_device at equal per-rank work keeps the time."""
    cluster = _cluster("cloudmatrix384", 64)
    assert cluster.device.ranks_per_device == 2
    as_ranks = make_cluster(load_unit("cloudmatrix384"), devices=128)
    one_rank = dataclasses.replace(as_ranks.device, ranks_per_device=1, scaleup_bytes_per_s=as_ranks.device.scaleup_bytes_per_s / 2)
    single = dataclasses.replace(as_ranks, unit=dataclasses.replace(as_ranks.unit, device=one_rank))
    for mode in ("normal", "low_latency"):
        two = dispatch_cost(cluster, 64, 2 * 4096, H, K, E, 1.0, mode=mode)
        one = dispatch_cost(single, 128, 4096, H, K, E, 1.0, mode=mode)
        assert two.time_s == pytest.approx(one.time_s, rel=1e-9)
        assert two.bytes_by_class["scaleup"] == pytest.approx(2 * one.bytes_by_class["scaleup"])


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16, 32, 64, 256])
def test_uniform_distinct_destinations_is_the_hypergeometric_formula(groups):
    dom = np.arange(groups)
    device_hit, domain_hit = destination_hits(np.full(groups, 1 / groups), dom, K, E)
    expected = groups * (1 - comb(E - E // groups, K) / comb(E, K))
    assert device_hit.sum() == pytest.approx(expected, rel=1e-12)
    assert domain_hit.sum() == pytest.approx(expected, rel=1e-12)


def _deepep_test_routing(ep: int, tokens: int, rng) -> tuple[float, float]:
    """Monte Carlo of DeepEP tests/test_internode.py routing: |N(0,1)| + 1 scores, top-min(nodes, 4)
    node groups by their best expert, then top-8 of the experts in those groups. Returns the mean
    distinct devices and nodes per token."""
    nodes = max(1, ep // 8)
    scores = np.abs(rng.standard_normal((tokens, E))) + 1
    best = scores.reshape(tokens, nodes, -1).max(-1)
    chosen = np.argsort(-best, axis=1)[:, : min(nodes, 4)]
    keep = np.zeros((tokens, nodes), bool)
    np.put_along_axis(keep, chosen, True, 1)
    masked = np.where(np.repeat(keep, E // nodes, axis=1), scores, -np.inf)
    topk = np.argpartition(-masked, K, axis=1)[:, :K]
    device = topk // (E // ep)
    distinct = lambda ids: np.mean([len(set(row)) for row in ids])  # noqa: E731
    return distinct(device), distinct(device // 8)


@pytest.mark.parametrize("ep", [8, 16, 32, 64])
def test_distinct_destinations_match_deepep_routing(ep):
    sim_devices, sim_nodes = _deepep_test_routing(ep, 2048, np.random.default_rng(ep))
    dom = np.arange(ep) // 8
    device_hit, domain_hit = destination_hits(np.full(ep, 1 / ep), dom, K, E, min(ep // 8, 4))
    assert device_hit.sum() == pytest.approx(sim_devices, rel=0.03)
    assert domain_hit.sum() == pytest.approx(sim_nodes, rel=0.03)


@pytest.mark.parametrize(
    "unit, devices, ep",
    [("hgx-h100", 16, 8), ("gb200-nvl72", 48, 48), ("gb200-nvl72", 144, 72), ("cloudmatrix384", 384, 384)],
)
@pytest.mark.parametrize("mode", ["normal", "low_latency"])
def test_ep_group_inside_a_domain_sends_nothing_over_nics(unit, devices, ep, mode):
    cluster = _cluster(unit, devices)
    cost = dispatch_cost(cluster, ep, 256, H, K, E, scale_bytes_per_token=H / 128 * 4, max_domains_per_token=4, mode=mode)
    assert cost.bytes_by_class["scaleout"] == 0.0
    assert cost.bottleneck in {"scaleup", "copy"}  # copy: token handling on the device, as DeepEP-Ascend
    assert (ep_group_domains(cluster, ep) == 0).all()


def test_ep_group_across_racks_uses_the_nics():
    cost = dispatch_cost(_cluster("gb200-nvl72", 144), 144, 256, H, K, E, max_domains_per_token=4)
    assert cost.bytes_by_class["scaleout"] > 0


def test_normal_mode_sends_once_per_remote_domain_not_per_expert():
    """Uniform routing: scale-out bytes per device = T x b x E[distinct remote domains]."""
    cluster = _cluster("hgx-h800", 64)
    for limit in (2, 4):
        cost = dispatch_cost(cluster, 64, T_PREFILL, H, K, E, max_domains_per_token=limit)
        _, domain_hit = destination_hits(np.full(64, 1 / 64), np.arange(64) // 8, K, E, limit)
        remote_domains = domain_hit.sum() - domain_hit[0]
        assert remote_domains == pytest.approx(limit * 7 / 8)  # each of the `limit` domains is hit; 1/8 is its own
        assert cost.bytes_by_class["scaleout"] == pytest.approx(T_PREFILL * H * remote_domains)
    ll = dispatch_cost(cluster, 64, T_PREFILL, H, K, E, mode="low_latency")  # per (token, expert) pair, no dedup
    assert ll.bytes_by_class["scaleout"] == pytest.approx(T_PREFILL * K * H * 56 / 64)


def test_combine_is_dispatch_in_bf16():
    cluster = _cluster("hgx-h800", 32)
    d = dispatch_cost(cluster, 32, T_PREFILL, H, K, E, max_domains_per_token=4)
    c = combine_cost(cluster, 32, T_PREFILL, H, K, E, max_domains_per_token=4)
    for cls in ("scaleup", "scaleout"):
        assert c.bytes_by_class[cls] == pytest.approx(2 * d.bytes_by_class[cls])
    assert (c.name, d.name) == ("combine", "dispatch")


def test_explicit_uniform_probability_equals_the_cached_default():
    cluster = _cluster("hgx-h800", 32)
    for mode in ("normal", "low_latency"):
        a = dispatch_cost(cluster, 32, 1000, H, K, E, max_domains_per_token=4, mode=mode)
        b = dispatch_cost(cluster, 32, 1000, H, K, E, max_domains_per_token=4, mode=mode, dest_probability=np.ones(32))
        assert a.time_s == pytest.approx(b.time_s)
        assert a.bytes_by_class == pytest.approx(b.bytes_by_class)


def test_a_hot_device_slows_the_collective():
    cluster = _cluster("hgx-h800", 16)
    p = np.ones(16)
    p[3] = 4.0  # device 3 holds the hot experts
    for mode in ("normal", "low_latency"):
        uniform = dispatch_cost(cluster, 16, 1000, H, K, E, mode=mode)
        skewed = dispatch_cost(cluster, 16, 1000, H, K, E, mode=mode, dest_probability=p)
        assert skewed.time_s > uniform.time_s


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 10.0), min_size=16, max_size=16).filter(lambda w: sum(w) > 0.1),
    limit=st.sampled_from([None, 1, 2]),
)
def test_distinct_destinations_are_bounded(weights, limit):
    p = np.asarray(weights) / sum(weights)
    dom = np.arange(16) // 8
    device_hit, domain_hit = destination_hits(p, dom, K, E, limit)
    assert ((0 <= device_hit) & (device_hit <= 1 + 1e-12)).all()
    assert ((0 <= domain_hit) & (domain_hit <= 1 + 1e-12)).all()
    assert device_hit.sum() <= K + 1e-9
    assert domain_hit.sum() <= (limit or 2) + 1e-9
    assert device_hit.sum() >= domain_hit.sum() - 1e-9  # every hit domain has a hit device


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.floats(0.01, 10.0), min_size=32, max_size=32), mode=st.sampled_from(["normal", "low_latency"]))
def test_skew_never_makes_the_busiest_device_faster(weights, mode):
    cluster = _cluster("hgx-h800", 32)
    uniform = dispatch_cost(cluster, 32, 512, H, K, E, mode=mode)
    skewed = dispatch_cost(cluster, 32, 512, H, K, E, mode=mode, dest_probability=np.asarray(weights))
    assert skewed.time_s >= uniform.time_s * (1 - 1e-9)


def test_single_device_group_costs_nothing():
    cluster = _cluster("hgx-h100", 8)
    assert dispatch_cost(cluster, 1, 1000, H, K, E).time_s == 0.0
    assert allreduce_cost(cluster, 1, 1e6).time_s == 0.0


def test_link_classes_use_the_measured_derate_where_there_is_one():
    h800, h100 = load_device("h800-sxm"), load_device("h100-sxm")
    assert link_classes(h800)["scaleup"].bytes_per_s == pytest.approx(DEEPEP_FIT.scaleup_efficiency * 160e9)
    assert link_classes(h100)["scaleup"].bytes_per_s == pytest.approx(DEEPEP_FIT.scaleup_efficiency * 450e9)
    assert link_classes(h100)["scaleout"].bytes_per_s == pytest.approx(DEEPEP_FIT.scaleout_efficiency * 50e9)
    assert link_classes(h100)["scaleout"].latency_s == HOP_LATENCY_S["scaleout"]
    assert "attainable" in link_classes(h800)["scaleup"].source


def test_missing_bandwidth_is_an_input_error_naming_the_field():
    # a device whose link figures are unpublished (the 910B's were, until issue 20 cited its HCCS and RoCE figures)
    unit = load_unit("atlas-800-a2")
    bare = dataclasses.replace(unit.device, scaleup_bytes_per_s=None, scaleout_bytes_per_s=None)
    cluster = make_cluster(dataclasses.replace(unit, device=bare), devices=8)
    assert link_classes(cluster.device) == {}
    with pytest.raises(InputError, match="scaleup_bytes_per_s"):
        dispatch_cost(cluster, 8, 1000, H, K, E)


def test_allreduce_and_allgather_ring_formulas():
    cluster = _cluster("hgx-h100", 16)
    link = link_classes(cluster.device)["scaleup"]
    n, b = 8, 4e6
    ar = allreduce_cost(cluster, n, b)
    assert ar.bytes_by_class == {"scaleup": pytest.approx(2 * (n - 1) / n * b)}
    assert ar.latency_s == pytest.approx(RING_BASE_LATENCY_S + 2 * (n - 1) * HOP_LATENCY_S["scaleup"])
    assert ar.time_s == pytest.approx(ar.latency_s + 2 * (n - 1) / n * b / link.bytes_per_s)
    ag = allgather_cost(cluster, n, b)
    assert ag.time_s == pytest.approx(RING_BASE_LATENCY_S + (n - 1) * (HOP_LATENCY_S["scaleup"] + b / link.bytes_per_s))
    # A TP group wider than the NVLink domain is paced by the NIC.
    wide = allreduce_cost(cluster, 16, b)
    assert wide.bottleneck == "scaleout" and wide.time_s > 5 * ar.time_s


def test_small_allreduce_is_latency_bound_and_in_nccl_range():
    """A decode-sized all-reduce (64 tokens x 7168 x bf16) on 8 H100: ~15-30 us, as NCCL's model gives."""
    cost = allreduce_cost(_cluster("hgx-h100", 8), 8, 64 * H * 2)
    assert 10e-6 < cost.time_s < 30e-6
    assert cost.latency_s / cost.time_s > 0.5


def test_input_errors():
    cluster = _cluster("hgx-h800", 16)
    with pytest.raises(InputError, match="mode"):
        dispatch_cost(cluster, 16, 100, H, K, E, mode="fast")
    with pytest.raises(InputError, match="devices"):
        dispatch_cost(cluster, 32, 100, H, K, E)
    with pytest.raises(InputError, match="dest_probability"):
        dispatch_cost(cluster, 16, 100, H, K, E, dest_probability=np.ones(8))
    with pytest.raises(InputError, match="top_k"):
        dispatch_cost(cluster, 16, 100, H, 300, E)


def test_derate_override_flows_through():
    """A spec's device override (e.g. a measured 910C UB derate) changes the scale-up link, nothing else."""
    device = load_device("ascend-910c")
    derated = dataclasses.replace(device, attainable={"scaleup_bytes_per_s": 100e9})
    assert link_classes(derated)["scaleup"].bytes_per_s == pytest.approx(DEEPEP_ASCEND_FIT.scaleup_efficiency * 100e9)
    assert link_classes(derated)["scaleout"] == link_classes(device)["scaleout"]
    assert math.isclose(link_classes(device)["scaleup"].bytes_per_s, DEEPEP_ASCEND_FIT.scaleup_efficiency * 392e9)
