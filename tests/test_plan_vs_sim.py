"""The planner's analytic answer and the simulator's replay of it agree where they model the same thing."""

import pytest

from moeplan import api, example_path


def test_the_default_recommendation_holds_up_in_the_replay():
    plan = api.plan(example_path())
    r = plan.recommendation
    assert r.mode == "aggregated"  # DP attention ranks in lockstep: the case the simulator showed to be optimistic
    sim = api.simulate(example_path(), requests=600, seed=3)
    assert sim.completed == 600
    # the plan's TPOT is its value at full load; the replay runs below it (the instances are rounded up)
    assert 0.7 * r.tpot_s <= sim.percentile("tpot", 50) <= r.tpot_s
    assert sim.percentile("tpot", 99) <= r.tpot_s * 1.1
    # TTFT at the SLO percentile: the plan's M/M/c wait for a batch slot bounds the replay's tail from above
    assert sim.percentile("ttft", 99) <= r.ttft_s <= plan.deployment.slo.ttft_s
    served = sim.output_tokens_per_s
    planned = plan.deployment.workload.requests_per_s * plan.deployment.workload.output_tokens
    assert served == pytest.approx(planned, rel=0.1)  # it keeps up with the arrivals instead of queueing forever
