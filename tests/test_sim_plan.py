"""plan.json as the simulator reads it (sim.plan): both modes, the plan's placement, and one clear error per
malformed or mismatched document."""

import copy
import json

import numpy as np
import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.routing import save_counts
from moeplan import api, example_path, parse_spec
from sim import plan_from_json, read_plan

QWEN = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
        "workload": {"input_tokens": 2000, "output_tokens": 500, "requests_per_s": 2.0}, "slo": {"ttft_s": 3.0, "tpot_s": 0.1}}


@pytest.fixture(scope="module")
def aggregated():
    d = api.deployment(example_path())
    return d, api.plan(d).to_json()


def test_aggregated_plan(aggregated):
    d, doc = aggregated
    plan = plan_from_json(doc, d)
    rec = doc["recommendation"]
    assert plan.mode == rec["mode"] == "aggregated" and plan.prefill is None
    role = plan.decode
    assert role.role == "aggregated" and role.instances == rec["decode"]["instances"]
    assert role.layout.tp == rec["decode"]["layout"]["attention_tp"] and role.layout.ep == rec["decode"]["layout"]["expert_parallel"]
    assert role.batch_per_device == rec["decode"]["batch_per_device"]
    assert role.chunk_tokens_per_device == d.serving.tokens_per_step
    assert plan.devices == rec["devices"] and role.placement is None
    assert "aggregated" in plan.describe()


def _placements_match(d, doc, plan):
    for role in plan.roles:
        written = doc["recommendation"]["prefill" if role.role == "prefill" else "decode"]["placement"]
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
    assert plan.mode == "aggregated"
    _placements_match(d, doc, plan)


def test_disaggregated_plan_with_its_placements(shared_data):
    stats = shared_data / "routing" / "deepseek-v3-sglang-eplb"
    # 5 nodes: the fewest that hold the 16-device prefill and 24-device decode pools, so the search stays short
    raw = {"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 5},
           "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 2.0, "tpot_s": 0.02},
           "routing": {"decode": {"evaluate": str(stats / "decode_in2000out100.json"), "fit": [str(stats / "decode_in1000out1000.json")]},
                       "prefill": {"evaluate": str(stats / "prefill_in2048.json"), "fit": [str(stats / "prefill_in1024.json")]},
                       "placement": "eplb"}}
    d = api.deployment(parse_spec(raw))
    doc = json.loads(json.dumps(api.plan(d).to_json()))
    plan = plan_from_json(doc, d)
    assert plan.mode == "disaggregated" and [r.role for r in plan.roles] == ["prefill", "decode"]
    _placements_match(d, doc, plan)


def _broken(doc, path, value):
    out = copy.deepcopy(doc)
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("path, value, field", [
    ("model.name", "deepseek-v3", "model.name"),
    ("cluster.devices", 8, "cluster.devices"),
    ("cluster.device", "h100-sxm", "cluster.device"),
    ("schema_version", 2, "schema_version"),
    ("recommendation.mode", "mixed", "recommendation.mode"),
    ("recommendation.decode.layout.attention_tp", "two", "recommendation.decode.layout.attention_tp"),
    ("recommendation.decode.layout.expert_parallel", 3, "recommendation.decode.layout.expert_parallel"),
    ("recommendation.decode.batch_per_device", KeyError, "recommendation.decode.batch_per_device"),
    ("recommendation.decode.layout.pipeline_stages", 2, "recommendation.decode.layout.pipeline_stages"),
    ("recommendation.decode.placement", {"method": "ilp", "slots_per_device": 24, "phy2log": [[0, 1]]},
     "recommendation.decode.placement.phy2log"),
])
def test_mismatched_or_malformed_plan_names_the_field(aggregated, path, value, field):
    d, doc = aggregated
    with pytest.raises(InputError) as e:
        plan_from_json(_broken(doc, path, value), d, "plan.json")
    assert e.value.field == f"plan.json: {field}"
    assert e.value.fix


def test_infeasible_plan_says_why(aggregated):
    d, doc = aggregated
    broken = _broken(doc, "recommendation", None) | {"infeasible_reason": "no layout meets TPOT 1 ms"}
    with pytest.raises(InputError, match="no layout meets TPOT 1 ms"):
        plan_from_json(broken, d)


def test_plan_files(aggregated, tmp_path):
    d, doc = aggregated
    good = tmp_path / "plan.json"
    good.write_text(json.dumps(doc))
    assert read_plan(good, d).mode == "aggregated"
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
