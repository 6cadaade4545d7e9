"""The planner's analytic answer and the simulator's replay of it agree where they model the same thing.

The replay draws the workload's lengths as the Mooncake trace spreads them (prompts cv 1.31, cut at its longest),
so a long prompt's seconds of prefill show in both."""

import pytest

from moeplan import api, example_path
from moeplan.spec import load_spec


@pytest.fixture(scope="module")
def default_replay():
    plan = api.plan(example_path())
    return plan, api.simulate(example_path(), plan, requests=600, seed=3)


def test_the_default_recommendation_holds_up_in_the_replay(default_replay):
    plan, sim = default_replay
    r, slo = plan.recommendation, plan.deployment.slo
    assert r.mode == "aggregated"  # DP attention ranks in lockstep: the case the simulator showed to be optimistic
    assert sim.completed == 600
    # the plan's TPOT is its value at full load; the replay runs below it (the instances are rounded up)
    assert 0.7 * r.tpot_s <= sim.percentile("tpot", 50) <= r.tpot_s
    # TTFT at the SLO percentile: each prompt's prefill at its own length, the wait for a rank (M^X/G/c) and for a
    # free slot of that rank (M/M/c), over the spread of prompt lengths
    assert sim.percentile("ttft", 99) <= slo.ttft_s and r.ttft_s <= slo.ttft_s
    assert r.ttft_s == pytest.approx(sim.percentile("ttft", 99), rel=0.25)
    served = sim.output_tokens_per_s
    planned = plan.deployment.workload.requests_per_s * plan.deployment.workload.output_tokens
    assert served == pytest.approx(planned, rel=0.1)  # it keeps up with the arrivals instead of queueing forever


@pytest.mark.xfail(strict=True, reason="not modelled yet: a long prompt's prefill chunks stall its lockstep group's decode "
                   "steps, so the TPOT tail of aggregated serving under spread prompts (p99 76 ms) passes the planned "
                   "48 ms and the SLO's 50 ms")
def test_the_tpot_tail_under_spread_prompts(default_replay):
    plan, sim = default_replay
    assert sim.percentile("tpot", 99) <= plan.recommendation.tpot_s * 1.1


MOONCAKE, AZURE = "requests/mooncake/conversation_trace.jsonl", "requests/azure-2023/AzureLLMInferenceTrace_conv.csv"


@pytest.mark.parametrize("example, trace, ttft_s, tpot_s, mode", [
    ("kimi-k2-h200-128.yaml", MOONCAKE, 10.0, 0.050, "disaggregated"),
    ("kimi-k2-h200-128.yaml", MOONCAKE, 10.0, 0.020, "disaggregated"),
    ("kimi-k2-h200-128.yaml", AZURE, 2.0, 0.050, "aggregated"),
    ("deepseek-v3-gb200-nvl72.yaml", AZURE, 1.0, 0.030, "aggregated"),
])
def test_a_plan_sized_for_a_real_trace_holds_in_its_replay(shared_data, example, trace, ttft_s, tpot_s, mode):
    # the bar: each recommended, each replay within both SLO percentiles (10% allowed) with every request
    # completed, and the planned TPOT within 10% of the replay's
    spec, folder = load_spec(example_path(example))
    spec = spec.model_copy(update={"slo": spec.slo.model_copy(update={"ttft_s": ttft_s, "tpot_s": tpot_s})})
    d = api.deployment(spec, folder, trace=shared_data / trace)
    plan = api.plan(d)
    r, slo = plan.recommendation, d.slo
    assert r is not None and r.mode == mode
    sim = api.simulate(d, plan)  # the workload's own trace
    assert sim.completed == len(sim.arrival_s)
    assert sim.percentile("ttft", 99) <= slo.ttft_s * 1.1 and sim.percentile("tpot", 99) <= slo.tpot_s * 1.1
    # TPOT at the SLO percentile of the traffic the pools carry (disaggregated: planner.tpot), not at a full batch
    assert r.tpot_s == pytest.approx(sim.percentile("tpot", 99), rel=0.1)
    if mode == "disaggregated":  # the TTFT of prompts tens of thousands of tokens long, within 30%
        assert r.ttft_s == pytest.approx(sim.percentile("ttft", 99), rel=0.3)
