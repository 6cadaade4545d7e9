"""Spec validation: every bad input is one InputError naming the field and the fix."""

import numpy as np
import pytest
import yaml

from hwmodels.errors import InputError
from moeplan import api, example_path, load_spec, parse_spec
from moeplan.spec import resolve


def good():
    return yaml.safe_load(example_path().read_text())


def test_every_example_resolves_to_what_it_says():
    """Each example spec resolves, and the Deployment holds the model, cluster size, workload and SLOs its YAML names."""
    paths = sorted(p for p in example_path().parent.glob("*.yaml") if "sweep" not in p.name)  # sweeps: test_engines
    assert len(paths) >= 6
    for path in paths:
        raw = yaml.safe_load(path.read_text())
        d = api.deployment(path)
        assert d.model.name == raw["model"] and d.cluster.unit.name == raw["cluster"]["unit"], path.name
        unit = d.cluster.unit
        want = raw["cluster"].get("devices") or raw["cluster"]["units"] * unit.devices
        assert d.cluster.num_devices == want, path.name
        assert (d.slo.ttft_s, d.slo.tpot_s) == (raw["slo"]["ttft_s"], raw["slo"]["tpot_s"]), path.name
        workload = raw["workload"]
        for key in ("input_tokens", "output_tokens", "requests_per_s"):
            if key in workload:
                assert getattr(d.workload, key) == workload[key], (path.name, key)
        assert d.workload.input_tokens > 0 and d.workload.output_tokens > 0 and d.workload.source


def test_named_workload_fills_in_and_fields_override():
    d = api.deployment(example_path())
    assert (d.workload.input_tokens, d.workload.output_tokens) == (12035, 343)
    raw = good()
    raw["workload"] = {"name": "mooncake-conversation", "output_tokens": 1000}
    assert resolve(parse_spec(raw)).workload.output_tokens == 1000
    assert d.workload.max_input_tokens == 126195  # the Mooncake conversation trace's longest prompt


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: r.pop("model"), r"model: missing; fix: add it"),
        (lambda r: r["cluster"].update(units=-2), r"cluster.units: Input should be greater than 0 \(got -2\)"),
        (lambda r: r["cluster"].update(units=0), r"cluster.units: Input should be greater than 0"),
        (lambda r: r["cluster"].update(devices=8), r"cluster: give exactly one of units or devices"),
        (lambda r: r["workload"].update(input_tokens=0), r"workload.input_tokens"),
        (lambda r: r["slo"].update(tpot_ms=50), r"slo.tpot_ms: unknown field; fix: did you mean tpot_s"),
        (lambda r: r.update(schema_version=2), r"schema_version.*version 2 is not supported"),
        (lambda r: r.update(serving={"hbm_utilization": 1.5}), r"serving.hbm_utilization"),
    ],
)
def test_invalid_fields_are_named(mutate, pattern):
    raw = good()
    mutate(raw)
    with pytest.raises(InputError, match=pattern):
        parse_spec(raw)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: r.update(model="kimi-k3"), r"model: unknown model 'kimi-k3'; fix: did you mean kimi-k2"),
        (lambda r: r["cluster"].update(unit="hgx-h20"), r"cluster.unit: unknown cluster unit 'hgx-h20'; fix: did you mean hgx-h200"),
        (lambda r: r.update(precision={"routed_experts": "fp5"}), r"precision.routed_experts: unknown number format"),
        (lambda r: r.update(prices={"h20-sxm": 1.0}), r"prices.h20-sxm: unknown device; fix: did you mean h200-sxm"),
        (lambda r: r.update(workload={"name": "mooncake"}), r"workload.name: unknown workload"),
        (lambda r: r.update(workload={"input_tokens": 100}), r"workload.output_tokens: missing"),
        (lambda r: r.update(cluster={"unit": "gb200-nvl72", "devices": 10}), r"cluster.devices: 10 is not a whole number of gb200-nvl72 nodes of 4"),
        (lambda r: r.update(model="./nowhere/config.json"), r"model: no config.json at"),
        (lambda r: r.update(workload={"name": "mooncake-conversation", "max_input_tokens": 100}),
         r"workload.max_input_tokens: 100 is below the mean prompt"),
    ],
)
def test_unknown_names_get_suggestions(mutate, pattern):
    raw = good()
    mutate(raw)
    with pytest.raises(InputError, match=pattern):
        resolve(parse_spec(raw))


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("schema_version: 1\nmodel: kimi-k2\ncluster: {unit: hgx-h200, units: 2\n")
    with pytest.raises(InputError, match=r"malformed YAML at line \d+"):
        load_spec(bad)


