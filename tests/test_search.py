"""Layout search: candidates, Pareto frontier, SLOs, capacity and the infeasibility explanation."""

import re
from dataclasses import replace

import pytest
import yaml

from hwmodels.deployment import SLO, Workload
from moeplan import api, example_path
from planner import prompt_times, queueing, search
from planner.plan import Plan
from planner.search import pareto_frontier, plan


@pytest.fixture(scope="module")
def kimi_16():
    return api.deployment(example_path())


@pytest.fixture(scope="module")
def kimi_16_plan(kimi_16) -> Plan:
    return plan(kimi_16)


def test_recommendation_meets_the_slos_and_carries_the_traffic(kimi_16, kimi_16_plan):
    r = kimi_16_plan.recommendation
    assert r is not None and r.devices <= kimi_16.cluster.num_devices
    assert r.tpot_s <= kimi_16.slo.tpot_s and r.ttft_s <= kimi_16.slo.ttft_s
    w = kimi_16.workload
    capacity = r.decode.tokens_per_s_per_device * r.decode.instance_devices * r.decode_instances
    assert capacity >= w.requests_per_s * w.output_tokens
    assert r.usd_per_hour == pytest.approx(2.3 * r.devices)


@pytest.mark.parametrize("example", ["kimi-k2-h200.yaml", "kimi-k2-h200-128.yaml"])
def test_utilisation_and_cost_at_capacity_follow_from_the_pools(example):
    """A recommendation says how much of itself the traffic uses: at 1.1 requests/s the default example's
    cost per token is that of a deployment about half busy, and a full one costs proportionally less."""
    d = api.deployment(example_path(example))
    r = plan(d).recommendation
    w = d.workload
    decode_capacity = r.decode.tokens_per_s_per_device * r.decode.instance_devices * r.decode_instances
    assert r.decode_utilization == pytest.approx(w.requests_per_s * w.output_tokens / decode_capacity)
    if r.prefill is not None:
        prefill_capacity = r.prefill.tokens_per_s_per_device * r.prefill.instance_devices * r.prefill_instances
        assert r.prefill_utilization == pytest.approx(w.requests_per_s * w.input_tokens / prefill_capacity)
        assert r.prefill_utilization <= search.SLO_UTILISATION_CAP  # the TTFT percentile's headroom
    assert 0 < r.utilization <= 1 and r.utilization == max(r.decode_utilization, r.prefill_utilization or 0)
    assert r.capacity_requests_per_s * r.utilization == pytest.approx(w.requests_per_s)
    # the bill does not change with the traffic, so a full deployment spreads it over 1 / utilisation more tokens
    assert r.usd_per_million_output_at_capacity == pytest.approx(r.usd_per_million_output * r.utilization)
    assert r.usd_per_million_input_at_capacity == pytest.approx(r.usd_per_million_input * r.utilization)


def test_without_a_traffic_volume_the_instance_runs_as_busy_as_its_slos_allow():
    d = api.deployment(example_path("kimi-k2-h200-128.yaml"))
    r = plan(replace(d, workload=replace(d.workload, requests_per_s=None))).recommendation
    if r.prefill is None:  # aggregated: TTFT's wait for a free slot caps the load below full
        assert 0 < r.utilization < 1 and r.ttft_s <= d.slo.ttft_s
    else:  # one decode instance, as busy as the wait for its free slots and its prefill pool's allow
        assert r.decode_instances == 1 and 0 < r.decode_utilization < 1 and r.ttft_s <= d.slo.ttft_s * (1 + 1e-9)
        assert r.prefill_utilization <= search.SLO_UTILISATION_CAP


def test_frontier_is_not_dominated(kimi_16_plan):
    f = kimi_16_plan.frontier
    assert f
    for a in f:
        for b in f:
            assert not (b.tokens_per_s_per_device > a.tokens_per_s_per_device and b.tokens_per_s_per_user > a.tokens_per_s_per_user)
    assert pareto_frontier(list(f)) == f


def test_cost_follows_from_the_price(kimi_16_plan):
    r = kimi_16_plan.recommendation
    w = kimi_16_plan.deployment.workload
    # aggregated: the bill is split between input and output work, so both together pay for the devices
    hourly = (r.usd_per_million_input * w.input_tokens + r.usd_per_million_output * w.output_tokens) * w.requests_per_s * 3600 / 1e6
    assert hourly == pytest.approx(r.usd_per_hour, rel=1e-6)


def test_more_traffic_needs_more_devices(kimi_16):
    heavy = replace(kimi_16, cluster=api.deployment(example_path("kimi-k2-h200-128.yaml")).cluster,
                    workload=replace(kimi_16.workload, requests_per_s=20.0))
    light = plan(kimi_16).recommendation
    r = plan(heavy).recommendation
    assert r is not None and r.devices > light.devices


