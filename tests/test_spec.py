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
        (lambda r: r.update(model="kimi-k2.9"), r"model: unknown model 'kimi-k2.9'; fix: did you mean kimi-k2"),
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


# ------------------------------------------------------------------ absurd but well-formed values, from real files

ABSURD = {  # name: (change to the example spec, the field the error names, words of its fix)
    "units 10^30": (lambda r: r["cluster"].update(units=10**30), "cluster.units", "whole number from 1 to 100,000"),
    "100,000 nodes": (lambda r: r["cluster"].update(units=100_000), "cluster.units", "at most 12,500 units"),
    "devices as text": (lambda r: r["cluster"].update(units=None, devices="1_000"), "cluster.devices", "unquoted"),
    "units as a float": (lambda r: r["cluster"].update(units=2.0), "cluster.units", "whole number"),
    "units true": (lambda r: r["cluster"].update(units=True), "cluster.units", "whole number"),
    "input 10^400": (lambda r: r["workload"].update(input_tokens=10**400), "workload.input_tokens", "to 100,000,000"),
    "rate inf": (lambda r: r["workload"].update(requests_per_s=float("inf")), "workload.requests_per_s", "finite number"),
    "rate nan": (lambda r: r["workload"].update(requests_per_s=float("nan")), "workload.requests_per_s", "finite number"),
    "rate as text": (lambda r: r["workload"].update(requests_per_s="1.1"), "workload.requests_per_s", "unquoted"),
    "price nan": (lambda r: r.update(prices={"h200-sxm": float("nan")}), "prices.h200-sxm", "finite number"),
    "price inf": (lambda r: r.update(prices={"h200-sxm": float("inf")}), "prices.h200-sxm", "finite number"),
    "price negative": (lambda r: r.update(prices={"h200-sxm": -1.0}), "prices.h200-sxm", "> 0"),
    "ttft a year": (lambda r: r["slo"].update(ttft_s=3.15e7), "slo.ttft_s", "<= 86,400"),
    "schema_version true": (lambda r: r.update(schema_version=True), "schema_version", "whole number, unquoted"),
    "schema_version 1.0": (lambda r: r.update(schema_version=1.0), "schema_version", "whole number, unquoted"),
    "name 20,000 characters": (lambda r: r.update(name="n" * 20_000), "name", "at most 200 characters"),
    "model path 10,000 characters": (lambda r: r.update(model="m" * 10_000), "model", "at most 4,096 characters"),
    "prompt past the context": (lambda r: r["workload"].update(input_tokens=200_000, max_input_tokens=200_000), "workload.input_tokens",
                                "at most 131,072"),
    "longest prompt past the context": (lambda r: r["workload"].update(max_input_tokens=1_000_000),
                                        "workload.max_input_tokens", "at most 131,072"),
    "tokens per step 10^9": (lambda r: r["serving"].update(tokens_per_step=10**9), "serving.tokens_per_step",
                             "to 10,000,000"),
    "negative redundant slots": (lambda r: r["serving"].update(redundant_experts=-1), "serving.redundant_experts", "from 0 to 1,048,576"),
    "a workload list": (lambda r: r.update(workload=[1, 2]), "workload", "mapping of its fields"),
}


@pytest.mark.parametrize("case", ABSURD)
def test_an_absurd_spec_is_refused_naming_the_field_and_a_fix(tmp_path, case):
    import time
    import tracemalloc

    change, field, fix = ABSURD[case]
    raw = good()
    change(raw)
    raw["cluster"] = {k: v for k, v in raw["cluster"].items() if v is not None}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputError) as raised:
        api.check(path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    e = raised.value
    assert seconds < 2 and peak < 100e6
    assert e.field.removeprefix(f"{path}: ") == field, str(e)
    assert fix in e.fix and e.fix != "fix the value" and "\n" not in str(e)


def test_fixes_say_what_to_give_from_the_error_and_the_field_help():
    raw = good()
    raw["cluster"]["units"] = 0
    with pytest.raises(InputError) as e:
        parse_spec(raw)
    assert e.value.fix == "give a whole number from 1 to 100,000: how many units (nodes, racks, supernodes)"
    raw = good()
    raw["slo"]["percentile"] = 120
    with pytest.raises(InputError) as e:
        parse_spec(raw)
    assert e.value.fix == "give a finite number > 0 and <= 100: percentile the SLOs apply to"


def test_numpy_numbers_still_work_from_a_notebook():
    raw = good()
    raw["cluster"]["units"] = np.int64(2)
    raw["slo"]["tpot_s"] = np.float64(0.05)
    raw["workload"]["requests_per_s"] = np.int64(1)
    spec = parse_spec(raw)
    assert type(spec.cluster.units) is int and spec.slo.tpot_s == 0.05 and spec.workload.requests_per_s == 1.0


def test_a_named_traces_longest_prompt_is_capped_at_the_context_and_says_so():
    raw = good()
    raw["model"] = "qwen3-30b-a3b"  # 40,960 tokens of context; the Mooncake trace's longest prompt is 126,195
    raw["cluster"] = {"unit": "hgx-h100", "units": 1}
    w = resolve(parse_spec(raw)).workload
    assert w.max_input_tokens == 40_960 and "max_input_tokens capped at qwen3-30b-a3b's context of 40,960" in w.source
