"""The layout search scored with routing statistics: spec `routing:`, placement per layout, plan.json maps."""

import json

import numpy as np
import pytest
import yaml

from hwmodels.errors import InputError
from hwmodels.ingest.routing import save_counts
from moeplan import api, example_path, parse_spec
from moeplan.spec import resolve
from planner.plan_json import plan_to_json
from planner.search import plan

QWEN_LAYERS, QWEN_EXPERTS = 48, 128  # qwen3-30b-a3b: every layer is MoE


def _windows(tmp_path, n: int, seed: int = 0) -> list[str]:
    """Skewed statistics with a persistent hot set (what makes placement matter) plus per-window noise."""
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, size=(QWEN_LAYERS, QWEN_EXPERTS))
    names = []
    for w in range(n):
        counts = rng.poisson(4000 * popularity * rng.gamma(8.0, 1 / 8.0, size=popularity.shape)).astype(float)
        save_counts(counts, tmp_path / f"w{w}.json", "qwen3-30b-a3b")
        names.append(f"w{w}.json")
    return names


def _spec(tmp_path, routing: dict | None) -> dict:
    raw = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
           "workload": {"input_tokens": 2000, "output_tokens": 500, "requests_per_s": 2.0},
           "slo": {"ttft_s": 3.0, "tpot_s": 0.1}}
    if routing is not None:
        raw["routing"] = routing
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    return raw


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    fit, evaluate = _windows(tmp, 3)[:2], "w2.json"
    _spec(tmp, {"decode": {"evaluate": evaluate, "fit": fit}, "prefill": {"evaluate": evaluate}, "time_limit_s": 1.0})
    d = api.deployment(tmp / "spec.yaml")
    return d, plan(d)


def test_spec_routing_resolves_relative_to_the_spec(routed):
    d, _ = routed
    decode, prefill = d.routing.for_phase("decode"), d.routing.for_phase("prefill")
    assert decode.fit_on == ("w0.json", "w1.json") and not decode.in_sample
    assert prefill.in_sample and prefill.mapping == ""
    assert decode.evaluate.shape == (QWEN_LAYERS, QWEN_EXPERTS)


def test_every_candidate_is_scored_with_its_placements_measured_loads(routed):
    d, result = routed
    r = result.recommendation
    assert r is not None
    for c in (r.decode, r.prefill) if r.prefill else (r.decode,):
        p = c.placement
        assert p is not None and p.method == "ilp" and p.num_devices == c.layout.ep
        assert p.phy2log.shape == (QWEN_LAYERS, QWEN_EXPERTS + c.layout.redundant_experts)
        assert c.load.shares.shape == (QWEN_LAYERS, c.layout.ep)
        assert "ilp placement" in c.perf.steps[0].load_source
        if c.layout.ep > 1:  # held-out skewed traffic is never perfectly balanced
            assert c.load.imbalance.mean() > 1.0
        else:  # an instance of one device (part of a node) holds every expert: nothing to balance
            assert c.load.imbalance.mean() == 1.0
    assert any("fitted on w0.json, w1.json, scored on w2.json" in a for a in result.assumptions)
    assert any("in sample" in a for a in result.assumptions)


def test_skewed_loads_are_never_faster_than_uniform(routed):
    d, result = routed
    uniform = plan(resolve(parse_spec(_spec_dict(d))))
    routed_steps = {(c.layout, c.work_per_device): c.step_s for c in result.frontier}
    common = [c for c in uniform.frontier if (c.layout, c.work_per_device) in routed_steps]
    assert common
    for c in common:  # one device holds every expert: no device is busier than another
        assert routed_steps[c.layout, c.work_per_device] > c.step_s if c.layout.ep > 1 else \
            routed_steps[c.layout, c.work_per_device] == pytest.approx(c.step_s)
    assert any(c.layout.ep > 1 for c in common)


def _spec_dict(d) -> dict:
    w = d.workload
    return {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
            "workload": {"input_tokens": w.input_tokens, "output_tokens": w.output_tokens, "requests_per_s": w.requests_per_s},
            "slo": {"ttft_s": d.slo.ttft_s, "tpot_s": d.slo.tpot_s}}


