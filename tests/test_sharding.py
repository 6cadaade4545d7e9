"""sim.sharding: a replay by instance is the unsharded replay where instances are independent; by time window
it is approximate and says so."""

import dataclasses

import numpy as np
import pytest

import moeplan
from hwmodels.errors import InputError
from hwmodels.ingest.requests import RequestTrace, synthetic_trace
from hwmodels.ingest.routing import RoutingTrace
from moeplan import api, engines
from planner.search import plan as search
from sim import Router, SimConfig, sharding, simulate

SPEC = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 4},
        "workload": {"input_tokens": 2000, "output_tokens": 300, "requests_per_s": 40.0},
        "slo": {"ttft_s": 3.0, "tpot_s": 0.05}}
ROUND_ROBIN = SimConfig(router=Router.ROUND_ROBIN)
PER_REQUEST = ("ttft_s", "tpot_s", "e2e_s", "cached_tokens", "preemptions", "rejected")


@pytest.fixture(scope="module")
def plan():
    """The planned aggregated instance (8 x H100), four of them: 32 devices."""
    d = api.deployment(moeplan.parse_spec(SPEC))
    p = search(d)
    assert p.recommendation.prefill is None
    return _with_instances(p, 4)


def _with_instances(plan, instances):
    return dataclasses.replace(plan, recommendation=dataclasses.replace(plan.recommendation, decode_instances=instances))


def _processes(n, progress=None):
    """Shards run in n local processes (moeplan.engines), as `moeplan simulate --shards` runs them."""
    return lambda fn, shared, items: engines.run_tasks(fn, shared, items, processes=n, chunk_items=1, progress=progress)


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace(3000, 120.0, 2000, 300, seed=1)


def test_by_instance_is_the_unsharded_replay(plan, trace):
    full = simulate(plan, trace, ROUND_ROBIN)
    seen = []
    sharded = sharding.simulate_sharded(plan, trace, ROUND_ROBIN, tasks=_processes(2, lambda d, n: seen.append(d)))
    r = sharded.result
    assert (sharded.by, sharded.shards, sharded.exact) == ("instance", 4, True) and sorted(seen) == [1, 2, 3, 4]
    for name in PER_REQUEST:
        np.testing.assert_allclose(getattr(r, name), getattr(full, name), rtol=1e-9, atol=1e-9, err_msg=name)
    assert r.makespan_s == pytest.approx(full.makespan_s, rel=1e-12)
    [mine], [theirs] = r.roles, full.roles
    assert (mine.steps, mine.instances, mine.devices) == (theirs.steps, theirs.instances, theirs.devices)
    for name in ("busy_s", "utilisation", "mean_kv_occupancy", "peak_kv_occupancy"):
        assert getattr(mine, name) == pytest.approx(getattr(theirs, name), rel=1e-9), name
    for name in ("mean_queue_length", "mean_in_system", "mean_queue_wait_s", "usd_per_million_output_tokens"):
        assert getattr(r, name) == pytest.approx(getattr(full, name), rel=1e-9), name
    # the timelines are re-binned from the shards' bins: the same bins, every token still in them, close per bin
    tokens, full_tokens = r.output_tokens_per_s_over_time, full.output_tokens_per_s_over_time
    assert r.timeline_bin_s == full.timeline_bin_s and len(tokens) == len(full_tokens)
    assert tokens.sum() == pytest.approx(full_tokens.sum(), rel=1e-9)
    assert np.abs(tokens - full_tokens).max() < 0.1 * full_tokens.max()
    np.testing.assert_allclose(r.utilisation_over_time["aggregated"], full.utilisation_over_time["aggregated"], atol=0.05)
    assert r.assumptions[-1].startswith("replayed in 4 shards by instance: exact")
    # two shards of two instances each: the same requests on the same ranks
    halves = sharding.simulate_sharded(plan, trace, ROUND_ROBIN, by="instance", shards=2, tasks=_processes(1))
    np.testing.assert_allclose(halves.result.e2e_s, full.e2e_s, rtol=1e-9)


def test_by_window_is_approximate_and_counts_the_requests_across_boundaries(plan, trace):
    full = simulate(plan, trace)  # the prefix-aware router: instances interact, so auto cuts by time
    crossing = {}
    for shards in (2, 3):
        sharded = sharding.simulate_sharded(plan, trace, shards=shards, tasks=_processes(2))
        assert (sharded.by, sharded.shards, sharded.exact) == ("window", shards, False)
        assert "prefix-aware router looks at every rank" in sharded.note
        crossing[shards] = int(sharded.note.split("approximate: ")[1].split(" of ")[0])
        r = sharded.result
        # each window starts empty and ends without the next one's arrivals: fewer requests compete
        assert r.completed == full.completed and r.percentile("e2e", 50) < full.percentile("e2e", 50)
    assert 0 < crossing[2] < crossing[3] < len(trace)
    whole = sharding.simulate_sharded(plan, trace, by="window", shards=1, tasks=_processes(1))
    assert whole.exact and np.array_equal(whole.result.e2e_s, full.e2e_s, equal_nan=True)
    with pytest.raises(InputError, match="instance sharding would not be exact: the prefix-aware router"):
        sharding.simulate_sharded(plan, trace, by="instance")


def test_what_breaks_instance_independence_is_named(plan, trace):
    arch = plan.deployment.model
    windows = RoutingTrace(np.ones((4, arch.num_layers, arch.moe.num_experts)), arch.moe.top_k, "uniform, 4 windows")
    assert sharding.instance_blockers(plan, ROUND_ROBIN, windows, None) == [
        "routing windows are spread over the replay's span, which a shard's is not"]
    one = _with_instances(plan, 1)
    assert sharding.instance_blockers(one, ROUND_ROBIN, None, None) == ["the plan has one instance"]
    by_time = sharding.simulate_sharded(plan, trace.take(np.arange(400)), ROUND_ROBIN, windows, shards=2, tasks=_processes(1))
    assert by_time.by == "window" and by_time.result.completed == 400


def test_a_rejected_request_makes_instance_sharding_approximate(plan, trace):
    n = 200
    inputs = trace.input_tokens[:n].copy()
    inputs[5] = 50_000_000  # longer than any rank's KV cache: rejected, and the round-robin skips it
    long = RequestTrace(trace.arrival_s[:n], inputs, trace.output_tokens[:n], None, "one request too long")
    sharded = sharding.simulate_sharded(plan, long, ROUND_ROBIN, tasks=_processes(1))
    assert not sharded.exact and "1 requests longer than a rank's KV cache were rejected" in sharded.note
    assert sharded.result.rejected.sum() == 1 and sharded.result.rejected[5]


def test_api_and_cli_simulate_in_shards_say_how(tmp_path):
    from moeplan import api, example_path

    sim = api.simulate(example_path(), requests=200, shards=2, shard_by="window")
    assert sim.completed == 200 and sim.sharding.startswith("2 shards by window, approximate")
    assert sim.to_json()["sharding"] == sim.sharding and "sharded: 2 shards" in sim.summary()
    assert api.simulate(example_path(), requests=50).sharding == ""