def test_unreachable_tpot_is_explained(kimi_16):
    tight = replace(kimi_16, slo=SLO(ttft_s=2.0, tpot_s=0.005, percentile=99))
    result = plan(tight)
    assert result.recommendation is None
    assert result.infeasible.startswith("no layout meets TPOT 5 ms on 16 x h200-sxm: the best reaches")
    assert "would help" in result.infeasible


def test_traffic_beyond_the_cluster_is_explained(kimi_16):
    result = plan(replace(kimi_16, workload=Workload(12035, 343, 500.0)))
    assert result.recommendation is None and "needs more than the cluster's 16 devices" in result.infeasible


def test_traffic_beyond_the_cluster_says_how_many_devices_it_takes(kimi_16):
    """`moeplan plan` (api.plan) grows the cluster by whole nodes, doubling then bisecting, to the smallest on which the
    search meets the SLOs, and says so with the spec field to set; one node fewer does not. Sweeps (planner.search.plan
    alone) do not pay for it."""
    heavy = replace(kimi_16, workload=replace(kimi_16.workload, requests_per_s=3.4))
    assert "needs more than the cluster's 16 devices" in plan(heavy).infeasible
    grown = search.devices_needed(heavy)
    devices = grown.deployment.cluster.num_devices
    assert grown.recommendation is not None and 16 < devices <= search.MOST_DEVICES and devices % 8 == 0
    assert grown.recommendation.devices <= devices
    one_node_less = replace(heavy, cluster=replace(heavy.cluster, num_devices=devices - 8))
    assert plan(one_node_less).recommendation is None
    spec = yaml.safe_load(example_path().read_text())
    spec["workload"]["requests_per_s"] = 3.4
    view = api.plan(spec, replay=0)
    assert view.infeasible_field == "workload.requests_per_s"
    assert f"the search first meets them on {devices} x h200-sxm ({devices // 8} nodes)" in view.infeasible
    assert f"set cluster.units: {devices // 8}" in view.infeasible
    mixed = api.deployment(example_path().parent / "kimi-k2-h200-prefill-b200-decode.yaml")
    refused = plan(replace(mixed, workload=replace(mixed.workload, requests_per_s=500.0)))
    assert refused.infeasible_field == "workload.requests_per_s" and search.with_devices_needed(refused) is refused
    assert search.devices_needed(mixed) is None  # which of its two clusters to grow is the user's choice