def test_not_a_mapping_and_missing_file(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="is not a YAML mapping"):
        load_spec(f)
    with pytest.raises(InputError, match="no file"):
        load_spec(tmp_path / "absent.yaml")


def test_model_path_is_relative_to_the_spec(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text((example_path().parents[1] / "models" / "qwen3-30b-a3b.json").read_text())
    raw = good()
    raw["model"] = "./m/config.json"
    raw["cluster"] = {"unit": "hgx-h100", "units": 1}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    assert api.deployment(spec).model.hidden_size == 2048


def test_price_comes_from_spec_or_catalog():
    assert api.deployment(example_path()).price.usd_per_device_hour == 2.3
    raw = good()
    raw["prices"] = {"h200-sxm": 3.1}
    assert resolve(parse_spec(raw)).price.source == "spec"
    assert api.deployment(example_path("kimi-k2.5-cloudmatrix384.yaml")).price.usd_per_device_hour == 2.0


def _mixtral_spec(routing: dict) -> dict:
    return {"schema_version": 1, "model": "mixtral-8x7b", "cluster": {"unit": "hgx-h100", "units": 1},
            "workload": {"input_tokens": 1000, "output_tokens": 200, "requests_per_s": 1.0},
            "slo": {"ttft_s": 3.0, "tpot_s": 0.05}, "routing": routing}


def test_spec_routing_reads_every_format_and_gives_what_place_reads(shared_data, tmp_path):
    # Per-token JSON lines and an SGLang CSV dump of Mixtral: the spec once read only JSON and CSV statistics.
    decisions = shared_data / "routing" / "mixtral-8x7b-per-token" / "gsm8k_2_routing.jsonl"
    counts = api.read_routing_counts(decisions)  # what `moeplan place --loads` fits on
    dump = tmp_path / "expert_distribution_rank0_timestamp1.csv"
    dump.write_text("layer_id,expert_id,count\n" + "".join(f"{layer},{expert},{count:g}\n" for layer, row in enumerate(counts)
                                                             for expert, count in enumerate(row)))
    d = resolve(parse_spec(_mixtral_spec({"decode": {"evaluate": str(decisions), "fit": [dump.name]}})), tmp_path)
    decode = d.routing.for_phase("decode")
    assert counts.shape == (32, 8) and decode.mapping == ""
    assert np.array_equal(decode.evaluate, counts) and np.array_equal(decode.fit[0], api.read_routing_counts(dump))
    assert decode.evaluated_on == str(decisions) and decode.fit_on == (dump.name,)


def test_spec_routing_keeps_a_files_coverage_note_and_names_the_field(shared_data, tmp_path):
    pickle = shared_data / "routing" / "olmoe-mixtral-counts" / "mistral" / "expert_counts" / "arxiv.pkl"
    d = resolve(parse_spec(_mixtral_spec({"decode": {"evaluate": str(pickle)}})))
    decode = d.routing.for_phase("decode")
    assert "3 sampled layers" in decode.mapping and "mapped to 32 x 8" in decode.mapping
    assert decode.evaluate.shape == (32, 8) and decode.in_sample
    (tmp_path / "dump.pt").write_bytes(b"not a dump")
    with pytest.raises(InputError, match=r"^routing\.decode\.evaluate: .*dump\.pt: "):
        resolve(parse_spec(_mixtral_spec({"decode": {"evaluate": "dump.pt"}})), tmp_path)
