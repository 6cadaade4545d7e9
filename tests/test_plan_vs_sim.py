"""The planner's analytic answer and the simulator's replay of it agree where they model the same thing.

The replay draws the workload's lengths as the Mooncake trace spreads them (prompts cv 1.31, cut at its longest),
so a long prompt's seconds of prefill show in both."""

import pytest

from moeplan import api, example_path


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
    # TTFT at the SLO percentile: long prompts on their rank (M/G/1) and a free slot of that rank (M/M/c), over the
    # trace's spread of prompt lengths; the replay adds the lockstep coupling of ranks, which the planner leaves out
    assert sim.percentile("ttft", 99) <= slo.ttft_s and r.ttft_s <= slo.ttft_s
    assert 0.7 * sim.percentile("ttft", 99) <= r.ttft_s <= sim.percentile("ttft", 99)
    served = sim.output_tokens_per_s
    planned = plan.deployment.workload.requests_per_s * plan.deployment.workload.output_tokens
    assert served == pytest.approx(planned, rel=0.1)  # it keeps up with the arrivals instead of queueing forever


@pytest.mark.xfail(strict=True, reason="not modelled yet: a long prompt's prefill chunks stall its lockstep group's decode "
                   "steps, so the TPOT tail of aggregated serving under spread prompts (p99 76 ms) passes the planned "
                   "48 ms and the SLO's 50 ms")
def test_the_tpot_tail_under_spread_prompts(default_replay):
    plan, sim = default_replay
    assert sim.percentile("tpot", 99) <= plan.recommendation.tpot_s * 1.1