def test_a_model_that_does_not_fit_says_so_and_what_would():
    small = api.deployment({"model": "kimi-k2", "cluster": {"unit": "hgx-h100", "devices": 8},
                            "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 2.0, "tpot_s": 0.05}})
    result = plan(small)
    assert result.recommendation is None and result.infeasible_field == "cluster.devices"
    assert "needs 1.03 TB of weights; 8 x h100-sxm hold 687 GB" in result.infeasible
    assert "use at least 16 x h100-sxm" in result.infeasible and "moeplan" not in result.infeasible


def test_every_pool_admits_the_longest_prompt(kimi_16):
    """A pool whose attention group cannot hold the workload's longest prompt would drop it: never recommended."""
    longest = replace(kimi_16, workload=replace(kimi_16.workload, requests_per_s=None, max_input_tokens=2_000_000))
    refused = plan(longest)
    assert refused.recommendation is None
    assert refused.infeasible_field == "workload.max_input_tokens" and "(2,000,000 tokens)" in refused.infeasible
    r = plan(kimi_16).recommendation
    for pool in (r.decode, r.prefill):
        if pool is not None:
            assert prompt_times.admits_longest(kimi_16, prompt_times.sub_cluster(kimi_16, pool.instance_devices), pool.layout, 0)


def test_instance_sizes_stop_at_the_largest_published_instance_however_large_the_cluster(kimi_16):
    """A 100,000-device cluster plans as quickly as a 512-device one: more traffic takes more instances."""
    huge = replace(kimi_16, cluster=api.deployment({**_spec_of(kimi_16), "cluster": {"unit": "hgx-h200", "devices": 100_000}}).cluster)
    sizes = search.instance_sizes(huge)
    assert sizes[0] == search.instance_sizes(kimi_16)[0] and sizes[-1] == search.MAX_INSTANCE_DEVICES


def _spec_of(d):
    return {"model": "kimi-k2", "cluster": {"unit": d.cluster.unit.name, "devices": d.cluster.num_devices},
            "workload": {"input_tokens": d.workload.input_tokens, "output_tokens": d.workload.output_tokens},
            "slo": {"ttft_s": d.slo.ttft_s, "tpot_s": d.slo.tpot_s}}


def test_a_disaggregated_ttft_waits_for_a_decode_slot_and_the_decode_pool_grows_until_it_fits():
    # the 128-H200 example at TPOT 20 ms: decode ranks of few slots each, so a prompt can wait for one (the replay
    # once showed p50 TTFT 15 s while the plan, without this wait, promised 1.56 s at p99)
    d = api.deployment(example_path("kimi-k2-h200-128.yaml"))
    d = replace(d, slo=replace(d.slo, tpot_s=0.020))
    r = plan(d).recommendation
    assert r.mode == "disaggregated" and r.ttft_s <= d.slo.ttft_s * (1 + 1e-9)
    rate, dc, pc = r.requests_per_s, r.decode, r.prefill
    prompts = prompt_times.prompt_lengths(d)
    service_s = prompt_times.rank_prefill_s(d, pc, prompts)
    prefill_s = prompt_times.prefill_s(d, prompts, service_s)
    ranks = pc.instance_devices // pc.layout.rank_devices * r.prefill_instances
    prefill_wait = queueing.mgc_wait(service_s, r.prefill_utilization, ranks, step_s=pc.step_s)

    def ttft(decode_instances: int) -> float:  # synthetic traffic: Poisson arrivals, one rate level
        waits = (prefill_wait, search._decode_slot_wait(d, dc, decode_instances, rate))
        return queueing.ttft_percentile_s(prefill_s, queueing.steady(*waits), d.slo.percentile)

    def carries(instances: int) -> bool:
        return instances * dc.tokens_per_s_per_device * dc.instance_devices >= rate * d.workload.output_tokens

    # the TTFT is the one at the fewest instances that carry the traffic within it (the TPOT at the offered load may
    # grow the pool further, which only shortens the wait: the plan keeps the TTFT it was sized at)
    sized = r.decode_instances
    while sized > 1 and carries(sized - 1) and ttft(sized - 1) <= d.slo.ttft_s:
        sized -= 1
    assert ttft(sized) == pytest.approx(r.ttft_s, rel=1e-6) and ttft(r.decode_instances) <= r.ttft_s * (1 + 1e-6)
    if sized > 1 and carries(sized - 1):  # one fewer would not meet the SLO
        assert ttft(sized - 1) > d.slo.ttft_s
    assert search._decode_slot_wait(d, dc, 10_000, rate).p_wait < 1e-9  # a light load: almost never a wait
    ranks = dc.instance_devices // dc.layout.tp
    full = dc.work_per_device * dc.layout.tp * ranks / (d.workload.output_tokens * dc.step_s)
    assert search._decode_slot_wait(d, dc, 1, full).unbounded


def _small_model_spec(model: str, unit: str) -> dict:
    return {"schema_version": 1, "name": "small", "model": model, "cluster": {"unit": unit, "units": 1},
            "workload": {"name": "mooncake-conversation", "requests_per_s": 2.0},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.05, "percentile": 99}, "prices": {}}


def test_instances_smaller_than_a_node():
    # Mixtral-8x7B's bf16 weights (93 GB) need two H100s: instances of 2 and 4 of a node's 8, then whole nodes
    assert search.instance_sizes(api.deployment(_small_model_spec("mixtral-8x7b", "hgx-h100")))[:3] == [2, 4, 8]
    # Qwen3-30B-A3B fits one GB200: one GPU of a tray serves it, checked by its replay, and plan.json reads it back
    spec = _small_model_spec("qwen3-30b-a3b", "gb200-nvl72")
    result = api.plan(spec)
    r = result.recommendation
    assert r is not None and r.decode.instance_devices == 1 and r.devices < 4 and result.replays[-1].holds
    assert result.replay.devices == r.devices
    assert api.load_plan(result.to_json(), spec).recommendation.devices == r.devices


def test_a_ttft_the_longest_prompts_put_out_of_reach_names_the_fastest_rank_context_parallel_included():
    spec = yaml.safe_load(example_path().read_text())
    spec["slo"]["ttft_s"] = 1.0
    result = api.plan(spec)
    assert result.recommendation is None and result.infeasible_field == "slo.ttft_s"
    floor, prompt = re.search(r"p99 TTFT >= ([\d.]+) s, as the p99 prompt \(([\d,]+) tokens", result.infeasible).groups()
    assert float(floor) > 1.0 and int(prompt.replace(",", "")) > 5 * result.deployment.workload.input_tokens
    devices, name = re.search(r"on one (\d+)-device attention rank \((.*?)\) and transfer", result.infeasible).groups()
    assert ", CP" in name and int(devices) > 8  # the prompt split over groups spanning both nodes: still too slow
