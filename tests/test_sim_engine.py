"""The SimPy replay (sim.engine): consistency with the analytic step model, Little's law, same-time
priorities, determinism, KV limits, prefix cache, and the real Kimi trace with skewed vs uniform routing."""

import enum
import glob
import math

import numpy as np
import pytest
import simpy

from hwmodels.hardware import make_cluster
from hwmodels.ingest.requests import RequestTrace, load_trace, synthetic_trace
from hwmodels.ingest.routing import load_routing
from hwmodels.serving import decode_performance
from hwmodels.step import StepContext
from moeplan import api, example_path, parse_spec
from planner.plan_json import plan_from_json
from sim import KVPolicy, Router, SimConfig, concat_routing, simulate
from sim import engine

# Kimi K2 on 16 HGX H200 nodes at Mooncake's conversation traffic; TPOT 20 ms makes the planner pick
# a disaggregated deployment (prefill TP2 x DP8 + EP16, decode TP2 x DP12 + EP24)
KIMI_DISAGG = {"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 16},
               "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 10.0, "tpot_s": 0.02}}


@pytest.fixture(scope="module")
def kimi():
    d = api.deployment(parse_spec(KIMI_DISAGG))
    plan = plan_from_json(api.plan(d).to_json(), d)
    assert plan.recommendation.mode == "disaggregated"
    return d, plan


def _trace(arrival_s, input_tokens, output_tokens, blocks=None) -> RequestTrace:
    return RequestTrace(np.asarray(arrival_s, dtype=float), np.asarray(input_tokens), np.asarray(output_tokens), blocks, "test")


def test_fixed_batch_throughput_matches_the_analytic_step_model(kimi):
    d, plan = kimi
    role = plan.pools[-1]
    batch, inp, out = role.batch_per_device, 1000, 200
    per_rank = batch * role.layout.tp
    ctx = StepContext(d.model, d.precision, make_cluster(d.cluster.unit, devices=role.instance_devices), role.layout)
    analytic = decode_performance(ctx, batch, inp + out / 2, d.serving.hbm_utilization, d.serving.tokens_per_step)
    # evenly spaced arrivals (no variance) well above what decode drains, so every rank runs a full batch
    capacity_rps = analytic.tokens_per_s_per_device * role.devices / out
    n = 40 * per_rank * role.layout.dp
    trace = synthetic_trace(n, 3 * capacity_rps, inp, out, arrival="gamma", cv=0.0)
    result = simulate(plan, trace)
    decode = next(r for r in result.roles if r.role == "decode")
    simulated = (result.output_tokens - 1).sum() / decode.busy_s / role.devices  # decode makes all but the first token
    assert simulated == pytest.approx(analytic.tokens_per_s_per_device, rel=0.05)
    assert result.percentile("tpot", 50) == pytest.approx(analytic.steps[0].time_s, rel=0.05)


def test_littles_law_on_the_queue_and_the_system(kimi):
    _, plan = kimi
    # bursty traffic above the prefill pool's rate for a while, so a queue forms
    result = simulate(plan, synthetic_trace(400, 30.0, 6000, 100, seed=4))
    arrival_rate = result.completed / result.makespan_s
    assert result.mean_queue_length > 0.5
    assert result.mean_queue_length == pytest.approx(arrival_rate * result.mean_queue_wait_s, rel=1e-9)
    assert result.mean_in_system == pytest.approx(arrival_rate * np.nanmean(result.e2e_s), rel=1e-9)


def test_same_time_events_run_in_priority_order():
    env, seen = simpy.Environment(), []
    for p in sorted(engine.Priority, reverse=True):  # created in the reverse of the wanted order
        engine._Timed(env, 1.0, p).callbacks.append(lambda _e, p=p: seen.append(p))
    env.run()
    assert seen == sorted(engine.Priority)


def test_a_batch_formed_at_t_sees_every_arrival_at_t(kimi, monkeypatch):
    _, plan = kimi
    # two identical prompts at the same instant: formed after both arrivals, the first step holds both
    trace = _trace([0.0, 0.0], [3000, 3000], [5, 5])
    together = simulate(plan, trace)
    assert together.ttft_s[0] == together.ttft_s[1]

    class Early(enum.IntEnum):  # batches formed before the arrivals of their instant
        STEP_END, TRANSFER_DONE, SCHEDULE, ARRIVAL = 2, 3, 4, 5

    monkeypatch.setattr(engine, "Priority", Early)
    apart = simulate(plan, trace)
    assert apart.ttft_s[1] > apart.ttft_s[0]


def test_same_seed_same_result(kimi):
    d, plan = kimi
    runs = [api.simulate(d, plan, requests=150, seed=s).to_json() for s in (7, 7, 8)]
    for r in runs:
        r.pop("wall_seconds")
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.fixture(scope="module")
def small_kv():
    """Kimi K2 aggregated on 16 H200 with HBM for 5.5k KV tokens per DP rank: room for one 2k + 1k sequence."""
    raw = {"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 2},
           "workload": {"input_tokens": 2000, "output_tokens": 1000, "requests_per_s": 4}, "slo": {"ttft_s": 2.0, "tpot_s": 0.05}}
    doc = api.plan(parse_spec(raw)).to_json()
    # pinned to DP16 attention (whatever the planner prefers), the layout the HBM fraction below is sized for
    doc["recommendation"]["decode"]["layout"] |= {"attention_tp": 1, "attention_dp": 16}
    d = api.deployment(parse_spec(raw | {"serving": {"hbm_utilization": 0.53}}))
    return plan_from_json(doc, d), synthetic_trace(120, 8.0, 2000, 1000, seed=1)


def test_kv_limit_queues_without_preempting(small_kv):
    plan, trace = small_kv
    result = simulate(plan, trace, SimConfig(kv_policy=KVPolicy.QUEUE, max_batch_per_device=16))
    role = result.roles[0]
    assert result.completed == len(trace) and result.preemptions.sum() == 0
    # QUEUE reserves each sequence's final 3,000 tokens: one fits a rank, two never do
    assert 3000 <= role.kv_capacity_tokens_per_group < 6000
    assert role.peak_kv_occupancy <= 3000 / role.kv_capacity_tokens_per_group + 1e-9


def test_kv_limit_preempts_and_recomputes(small_kv):
    plan, trace = small_kv
    queue = simulate(plan, trace, SimConfig(kv_policy=KVPolicy.QUEUE, max_batch_per_device=16))
    preempt = simulate(plan, trace, SimConfig(kv_policy=KVPolicy.PREEMPT, max_batch_per_device=16))
    role = preempt.roles[0]
    assert preempt.completed == len(trace) and preempt.preemptions.sum() > 0
    assert role.peak_kv_occupancy <= 1.0
    assert role.mean_kv_occupancy > queue.roles[0].mean_kv_occupancy  # admitting on the current length packs more


def test_a_request_longer_than_the_kv_cache_is_rejected(small_kv):
    plan, _ = small_kv
    result = simulate(plan, _trace([0.0, 0.1], [2000, 9000], [100, 100]))
    assert result.rejected.tolist() == [False, True]
    assert result.completed == 1 and math.isnan(result.ttft_s[1])


def test_prefix_cache_hits_and_prefix_aware_routing(kimi):
    _, plan = kimi
    blocks = (tuple(range(8)), tuple(range(100, 108)), tuple(range(8)) + (50, 51))  # the third extends the first
    trace = _trace([0.0, 0.0, 5.0], [4096, 4096, 5120], [2, 2, 2], blocks)
    aware = simulate(plan, trace, SimConfig(router=Router.PREFIX_AWARE))
    assert aware.cached_tokens.tolist() == [0, 0, 8 * 512]
    off = simulate(plan, trace, SimConfig(prefix_cache=False))
    assert off.cached_tokens.sum() == 0 and off.ttft_s[2] > aware.ttft_s[2]
    rr = simulate(plan, trace, SimConfig(router=Router.ROUND_ROBIN))  # the third prompt lands on a cold rank
    assert rr.cached_tokens[2] == 0


def test_result_json_contract_and_cost(kimi):
    d, plan = kimi
    result = simulate(plan, synthetic_trace(60, 2.0, 3000, 50, seed=2))
    doc = result.to_json()
    for key in ("requests", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "output_tokens_per_s",
                "goodput_requests_per_s", "usd_per_million_output_tokens", "wall_seconds"):
        assert key in doc
    assert doc["requests"] == 60 and doc["completed"] == 60
    hours = result.makespan_s / 3600
    expected = plan.devices * d.price.usd_per_device_hour * hours / result.output_tokens.sum() * 1e6
    assert doc["usd_per_million_output_tokens"] == pytest.approx(expected)
    assert doc["output_tokens_per_s"] == pytest.approx(result.output_tokens.sum() / result.makespan_s)
    assert sum(doc["timeline"]["output_tokens_per_s"]) * result.timeline_bin_s == pytest.approx(result.output_tokens.sum())
    assert np.all(result.ttft_s > 0) and np.all(result.e2e_s >= result.ttft_s)
    # goodput counts the requests within both SLOs over the span they arrived in, not the drain after it
    span = result.arrival_s.max() - result.arrival_s.min()
    assert result.makespan_s > span and doc["goodput_requests_per_s"] == pytest.approx(result.meets_slo.sum() / span)


def _routing(shared_data, d, pattern):
    arch = d.model
    files = sorted(glob.glob(str(shared_data / "routing" / "deepseek-v3-sglang-eplb" / pattern)))
    return concat_routing([load_routing(f, arch.num_layers, arch.moe_layers, arch.moe.num_experts, arch.moe.top_k)
                           for f in files])


def test_real_kimi_trace_with_deepseek_routing_skew_is_not_faster(kimi, shared_data):
    """The Mooncake conversation trace (3% of it here; benchmarks/bench_sim.py replays all of it) through the
    disaggregated Kimi K2 plan with SGLang's DeepSeek-V3 statistics mapped to K2's shape, in time order."""
    d, plan = kimi
    trace = load_trace(shared_data / "requests" / "mooncake" / "conversation_trace.jsonl").subsample(0.03, seed=1)
    decode, prefill = _routing(shared_data, d, "decode_*.json"), _routing(shared_data, d, "prefill_*.json")
    assert "mapped to 60 x 384" in decode.note  # DeepSeek-V3's 58 x 256 statistics on Kimi K2's shape, said so
    uniform = simulate(plan, trace)
    skewed = simulate(plan, trace, SimConfig(), decode, prefill)
    assert uniform.completed == skewed.completed == len(trace)
    assert uniform.prefix_cache_hit_rate > 0  # the trace's hash ids reuse prompt blocks
    assert "uniform load" in uniform.roles[0].expert_load
    assert "EPLB global policy fitted on window 0; windows 1-6 held out" in skewed.roles[0].expert_load
    assert all(role.mean_imbalance > 1.01 for role in skewed.roles)
    for role, base in zip(skewed.roles, uniform.roles):
        assert role.busy_s / role.steps >= base.busy_s / base.steps  # a skewed step is never shorter
    assert np.nanmean(skewed.ttft_s) >= np.nanmean(uniform.ttft_s)
    assert np.nanmean(skewed.tpot_s) >= np.nanmean(uniform.tpot_s)
    for metric in ("ttft", "tpot"):
        for q in (50, 90, 99):
            # slower prefill spaces out decode arrivals (smaller batches), which can move a percentile a little
            assert skewed.percentile(metric, q) >= uniform.percentile(metric, q) * 0.99



def test_utilisation_over_time_spreads_each_step_over_the_bins_it_spans():
    # the example's aggregated instance prefills 8,192-token chunks in steps longer than the 1 s bins of a 30 s
    # trace: counted whole in the bin each starts in, a busy bin read 156%
    d = api.deployment(example_path())
    plan = api.plan(d).plan
    result = simulate(plan, synthetic_trace(120, 4.0, 12_000, 300, seed=1))
    for role in result.roles:
        series = result.utilisation_over_time[role.role]
        assert series.max() <= 1.0 + 1e-9
        assert series.sum() * result.timeline_bin_s * role.instances == pytest.approx(role.busy_s, rel=1e-9)
