"""plan.json, the one serialisation of a Plan (planner.plan_json): what is written reads back to the same plan (both
modes, the placements, an infeasible plan), the simulator's view of it, and one clear error per malformed or
mismatched document."""

import copy
import json

import numpy as np
import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.requests import synthetic_trace
from hwmodels.ingest.routing import save_counts
from moeplan import api, example_path, parse_spec
from planner.plan import Mode
from planner.plan_json import PLAN_SCHEMA_VERSION, plan_from_json, plan_to_json, read_plan
from sim import simulate

QWEN = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
        "workload": {"input_tokens": 2000, "output_tokens": 500, "requests_per_s": 2.0}, "slo": {"ttft_s": 3.0, "tpot_s": 0.1}}


@pytest.fixture(scope="module")
def aggregated():
    d = api.deployment(example_path())
    return d, json.loads(json.dumps(api.plan(d).to_json()))  # as read back from plan.json


def _round_trips(plan):
    """What plan.json holds reads back to a plan that writes the same plan.json, and the same recommendation."""
    doc = json.loads(json.dumps(plan_to_json(plan)))
    back = plan_from_json(doc, plan.deployment)
    assert json.loads(json.dumps(plan_to_json(back))) == doc and doc["schema_version"] == PLAN_SCHEMA_VERSION
    if plan.recommendation is not None:
        for mine, theirs in zip(back.pools, plan.pools):
            assert mine.option.perf == theirs.option.perf and mine.instances == theirs.instances
            assert mine.option.placement_summary == theirs.option.placement_summary
            if theirs.option.load is not None:
                assert np.array_equal(mine.option.load.shares, theirs.option.load.shares)
            if theirs.placement is not None:
                assert np.array_equal(mine.placement.phy2log, theirs.placement.phy2log)
    return back


def test_aggregated_plan(aggregated):
    d, doc = aggregated
    plan = plan_from_json(doc, d)
    rec = doc["recommendation"]
    assert plan.recommendation.mode == rec["mode"] == Mode.AGGREGATED and len(plan.pools) == 1
    role = plan.pools[0]
    assert role.role == "aggregated" and role.instances == rec["decode"]["instances"]
    assert role.layout.tp == rec["decode"]["layout"]["attention_tp"] and role.layout.ep == rec["decode"]["layout"]["expert_parallel"]
    assert role.batch_per_device == rec["decode"]["batch_per_device"]
    assert role.chunk_tokens_per_device == d.serving.tokens_per_step
    assert plan.devices == rec["devices"] and role.placement is None
    assert "aggregated" in plan.describe()
    _round_trips(api.plan(d).plan)


def test_a_plan_read_back_replays_as_the_plan_it_was_written_from(aggregated):
    d, doc = aggregated
    trace = synthetic_trace(60, 1.0, d.workload.input_tokens, d.workload.output_tokens, seed=3)
    written, read = simulate(api.plan(d).plan, trace), simulate(plan_from_json(doc, d), trace)
    assert np.array_equal(written.ttft_s, read.ttft_s) and np.array_equal(written.tpot_s, read.tpot_s)


def _placements_match(d, doc, plan):
    for role in plan.pools:
        written = doc["recommendation"]["prefill" if role.role == "prefill" else "decode"]["placement"]["experts"]
        assert role.placement is not None and role.placement.num_devices == role.layout.ep
        moe = list(d.model.moe_layers)
        assert np.array_equal(role.placement.phy2log[moe], np.asarray(written["phy2log"])[moe])
        assert "from the plan" in role.placement_label and written["method"] in role.placement_label


