"""A request trace as the traffic a plan is sized for (hwmodels.ingest.traffic, workload.trace, plan --trace)."""

import json

import numpy as np
import pytest

import checkout_cli
from hwmodels.deployment import POISSON
from hwmodels.errors import InputError
from hwmodels.ingest.requests import RequestTrace, synthetic_trace
from hwmodels.ingest.traffic import LENGTH_POINTS, traffic
from moeplan import api, example_path
from planner.search import plan


def _trace(arrival_s, inputs=1_000, outputs=100) -> RequestTrace:
    n = len(arrival_s)
    return RequestTrace(np.asarray(arrival_s, float) - arrival_s[0], np.full(n, inputs), np.full(n, outputs), None, "test")


def test_poisson_traffic_is_one_level_of_poisson_burstiness_and_keeps_its_lengths():
    t = traffic(synthetic_trace(6_000, 2.0, 1_000, 100, length_cv=1.0, seed=1), 2.0)
    assert t.requests == 6_000 and t.requests_per_s == pytest.approx(2.0, rel=0.05)
    assert max(m for _, m in t.arrivals.levels) < 1.05  # per-minute counts vary only by Poisson noise: shrunk away
    assert t.arrivals.scv == pytest.approx(1.0, abs=0.15) and t.arrivals.clump_size < 1.01  # a rare coincidence
    assert t.input_cv == pytest.approx(1.0, rel=0.15) and len(t.prompt_lengths) == LENGTH_POINTS
    assert np.mean(t.prompt_lengths) == pytest.approx(t.input_tokens, rel=0.05)


def test_a_busy_half_hour_is_a_rate_level_that_holds_its_share_of_the_requests():
    rng = np.random.default_rng(0)
    quiet, busy = np.cumsum(rng.exponential(1.0, 1_800)), 1_800 + np.cumsum(rng.exponential(1 / 3.0, 5_400))
    levels = traffic(_trace(np.concatenate([quiet, busy[busy < 3_600]])), 2.0).arrivals.levels
    assert sum(share for share, _ in levels) == pytest.approx(1.0)
    rate = 4 * 1_800 / 3_600  # the mean: 1/s then 3/s
    busiest = [m for share, m in levels if m > 1.2]
    assert np.mean(busiest) == pytest.approx(3.0 / rate, rel=0.1)  # the busy half's requests see 1.5x the mean
    assert sum(share for share, m in levels if m > 1.2) == pytest.approx(0.75, abs=0.07)


def test_requests_that_arrive_together_are_clumps():
    beat = np.repeat(np.arange(0.0, 600.0, 3.0), 10)  # ten at once every 3 s, as the Mooncake trace stamps them
    arrivals = traffic(_trace(beat), 10.0).arrivals
    assert arrivals.clump_size == pytest.approx(10.0)
    assert arrivals.scv < 0.5  # a steady beat of clumps: less bursty than Poisson


def test_a_clumped_bursty_busy_trace_needs_more_than_its_poisson_twin():
    d = api.deployment({**_spec(), "workload": {"input_tokens": 8_000, "output_tokens": 300, "requests_per_s": 0.5}})
    calm = plan(d).recommendation
    bursty = plan(_with_arrivals(d, levels=((0.5, 0.6), (0.5, 1.4)), clump_size=6.0)).recommendation
    assert bursty is None or bursty.ttft_s > calm.ttft_s or bursty.devices > calm.devices


def _spec():
    return {"model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 2}, "slo": {"ttft_s": 5.0, "tpot_s": 0.05}}


def _with_arrivals(d, **fields):
    from dataclasses import replace
    return replace(d, workload=replace(d.workload, arrivals=replace(POISSON, **fields)))


def _mooncake_like(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    lines = [json.dumps({"timestamp": int(3000 * (i // 8)), "input_length": int(rng.lognormal(8.5, 1.0)),
                         "output_length": int(rng.integers(20, 400)), "hash_ids": [i]}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_spec_sizes_for_its_trace(tmp_path):
    trace = _mooncake_like(tmp_path / "t.jsonl")
    d = api.deployment({**_spec(), "workload": {"trace": str(trace)}})
    w = d.workload
    assert w.trace == str(trace) and w.requests_per_s == pytest.approx(399 / 147)
    assert len(w.prompt_lengths) == LENGTH_POINTS and len(w.output_lengths) == LENGTH_POINTS
    assert w.arrivals.clump_size == pytest.approx(8.0) and "t.jsonl" in w.source
    # a field the spec gives overrides the trace's; reshaping the prompts drops the trace's own lengths
    given = api.deployment({**_spec(), "workload": {"trace": str(trace), "input_tokens": 3_000}}).workload
    assert given.input_tokens == 3_000 and given.prompt_lengths == () and given.output_lengths == w.output_lengths
    faster = api.deployment({**_spec(), "workload": {"trace": str(trace), "requests_per_s": 5.0}}).workload
    assert faster.requests_per_s == 5.0 and faster.arrivals == w.arrivals  # the same pattern, scaled
    # plan(..., trace=) replaces the spec's workload with the trace's traffic
    assert api.deployment(example_path(), trace=trace).workload.requests_per_s == pytest.approx(w.requests_per_s)


@pytest.mark.parametrize("workload, field", [
    ({"trace": "missing.jsonl"}, "workload.trace"),
    ({"trace": "t.jsonl", "name": "mooncake-conversation"}, "workload"),
    ({"trace": "lengths.csv"}, "workload.requests_per_s"),
    ({"trace": "bad.jsonl"}, "workload.trace: "),
])
def test_a_bad_trace_is_one_error_naming_the_field(tmp_path, workload, field):
    _mooncake_like(tmp_path / "t.jsonl")
    (tmp_path / "lengths.csv").write_text("num_prefill_tokens,num_decode_tokens\n100,10\n200,20\n")
    (tmp_path / "bad.jsonl").write_text('{"timestamp": -5, "input_length": 1, "output_length": 1}\n')
    with pytest.raises(InputError) as e:
        api.deployment({**_spec(), "workload": workload}, base_dir=tmp_path)
    assert field in e.value.field and "\n" not in str(e.value)


def test_a_length_csv_trace_takes_the_spec_rate(tmp_path):
    (tmp_path / "lengths.csv").write_text("num_prefill_tokens,num_decode_tokens\n" +
                                          "".join(f"{100 + i},{10 + i % 7}\n" for i in range(300)))
    w = api.deployment({**_spec(), "workload": {"trace": "lengths.csv", "requests_per_s": 2.0}}, base_dir=tmp_path).workload
    assert w.requests_per_s == pytest.approx(2.0, rel=0.2) and w.arrivals.clump_size < 1.05


def test_plan_trace_on_the_command_line(tmp_path):
    trace = _mooncake_like(tmp_path / "t.jsonl")
    r = checkout_cli.run("plan", str(example_path()), "--trace", str(trace), "--json", cwd=tmp_path, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["workload"]["trace"] == str(trace) and doc["workload"]["requests_per_s"] == pytest.approx(399 / 147)
    assert doc["workload"]["arrivals"]["rate_levels"] and "t.jsonl" in doc["workload"]["source"]