def test_plan_json_carries_deployable_placement_maps(routed):
    d, result = routed
    doc = json.loads(json.dumps(plan_to_json(result)))
    placement = doc["recommendation"]["decode"]["placement"]["experts"]
    phy2log = np.array(placement["phy2log"])
    assert phy2log.shape[0] == QWEN_LAYERS and phy2log.shape[1] == placement["slots_per_device"] * placement["devices"]
    assert all(set(row) == set(range(QWEN_EXPERTS)) for row in phy2log)  # every expert has a slot
    log2phy = np.array(placement["log2phy"])
    for layer in (0, QWEN_LAYERS - 1):
        for expert in range(QWEN_EXPERTS):
            slots = log2phy[layer, expert][log2phy[layer, expert] >= 0]
            assert (phy2log[layer, slots] == expert).all()
    assert placement["fit_on"] == ["w0.json", "w1.json"] and placement["evaluated_on"] == "w2.json"
    assert placement["lp_bound"] <= placement["objective"] and placement["step_cost"] >= 1.0
    assert doc["routing"]["phases"]["prefill"]["in_sample"] is True
    # maps only for the recommendation: the frontier's would be megabytes
    assert all("phy2log" not in (c["placement"]["experts"] or {}) for c in doc["frontier"])


def test_eplb_placement_can_be_chosen(tmp_path):
    names = _windows(tmp_path, 2, seed=1)
    _spec(tmp_path, {"decode": {"evaluate": names[1], "fit": [names[0]]}, "placement": "eplb"})
    d = api.deployment(tmp_path / "spec.yaml")
    result = plan(d)
    r = result.recommendation
    assert r.decode.placement.method == "eplb-global"
    # no prefill statistics: prefill is scored at uniform load (no catalog skew for this model), and says so
    assert "prefill expert load: uniform (no routing statistics for this model)" in result.assumptions
    assert r.prefill is None or r.prefill.placement is None


@pytest.mark.parametrize("routing, pattern", [
    ({"decode": {"evaluate": "missing.json"}}, r"routing\.decode\.evaluate: no file"),
    ({"decode": {"evaluate": "bad.json"}}, r"routing\.decode\.evaluate: .*bad\.json line 1"),
    ({"prefill": {"evaluate": "w0.json", "fit": ["missing.json"]}}, r"routing\.prefill\.fit\[0\]: no file"),
    ({"placement": "ilp"}, r"routing: give decode or prefill statistics"),
    ({"decode": {"evaluate": "w0.json"}, "placement": "greedy"}, r"routing\.placement"),
])
def test_bad_routing_input_names_the_field(tmp_path, routing, pattern):
    _windows(tmp_path, 1)
    (tmp_path / "bad.json").write_text("{not json")
    _spec(tmp_path, routing)
    with pytest.raises(InputError, match=pattern):
        api.deployment(tmp_path / "spec.yaml")


def test_routing_on_a_dense_model_is_refused(tmp_path):
    raw = yaml.safe_load(example_path().read_text())
    raw["model"] = "./dense/config.json"
    (tmp_path / "dense").mkdir()
    config = json.loads((example_path().parents[1] / "models" / "qwen3-30b-a3b.json").read_text())
    config.pop("num_experts")
    (tmp_path / "dense" / "config.json").write_text(json.dumps(config))
    raw["routing"] = {"decode": {"evaluate": "w0.json"}}
    _windows(tmp_path, 1)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="routing: .* has no experts"):
        api.deployment(tmp_path / "spec.yaml")


def test_kimi_k2_plans_on_mapped_deepseek_v3_statistics(shared_data, tmp_path):
    stats = shared_data / "routing" / "deepseek-v3-sglang-eplb"
    raw = yaml.safe_load(example_path().read_text())
    raw["routing"] = {"decode": {"evaluate": str(stats / "decode_in1000out1000.json"),
                                 "fit": [str(stats / "decode_in1800out100.json"), str(stats / "decode_in2000out100.json")]},
                      "placement": "eplb"}
    raw["slo"]["ttft_s"] = 10.0  # the skewed load slows the prefill past the example's 5 s
    d = resolve(parse_spec(raw))
    routing = d.routing.for_phase("decode")
    assert routing.evaluate.shape == (61, 384) and "256 experts mapped to 60 x 384" in routing.mapping
    r = plan(d).recommendation
    assert r is not None and r.decode.placement is not None
    # DeepSeek-V3's held-out skew costs EP16 something over perfect balance, and not absurdly much
    assert 1.02 < r.decode.load.imbalance.mean() < 1.6