def test_aggregated_plan_with_its_placement(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("fit", "eval"):
        save_counts(rng.poisson(4000 * rng.gamma(0.6, 1.0, (48, 128))).astype(float), tmp_path / f"{name}.json", "qwen3-30b-a3b")
    raw = QWEN | {"routing": {"decode": {"evaluate": str(tmp_path / "eval.json"), "fit": [str(tmp_path / "fit.json")]},
                              "placement": "eplb"}}
    d = api.deployment(parse_spec(raw))
    doc = json.loads(json.dumps(api.plan(d).to_json()))  # as read back from plan.json
    plan = plan_from_json(doc, d)
    assert plan.recommendation.mode == "aggregated"
    _placements_match(d, doc, plan)
    _round_trips(plan)


def test_disaggregated_plan_with_its_placements(shared_data):
    stats = shared_data / "routing" / "deepseek-v3-sglang-eplb"
    # 6 nodes: the fewest that hold the 16-device prefill and 32-device decode pools (a decode slot free at p99),
    # so the search stays short; TTFT 5 s, as the trace's p99 prompts need on one prefill instance
    raw = {"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 8},
           "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 10.0, "tpot_s": 0.02},
           "routing": {"decode": {"evaluate": str(stats / "decode_in2000out100.json"), "fit": [str(stats / "decode_in1000out1000.json")]},
                       "prefill": {"evaluate": str(stats / "prefill_in2048.json"), "fit": [str(stats / "prefill_in1024.json")]},
                       "placement": "eplb"}}
    d = api.deployment(parse_spec(raw))
    planned = api.plan(d).plan
    doc = json.loads(json.dumps(plan_to_json(planned)))
    plan = plan_from_json(doc, d)
    assert plan.recommendation.mode == "disaggregated" and [r.role for r in plan.pools] == ["prefill", "decode"]
    _placements_match(d, doc, plan)
    _round_trips(planned)


def _broken(doc, path, value):
    out = copy.deepcopy(doc)
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("path, value, field", [
    ("model.name", "deepseek-v3", "model.name"),
    ("cluster.devices", 8, "cluster.devices"),
    ("cluster.device", "h100-sxm", "cluster.device"),
    ("schema_version", 1, "schema_version"),
    ("recommendation.decode.steps", [], "recommendation.decode.steps"),
    ("recommendation.decode.steps.0.breakdown_s", {"attention": 0.1}, "recommendation.decode.steps.0.breakdown_s"),
    ("recommendation.decode.memory_per_device.weight_bytes", "big", "recommendation.decode.memory_per_device.weight_bytes"),
    ("frontier.0.tokens_per_s_per_user", -1.0, "frontier.0.tokens_per_s_per_user"),
    ("recommendation.mode", "mixed", "recommendation.mode"),
    ("recommendation.decode_utilization", 1.3, "recommendation.decode_utilization"),
    ("recommendation.decode.layout.attention_tp", "two", "recommendation.decode.layout.attention_tp"),
    ("recommendation.decode.layout.expert_parallel", 3, "recommendation.decode.layout.expert_parallel"),
    ("recommendation.decode.batch_per_device", KeyError, "recommendation.decode.batch_per_device"),
    ("recommendation.decode.layout.pipeline_stages", 2, "recommendation.decode.instance_devices"),  # 2 x the devices
    ("recommendation.decode.layout.pipeline_stages", 1000, "recommendation.decode.layout.pipeline_stages"),
    ("recommendation.decode.placement.experts", {"method": "ilp", "slots_per_device": 24, "phy2log": [[0, 1]]},
     "recommendation.decode.placement.experts.phy2log"),
])
def test_mismatched_or_malformed_plan_names_the_field(aggregated, path, value, field):
    d, doc = aggregated
    with pytest.raises(InputError) as e:
        plan_from_json(_broken(doc, path, value), d, "plan.json")
    assert e.value.field == f"plan.json: {field}"
    assert e.value.fix


def test_infeasible_plan_reads_back_and_the_simulator_says_why(aggregated):
    d, doc = aggregated
    broken = _broken(doc, "recommendation", None) | {"infeasible_reason": "no layout meets TPOT 1 ms"}
    plan = plan_from_json(broken, d)
    assert plan.recommendation is None and plan.infeasible == "no layout meets TPOT 1 ms" and plan.pools == ()
    with pytest.raises(InputError, match="no layout meets TPOT 1 ms"):
        simulate(plan, synthetic_trace(5, 1.0, 100, 10))
    tight = api.deployment(parse_spec(QWEN | {"slo": {"ttft_s": 3.0, "tpot_s": 0.0001}}))
    refused = api.plan(tight).plan
    assert refused.recommendation is None and refused.infeasible_field == "slo.tpot_s"
    assert _round_trips(refused).infeasible == refused.infeasible


def test_plan_files(aggregated, tmp_path):
    d, doc = aggregated
    good = tmp_path / "plan.json"
    good.write_text(json.dumps(doc))
    assert read_plan(good, d).recommendation.mode == "aggregated"
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps(doc)[:500])
    with pytest.raises(InputError) as e:
        read_plan(corrupt, d)
    assert e.value.field.startswith(f"{corrupt} line 1 column")
    with pytest.raises(InputError, match="no file"):
        read_plan(tmp_path / "missing.json", d)
    other = api.deployment(parse_spec(QWEN))
    with pytest.raises(InputError) as e:
        read_plan(good, other)
    assert e.value.field == f"{good}: model.name"


def test_a_pipelined_decode_pool_round_trips_with_its_stage_times():
    e = api.estimate(str(example_path("kimi-k2-h200-128.yaml")), prefill="attention=dp16,experts=ep16",
                     decode="attention=dp8,experts=ep8,pp=2", batch=32)
    doc = json.loads(json.dumps(plan_to_json(e.plan)))
    decode = doc["recommendation"]["decode"]
    assert decode["layout"]["pipeline_stages"] == 2 and decode["instance_devices"] == 16
    stages = decode["steps"][0]["pipeline"]
    assert len(stages["stage_s"]) == 2 and stages["cycle_s"] == pytest.approx(decode["step_s"])
    back = plan_from_json(doc, e.plan.deployment)
    got = back.recommendation.decode
    assert got.layout.pp == 2 and got.perf.steps[0].pipeline == e.plan.recommendation.decode.perf.steps[0].pipeline
    assert plan_to_json(back) == plan_to_json(e.plan)
